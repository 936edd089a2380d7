#!/usr/bin/env bash
# Property-based API test: schemathesis (PyPI) generates requests from the served
# OpenAPI document and checks every response: no 5xx, a status code the document
# lists, and a body that matches the documented schema. Runs the debug binary on a
# fresh SQLite file with a seeded project/feature/environment, so path parameters hit
# real objects. Exits non-zero on any failure.
#
# Usage: scripts/schemathesis.sh [max-examples-per-operation]   (default 100; ~2 min)
#   FUSEBOX_BIN=path/to/fusebox   use that binary instead of building one
#   SCHEMATHESIS_VENV=dir         where schemathesis is installed [~/.cache/fusebox-schemathesis-venv]
#   SCHEMATHESIS_SEED=n           reproduce a run (the seed is printed)
set -euo pipefail
cd "$(dirname "$0")/.."

examples=${1:-100}
st_version=4.32.5
venv=${SCHEMATHESIS_VENV:-$HOME/.cache/fusebox-schemathesis-venv}
seed=${SCHEMATHESIS_SEED:-$RANDOM}

if [ -z "${FUSEBOX_BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusebox-target}"
  # The binary the integration tests use (same features as `cargo test`, so after
  # `cargo test` this builds nothing; a plain `cargo build` would rebuild dependencies).
  cargo test -q --no-run --test api
  FUSEBOX_BIN="$CARGO_TARGET_DIR/debug/fusebox"
fi

# Python 3.11.7's ast module can fail under schemathesis's deep recursion ("AST
# constructor recursion depth mismatch"): prefer a newer interpreter when there is one.
pick_python() {
  local py
  for py in ${SCHEMATHESIS_PYTHON:-} python3.13 python3.12 \
    "$HOME"/.pyenv/versions/3.13*/bin/python3 "$HOME"/.pyenv/versions/3.12*/bin/python3 python3; do
    if "$py" -c 'import sys, venv; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      echo "$py"
      return
    fi
  done
  echo "no python3 >= 3.10 found" >&2
  return 1
}
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$st_version"; then
  py=$(pick_python)
  echo "installing schemathesis $st_version into $venv with $py"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$st_version"
fi

admin='*:*.schemathesis-admin'
client='*:development.schemathesis-client'
frontend='*:development.schemathesis-frontend'
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
FUSEBOX_ADDR=127.0.0.1:$port DATABASE_URL="sqlite://$dir/fusebox.db" FUSEBOX_WORKERS=2 \
  FUSEBOX_INIT_ADMIN_TOKENS="$admin" FUSEBOX_INIT_CLIENT_TOKENS="$client" \
  FUSEBOX_INIT_FRONTEND_TOKENS="$frontend" FUSEBOX_SCHEDULER_INTERVAL=0 \
  "$FUSEBOX_BIN" >"$dir/server.log" 2>&1 &
pid=$!
stop() {
  kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap stop EXIT
for _ in $(seq 1 100); do curl -fs "$base/ready" >/dev/null && break; sleep 0.1; done
curl -fs "$base/ready" >/dev/null || { echo "fusebox did not start:"; cat "$dir/server.log"; exit 1; }

# A little data: a feature with a strategy, variants, a tag and an armed fuse in
# `development`, a second environment, and a segment.
api() { # METHOD PATH [JSON]
  curl -sS --fail-with-body -X "$1" -H "Authorization: $admin" \
    -H 'content-type: application/json' ${3:+--data "$3"} "$base$2" >/dev/null \
    || { echo " <- seeding failed: $1 $2"; exit 1; }
}
f=/api/admin/projects/default/features
api POST /api/admin/environments '{"name":"staging","type":"test"}'
api POST $f '{"name":"checkout","description":"seeded"}'
api POST $f/checkout/environments/development/on
api POST $f/checkout/environments/development/strategies \
  '{"name":"flexibleRollout","parameters":{"rollout":"50","stickiness":"default","groupId":"checkout"}}'
api PUT $f/checkout/environments/development/variants \
  '[{"name":"a","weight":500,"weightType":"variable","stickiness":"default"},{"name":"b","weight":500,"weightType":"variable","stickiness":"default"}]'
api POST /api/admin/features/checkout/tags '{"type":"simple","value":"seeded"}'
api PUT $f/checkout/environments/development/fuse '{}'
api POST /api/admin/segments '{"name":"beta","constraints":[{"contextName":"userId","operator":"IN","values":["1","2"]}]}'
# The token DELETE /api/admin/api-tokens/{id} may remove: not one of the run's own.
spare=$(curl -fsS -X POST -H "Authorization: $admin" -H 'content-type: application/json' \
  --data '{"tokenName":"spare","type":"client","environment":"development"}' "$base/api/admin/api-tokens" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')

# Path parameters name the seeded objects; the client, frontend and OFREP surfaces get
# their own token kinds (an admin token is refused there by design).
cat >"$dir/schemathesis.toml" <<EOF
# No crash cache in the work tree: every run starts from its seed alone.
[cache]
enabled = false

[parameters]
"path.project" = "default"
"path.name" = "checkout"
"path.env" = "development"

[[operations]]
include-path = "/api/admin/api-tokens/{id}"
parameters = { "path.id" = $spare }

[[operations]]
include-tag = "client"
headers = { Authorization = "$client" }

[[operations]]
include-tag = ["frontend", "ofrep"]
headers = { Authorization = "$frontend" }

[[operations]]
include-path = "/api/events"
headers = { Authorization = "$client" }
EOF

echo "schemathesis $st_version against $base (seed $seed, $examples examples per operation)"
status=0
"$venv/bin/schemathesis" --config-file "$dir/schemathesis.toml" run "$base/api/openapi.json" \
  --header "Authorization: $admin" \
  --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance \
  --max-examples "$examples" --seed "$seed" --workers 2 --request-timeout 10 \
  --phases examples,coverage,fuzzing --generation-database none --no-color \
  --suppress-health-check all || status=$?

# A panic is a failure even when no response showed it (actix drops the connection).
if grep -q panicked "$dir/server.log"; then
  status=1
fi
if grep -qE 'panicked|ERROR' "$dir/server.log"; then
  keep=${TMPDIR:-/tmp}/fusebox-schemathesis-server.log
  cp "$dir/server.log" "$keep"
  echo "== panics and ERROR lines in the server log (all of it: $keep):"
  grep -E 'panicked|ERROR' "$dir/server.log" | head -40
fi
exit $status
