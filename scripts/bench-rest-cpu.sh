#!/usr/bin/env bash
# Row 5 of README "Performance": one `calsync-bench rest` run, plus the node's CPU per
# task-to-calendar request. The bench prints its figures only at the end, so the node's CPU is
# read from /proc every 0.25 s and the last 10 s before the node exits (the task-to-calendar
# phase, `--seconds 10`) are taken.
#
# Usage: scripts/bench-rest-cpu.sh [BIN_DIR]   (default: the release build)
# Build first: cargo build --release --bins
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/calsync/target}/release}"
log=$(mktemp); series=$(mktemp)
trap 'rm -f "$log" "$series"' EXIT
RUST_LOG=error "$dir/calsync-bench" rest --dir "${TMPDIR:-/tmp}" > "$log" 2>&1 &
bench=$!
pid=""
for _ in $(seq 1 200); do
  pid=$(ps -eo pid,args | awk '/calsync-bench node --concurrency/ && !/awk/ {print $1; exit}')
  [ -n "$pid" ] && break
  sleep 0.1
done
[ -n "$pid" ] || { cat "$log"; echo "the node did not start" >&2; exit 1; }
while [ -e "/proc/$pid/stat" ]; do
  ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || true)
  [ -n "$ticks" ] && echo "$(date +%s.%N) $ticks" >> "$series"
  sleep 0.25
done
wait "$bench"
grep -E "task-to-calendar|connection-status|healthz" "$log"
python3 - "$series" "$(awk '/task-to-calendar: throughput/ {print $4}' "$log")" "$(getconf CLK_TCK)" <<'PY'
import sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
rps, hz = float(sys.argv[2]), float(sys.argv[3])
end_t, end_c = rows[-1]
start_t, start_c = [r for r in rows if r[0] <= end_t - 10.0][-1]
cpu = (end_c - start_c) / hz
secs = end_t - start_t
print(f"node CPU over task-to-calendar: {cpu / secs:.2f} cores, {1000 * cpu / (rps * secs):.3f} ms per request")
PY
