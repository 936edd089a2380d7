#!/usr/bin/env bash
# Load-tests GET /api/client/features and GET /api/frontend with wrk, on the release
# binary and a fresh SQLite database holding the client-spec file
# 13-constraint-operators (24 flags). Prints requests/s, latency percentiles and RSS.
# Needs wrk (apt-get install wrk). Usage: scripts/bench-client.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fusebox-target}"
cargo build --release -q
bin="$CARGO_TARGET_DIR/release/fusebox"
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
FUSEBOX_ADDR=127.0.0.1:$port DATABASE_URL="sqlite://$dir/fb.db" \
  FUSEBOX_INIT_ADMIN_TOKENS='*:*.bench-admin' FUSEBOX_INIT_CLIENT_TOKENS='*:development.bench-client' \
  FUSEBOX_INIT_FRONTEND_TOKENS='*:development.bench-frontend' "$bin" >"$dir/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.1; done
python3 -c 'import json,sys; json.dump(json.load(open(sys.argv[1]))["state"], sys.stdout)' \
  ../shared/unleash/client-spec/13-constraint-operators.json >"$dir/state.json"
curl -fs -XPOST -H 'Authorization: *:*.bench-admin' -H 'content-type: application/json' \
  --data @"$dir/state.json" "http://127.0.0.1:$port/api/admin/state/import?environment=development" >/dev/null
echo "idle RSS: $(grep VmRSS /proc/$pid/status | awk '{print $2/1024 " MB"}')"
echo "== GET /api/client/features (wrk -t2 -c32 -d${secs}s)"
wrk -t2 -c32 -d"${secs}s" --latency -H 'Authorization: *:development.bench-client' \
  -H 'Unleash-Client-Spec: 5.2.0' "http://127.0.0.1:$port/api/client/features" | grep -E 'Requests/sec|50%|99%'
echo "== GET /api/frontend (wrk -t2 -c32 -d${secs}s)"
wrk -t2 -c32 -d"${secs}s" --latency -H 'Authorization: *:development.bench-frontend' \
  "http://127.0.0.1:$port/api/frontend?userId=123&appName=web&properties%5BcustomField%5D=x" | grep -E 'Requests/sec|50%|99%'
echo "RSS after load: $(grep VmRSS /proc/$pid/status | awk '{print $2/1024 " MB"}')"
