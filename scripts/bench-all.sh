#!/usr/bin/env bash
# Every row of README "Performance" in one run, back to back, with the commands the table names:
# rows 1-12 with `calsync-bench <scenario>`, row 1 again on PostgreSQL when PG_URL is set (an
# empty database per run is best: `createdb` one and pass its URL). Row 13 (controller memory
# on the fake API server) is scripts/bench-shard-memory.sh, run apart (it takes minutes).
# Prints each scenario's output under a header with its wall time and the load average before
# it: run it on a quiet machine (nothing else running) for figures worth writing down.
#
# Usage: scripts/bench-all.sh [BIN_DIR]   (default: the release build)
#        PG_URL=postgres://user@127.0.0.1:5432/empty_db scripts/bench-all.sh
# Build first: cargo build --release --bins. Row 11 needs the tests' Radicale
# (CALSYNC_PEERS_DIR, as `.ci/run` installs it) or `--url`, see `calsync-bench caldav-import --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/calsync/target}/release}"
bench="$dir/calsync-bench"
[ -x "$bench" ] || { echo "no $bench: run cargo build --release --bins first" >&2; exit 2; }
scratch=$(mktemp -d /dev/shm/calsync-bench-all.XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$scratch"' EXIT

run() {
  local row="$1"; shift
  echo "=== row $row: calsync-bench $* (load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%H:%M:%S) UTC)"
  local started=$SECONDS
  RUST_LOG=error "$bench" "$@"
  echo "=== row $row took $((SECONDS - started)) s"
}

run 1 bulk
[ -n "${PG_URL:-}" ] && run 1 bulk --database-url "$PG_URL"
run 2 steady
run 3 faults
run 3 faults --fault-rate 0 --fault-5xx 0.075 --fault-timeout 0.075 --fault-drop 0.075
run 4 crash
run 5 rest
run 6 memory --dir "$scratch" --sample-secs 45
run 7 live --dir "$scratch"
run 8 webhooks
run 9 cursor
run 10 batch
run 11 caldav-import
run 12 schedule
