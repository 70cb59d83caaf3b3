#!/usr/bin/env bash
# Benchmark: the 40-task role of bench/engine on lab hosts, ansible-playbook vs provisioner.
# Usage: bench/engine.sh INVENTORY [LIMIT]   (ratios from one run; not a test)
set -euo pipefail
cd "$(dirname "$0")/.."
INV=${1:?usage: bench/engine.sh INVENTORY [LIMIT]}
LIMIT=${2:-all}
P=${PROVISIONER:-target/release/provisioner}
[ -x "$P" ] || cargo build --release -q
export ANSIBLE_HOST_KEY_CHECKING=True ANSIBLE_RETRY_FILES_ENABLED=False
# Pipelining makes Ansible faster; we give it that advantage.
export ANSIBLE_PIPELINING=True ANSIBLE_FORKS=${FORKS:-16}
now() { date +%s.%N; }
t() { local s; s=$(now); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; echo "$(now) - $s" | bc; }
reset() { "$P" apply -i "$INV" -l "$LIMIT" bench/engine/reset.yml >/dev/null; }
hosts=$("$P" validate -i "$INV" -l "$LIMIT" bench/engine/site.yml | sed -n 's/.* \([0-9]*\) host(s).*/\1/p')
reset; a_first=$(t ansible-playbook -i "$INV" -l "$LIMIT" bench/engine/site.yml)
a_noop=$(t ansible-playbook -i "$INV" -l "$LIMIT" bench/engine/site.yml)
reset; p_first=$(t "$P" apply -i "$INV" -l "$LIMIT" -f "${FORKS:-16}" bench/engine/site.yml)
p_noop=$(t "$P" apply -i "$INV" -l "$LIMIT" -f "${FORKS:-16}" bench/engine/site.yml)
printf 'hosts: %s, tasks: 40 (+1 handler)\n' "$hosts"
printf '%-12s %14s %14s %8s\n' run ansible-playbook provisioner ratio
printf '%-12s %13.2fs %13.2fs %7.1fx\n' "first apply" "$a_first" "$p_first" "$(echo "$a_first / $p_first" | bc -l)"
printf '%-12s %13.2fs %13.2fs %7.1fx\n' "no-op" "$a_noop" "$p_noop" "$(echo "$a_noop / $p_noop" | bc -l)"
