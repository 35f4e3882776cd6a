#!/usr/bin/env bash
# Fuzz the REST API from its own OpenAPI document with schemathesis (PyPI): every generated
# request, valid or not, must get an answer that is not a 5xx.
#
# Usage:
#   scripts/fuzz-api.sh                      # starts examples/api_memory_server on loopback
#   BASE=http://127.0.0.1:5000 API_KEY=... scripts/fuzz-api.sh   # against a running server
#
# Environment: BASE (server root, default: start the example server on 127.0.0.1:5055),
# API_KEY (a key from CALSYNC_API_KEYS), MAX_EXAMPLES (per operation, default 100),
# FUZZ_VENV (where schemathesis is installed, default ~/.cache/calsync-fuzz/venv), ST_ARGS (more
# schemathesis options, e.g. "--report har --report-har-path /tmp/fuzz.har" to see every exchange).
# Traffic goes only to BASE, which must be a loopback address.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${FUZZ_VENV:-$HOME/.cache/calsync-fuzz/venv}"
MAX_EXAMPLES="${MAX_EXAMPLES:-100}"

if [ ! -x "$VENV/bin/st" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet 'schemathesis>=4,<5'
fi

server_pid=""
cleanup() { if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

if [ -z "${BASE:-}" ]; then
  BASE=http://127.0.0.1:5055
  API_KEY="fuzz-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  cargo build --quiet --example api_memory_server
  CALSYNC_API_KEYS="$API_KEY" CALSYNC_SYNC_WAIT_SECONDS=2 CALSYNC_RATE_LIMIT_PER_MINUTE=1000000 \
    RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/debug/examples/api_memory_server" 127.0.0.1:5055 &
  server_pid=$!
  for _ in $(seq 1 50); do curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
  # Connect the documents' example user, so generated requests reach the sync logic too
  # (the memory calendar accepts user/secret).
  curl -fsS -X POST "$BASE/api/calendar/apple/connect" -H "Authorization: Bearer $API_KEY" \
    -H 'Content-Type: application/json' \
    -d '{"user_id": "user123", "apple_id": "user", "app_password": "secret"}' >/dev/null
fi
case "$BASE" in
  http://127.*|http://localhost*|http://\[::1\]*) ;;
  *) echo "BASE must be a loopback address" >&2; exit 2 ;;
esac
: "${API_KEY:?set API_KEY to a key from CALSYNC_API_KEYS of the server}"

schema="$(mktemp --suffix=.json)"
# The document needs the token like every API endpoint (DESIGN §6); fetch it once.
curl -fsS -H "Authorization: Bearer $API_KEY" "$BASE/api/calendar/openapi.json" -o "$schema"

# schemathesis keeps a cache in its working directory: keep it out of the repository.
hooks_dir="$(pwd)/scripts"
workdir="$(mktemp -d)"
cd "$workdir"
log="$workdir/st.log"
set +e
PYTHONPATH="$hooks_dir" SCHEMATHESIS_HOOKS=fuzz_hooks "$VENV/bin/st" --config-file "$hooks_dir/schemathesis.toml" run "$schema" --url "$BASE" \
  -H "Authorization: Bearer $API_KEY" \
  --checks not_a_server_error \
  --max-examples "$MAX_EXAMPLES" \
  --seed 4242 \
  --request-timeout 15 ${ST_ARGS:-} 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
[ "$status" -eq 0 ] || exit "$status"
# The document must state the constraints the server enforces: schemathesis warns when most
# data generated from it is refused.
if grep -q "Schema validation mismatch" "$log"; then
  echo "the OpenAPI document does not state constraints the API enforces (see the warning above)" >&2
  exit 1
fi
