#!/usr/bin/env bash
# CI leak check: every secret the tests recorded (artifacts dir, secrets.txt: "kind<TAB>value"
# per line) must appear in no other file there (spawned calsync logs, saved API responses).
# Prints only file names and WHICH kind of secret leaked, never a value. Exit 1 on any hit,
# 2 when there is nothing to check (a check that checked nothing must not pass).
#
# usage: scripts/check-secret-leaks.sh [ARTIFACTS_DIR]
set -euo pipefail

dir="${1:-${CALSYNC_TEST_ARTIFACTS:-${CARGO_TARGET_DIR:-target}/test-artifacts}}"
secrets="$dir/secrets.txt"
if [[ ! -s "$secrets" ]]; then
  echo "leak check: no recorded secrets in $secrets; did the tests run with this artifacts dir?" >&2
  exit 2
fi
mapfile -t files < <(find "$dir" -type f ! -name secrets.txt | sort)
if [[ ${#files[@]} -eq 0 ]]; then
  echo "leak check: no logs or responses saved in $dir; nothing was checked" >&2
  exit 2
fi

leaks=0
checked=0
# Unique (kind, value) pairs; values are matched as fixed strings, never as patterns.
while IFS=$'\t' read -r kind value; do
  [[ -z "$value" ]] && continue
  checked=$((checked + 1))
  while IFS= read -r hit; do
    echo "LEAK: $kind found in ${hit#"$dir"/}"
    leaks=$((leaks + 1))
  done < <(grep -lFa -e "$value" -- "${files[@]}" 2>/dev/null || true)
done < <(sort -u "$secrets")

echo "leak check: $checked secret(s) checked against ${#files[@]} file(s) in $dir: $leaks leak(s)"
[[ $leaks -eq 0 ]]
