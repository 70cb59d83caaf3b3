#!/usr/bin/env bash
# The bundled stack's own no-op, on a lab that already runs it (the convergence loop's cost):
#   bash bench/stack.sh INVENTORY [RUNS]
# Times RUNS (default 5) `plan` and RUNS `apply` in a row (release build, a converged cluster:
# both must change nothing) and prints each run and the median. Also the provisioner process's
# own CPU time (user+sys), which separates the engine's work from the hosts' work.
# Exits non-zero if a run is not a no-op (plan or apply exit code other than 0).
set -euo pipefail
cd "$(dirname "$0")/.."
INV=${1:?usage: bench/stack.sh INVENTORY [RUNS]}
RUNS=${2:-5}
BIN=${PROVISIONER:-$PWD/target/release/provisioner}
[[ -x $BIN ]] || { cargo build --release -q -p provisioner; BIN=$PWD/target/release/provisioner; }

median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

run() { # command: prints "elapsed cpu"
  local out rc
  local args=("$1" -i "$INV")
  [[ $1 == plan ]] && args+=(--exit-code) # 4 when anything would change
  local tf
  tf=$(mktemp)
  /usr/bin/time -o "$tf" -f '%e %U %S' "$BIN" "${args[@]}" >/dev/null 2>&1 && rc=0 || rc=$?
  if ((rc != 0)); then
    echo "$1 exited $rc: not a converged cluster" >&2
    exit 1
  fi
  awk '{printf "%.2f %.2f\n", $1, $2 + $3}' "$tf"
  rm -f "$tf"
}

"$BIN" apply -i "$INV" >/dev/null # converge first; not timed
for cmd in plan apply; do
  times=()
  cpus=()
  for ((i = 1; i <= RUNS; i++)); do
    read -r t c < <(run "$cmd")
    times+=("$t")
    cpus+=("$c")
    printf '%-5s run %d: %6.2f s (provisioner CPU %.2f s)\n' "$cmd" "$i" "$t" "$c"
  done
  printf '%-5s median: %6.2f s (CPU %.2f s)\n' "$cmd" \
    "$(printf '%s\n' "${times[@]}" | median)" "$(printf '%s\n' "${cpus[@]}" | median)"
done
