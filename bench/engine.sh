#!/usr/bin/env bash
# Benchmark: the 40-task role of bench/engine on lab hosts, provisioner vs ansible-playbook and
# pyinfra (the same operations in bench/pyinfra/deploy.py). Ratios from one run (each tool's
# no-op is the median of three back-to-back no-ops); not a test.
# Usage: bench/engine.sh INVENTORY [GROUP]     (GROUP: a group of the inventory, or all)
set -euo pipefail
cd "$(dirname "$0")/.."
INV=$(realpath "${1:?usage: bench/engine.sh INVENTORY [GROUP]}")
LIMIT=${2:-all}
P=$(realpath "${PROVISIONER:-target/release/provisioner}")
[ -x "$P" ] || { cargo build --release -q -p provisioner; P=$(realpath target/release/provisioner); }
# pyinfra from PyPI, in a venv of its own (bench/.venv, not committed).
VENV=bench/.venv
[ -x "$VENV/bin/pyinfra" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q pyinfra; }
PYINV=$(mktemp --suffix=.py)
trap 'rm -f "$PYINV"' EXIT
/usr/bin/python3 bench/pyinfra/inventory_from_ansible.py "$INV" "$LIMIT" "$PYINV"

export ANSIBLE_HOST_KEY_CHECKING=True ANSIBLE_RETRY_FILES_ENABLED=False
# Pipelining makes Ansible faster; we give it that advantage. Forks: 16 for every tool.
export ANSIBLE_PIPELINING=True ANSIBLE_FORKS=16
now() { date +%s.%N; }
t() { local s; s=$(now); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; echo "$(now) - $s" | bc; }
# No-op runs are short, so one stray host process can skew one of them: the median of three.
t3() {
  local a b c
  a=$(t "$@") || exit 1; b=$(t "$@") || exit 1; c=$(t "$@") || exit 1
  printf '%s\n' "$a" "$b" "$c" | sort -n | sed -n 2p
}
reset() { "$P" apply -i "$INV" -l "$LIMIT" bench/engine/reset.yml >/dev/null; }
hosts=$("$P" validate -i "$INV" -l "$LIMIT" bench/engine/site.yml | sed -n 's/.* \([0-9]*\) host(s).*/\1/p')

reset; a_first=$(t ansible-playbook -i "$INV" -l "$LIMIT" bench/engine/site.yml)
a_noop=$(t3 ansible-playbook -i "$INV" -l "$LIMIT" bench/engine/site.yml)
reset; y_first=$(cd bench/pyinfra && t ../../$VENV/bin/pyinfra -y --parallel 16 "$PYINV" deploy.py)
y_noop=$(cd bench/pyinfra && t3 ../../$VENV/bin/pyinfra -y --parallel 16 "$PYINV" deploy.py)
reset; p_first=$(t "$P" apply -i "$INV" -l "$LIMIT" -f 16 bench/engine/site.yml)
p_noop=$(t3 "$P" apply -i "$INV" -l "$LIMIT" -f 16 bench/engine/site.yml)
mem=$( { /usr/bin/time -f '%M' "$P" apply -i "$INV" -l "$LIMIT" -f 16 bench/engine/site.yml >/dev/null; } 2>&1 | tail -1)

printf 'hosts: %s, tasks: 40 (+1 handler); provisioner peak RSS on a no-op: %s KiB\n' "$hosts" "$mem"
printf '%-12s %12s %12s %12s %10s %10s\n' run ansible pyinfra provisioner vs-ansible vs-pyinfra
row() { printf '%-12s %11.2fs %11.2fs %11.2fs %9.1fx %9.1fx\n' "$1" "$2" "$3" "$4" "$(echo "$2 / $4" | bc -l)" "$(echo "$3 / $4" | bc -l)"; }
row "first apply" "$a_first" "$y_first" "$p_first"
row "no-op" "$a_noop" "$y_noop" "$p_noop"
