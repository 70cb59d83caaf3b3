#!/usr/bin/env bash
# Time `provisioner lab up` of 5 hosts (3 masters, 2 agents) from a warm cache (base image
# cached, lab destroyed first) and, with --cold, from a cold one (base image cache deleted).
#   sudo bash bench/lab-up.sh [--cold]
# Uses its own lab name and subnet, and destroys the lab at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${BENCH_LAB_NAME:-bench}
SUBNET=${BENCH_LAB_SUBNET:-10.253.0.0/24}
cargo build --release -p provisioner >&2
BIN=$PWD/target/release/provisioner
INV=$(mktemp -d)/bench.yml
trap '"$BIN" lab destroy --name "$NAME" >/dev/null 2>&1 || true' EXIT

measure() { # label
  "$BIN" lab destroy --name "$NAME" >/dev/null
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN" lab up --name "$NAME" --subnet "$SUBNET" --masters 3 --agents 2 --inventory "$INV" >/dev/null
  t1=$(date +%s.%N)
  printf '%-5s lab up (5 hosts): %6.1f s\n' "$1" "$(echo "$t1 - $t0" | bc)"
}

if [[ ${1:-} == --cold ]]; then
  rm -rf /var/cache/provisioner/images
  measure cold
fi
measure warm
t0=$(date +%s.%N); "$BIN" lab up --name "$NAME" >/dev/null; t1=$(date +%s.%N)
printf 'again lab up (no-op):      %6.1f s\n' "$(echo "$t1 - $t0" | bc)"
