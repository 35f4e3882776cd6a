#!/usr/bin/env bash
# Memory of one sharded `calsync controller` replica holding all 12 shards of 100,000 TaskSyncs
# served by the strict fake API server (100 connections, each with its own calendar in a real
# Radicale; the TaskSyncs shaped as `kubectl apply` leaves them, with the last-applied annotation
# and a managedFields entry): prints the process's peak RSS (VmRSS sampled, and VmHWM from
# /proc/PID/status) next to the size of the objects' JSON. Env: TASKS (default 100000), SAMPLE_SECS (default 60).
# Builds the test profile (debug) binary; README "Performance" says which build was measured.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --test controller_shards memory_of_one_replica_with_100k_task_syncs -- --ignored --nocapture
