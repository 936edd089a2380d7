#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (event_batch, client_features_import,
# constraint_eval) for N seconds each (default 60), one after another, niced.
# Not part of CI. Needs cargo-fuzz (`cargo install cargo-fuzz`); works on the stable
# toolchain through RUSTC_BOOTSTRAP=1 (cargo fuzz passes nightly -Z flags to rustc).
# Seeds fuzz/corpus/<target> from ../shared/unleash/client-spec on each run (the
# corpus and any crash in fuzz/artifacts/<target> are git-ignored).
# Usage: scripts/fuzz.sh [seconds] [target...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(event_batch client_features_import constraint_eval)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusebox-fuzz-target}"
export RUSTC_BOOTSTRAP=1
spec=../shared/unleash/client-spec

seed() {
  local target=$1 dir=fuzz/corpus/$1
  mkdir -p "$dir"
  case $target in
    client_features_import)
      # The `state` of each fixture: a client-features document, or a delta body.
      if [ -d "$spec" ]; then
        for f in "$spec"/[0-9]*.json; do
          python3 -c 'import json,sys; json.dump(json.load(open(sys.argv[1]))["state"], sys.stdout)' \
            "$f" >"$dir/spec-$(basename "$f")"
        done
      fi
      ;;
    constraint_eval)
      # Structured input (arbitrary): raw fixture bytes only add strings such as
      # operator names and values for the fuzzer to splice.
      if [ -d "$spec" ]; then
        for f in 09 11 13 14 21 22; do cp "$spec"/$f-*.json "$dir/" 2>/dev/null || true; done
      fi
      ;;
    event_batch)
      # No event fixtures exist upstream: a few valid and invalid batches.
      printf '%s' '[{"type":"exposure","user_id":"u1","timestamp":1714000000000,"feature":"checkout","enabled":true,"variant":"blue","environment":"development","properties":{"email":"a@b.example","plan":"pro","card":"4111 1111 1111 1111"}}]' >"$dir/exposure.json"
      printf '%s' '{"events":[{"type":"activity","user_id":"u2","timestamp":"2024-04-24T23:00:00.123+02:00","name":"session_start","session_id":"s1"},{"type":"feedback","user_id":"u3","timestamp":1714000000000,"feature":"f","score":0.5,"id":"123E4567E89B12D3A456426614174000"}]}' >"$dir/envelope.json"
      printf '%s' '[{"type":"error","user_id":"u4","timestamp":1714000000,"name":"crash","properties":{"nested":[{"api_key":"x"},"call me at x@y.co"]}},{"type":"Exposure","userId":"u"},null,7]' >"$dir/invalid.json"
      ;;
  esac
}

for target in "${targets[@]}"; do
  seed "$target"
  mkdir -p "fuzz/artifacts/$target"
  echo "== $target (${secs}s)"
  # cargo fuzz's default build: optimised, with debug assertions and overflow checks,
  # address sanitizer (its runtime ships with the stable toolchain).
  (cd fuzz && nice cargo fuzz run "$target" -- \
    -max_total_time="$secs" -print_final_stats=1 -max_len=8192)
done
