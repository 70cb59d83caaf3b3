#!/usr/bin/env bash
# Time `provisioner lab up` of 5 hosts (3 masters, 2 agents):
#   - bare hosts from a warm cache (base image cached, lab destroyed first);
#   - with --cold first, bare hosts from a cold cache (base image cache deleted, rebuilt);
#   - the same 5 hosts with the bundled stack applied (the default of `lab up`);
#   - a second `lab up` on the running lab (a no-op).
#   sudo bash bench/lab-up.sh [--cold]
# Uses its own lab name and subnet, and destroys the lab at the end. Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${BENCH_LAB_NAME:-bench}
SUBNET=${BENCH_LAB_SUBNET:-10.253.0.0/24}
cargo build --release -p provisioner -p testkit >&2
BIN=$PWD/target/release/provisioner
INV=$(mktemp -d)/bench.yml
trap '"$BIN" lab destroy --name "$NAME" >/dev/null 2>&1 || true' EXIT

measure() { # label, extra lab up arguments...
  local label=$1 t0 t1
  shift
  "$BIN" lab destroy --name "$NAME" >/dev/null
  t0=$(date +%s.%N)
  "$BIN" lab up --name "$NAME" --subnet "$SUBNET" --masters 3 --agents 2 --inventory "$INV" "$@" >/dev/null
  t1=$(date +%s.%N)
  printf '%-32s %6.1f s\n' "$label" "$(echo "$t1 - $t0" | bc)"
}

if [[ ${1:-} == --cold ]]; then
  rm -rf /var/cache/provisioner/images
  measure "cold cache, bare hosts" --bare
fi
measure "warm cache, bare hosts" --bare
measure "warm cache, with the stack"
t0=$(date +%s.%N); "$BIN" lab up --name "$NAME" >/dev/null; t1=$(date +%s.%N)
printf '%-32s %6.1f s\n' "again (no-op)" "$(echo "$t1 - $t0" | bc)"
