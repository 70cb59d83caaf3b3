#!/usr/bin/env bash
# End-to-end test of the Vagrant docker provider (README, "Vagrant"), run by .ci/test:
#   our own dockerd -> the image from the lab's cached base image -> `vagrant up --provider=docker`
#   (MASTERS=3 AGENTS=2) -> `provisioner apply -i inventories/vagrant.yml` with real Mesos ->
#   ZooKeeper has one leader and two followers, one Mesos master is elected, both agents are
#   active -> a second apply changes nothing -> `vagrant destroy -f` leaves no container, network
#   or iptables rule behind -> dockerd stopped; the host's forwarding and FORWARD policy unchanged.
# Whatever happens, the machines are destroyed and dockerd is stopped (trap).
#
# Needs root, vagrant, dockerd (docker.io) and a docker CLI, the debug build (BIN, default
# target/debug/provisioner, with the Mesos-DNS stand-in beside it: `cargo build -p provisioner
# -p testkit`) and the Mesos artifact (PROVISIONER_MESOS_ARTIFACT, default ../shared/mesos).
# CI_VAGRANT_SUBNET (default 192.168.56) is the cluster's /24.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-$ROOT/target/debug/provisioner}
[[ $BIN == /* ]] || BIN=$ROOT/$BIN
LOG=${CI_VAGRANT_LOG:-$ROOT/target/vagrant-ci}
mkdir -p "$LOG"

export MASTERS=3 AGENTS=2
export VAGRANT_SUBNET=${CI_VAGRANT_SUBNET:-192.168.56}
export VAGRANT_INVENTORY=$ROOT/inventories/vagrant.yml
export PROVISIONER=$BIN
export PROVISIONER_MESOS_ARTIFACT=${PROVISIONER_MESOS_ARTIFACT:-$(realpath -m "$ROOT/../shared/mesos/mesos-1.11.0-debian12-amd64.tar.gz")}
export DOCKER_HOST=unix:///run/provisioner-docker/docker.sock
export VAGRANT_DEFAULT_PROVIDER=docker VAGRANT_CHECKPOINT_DISABLE=1
INV=$VAGRANT_INVENTORY

step() { printf '\n=== vagrant: %s (%ss)\n' "$*" "$SECONDS"; }
fail() { echo "FAILED: $*"; exit 1; }
[[ -x $BIN ]] || fail "no provisioner binary at $BIN (cargo build -p provisioner -p testkit)"
[[ -x $(dirname "$BIN")/mesos-standin ]] || fail "no Mesos-DNS stand-in beside $BIN (cargo build -p testkit)"
[[ -f $PROVISIONER_MESOS_ARTIFACT ]] || fail "no Mesos artifact at $PROVISIONER_MESOS_ARTIFACT"

# The host's state that the Vagrant cluster must leave as it found it (the lab depends on it).
rules() { iptables-save | { grep -v '^#' || true; } | sed 's/\[[0-9]*:[0-9]*\]//'; }
host_state() { sysctl -n net.ipv4.ip_forward; iptables -S FORWARD | head -1; rules; }
host_before=$(host_state)

timings=()
timed() { # timed LABEL CMD...: run, record the wall time (not in a pipeline: timings is ours)
  local label=$1 t0=$SECONDS rc=0; shift
  "$@" || rc=$?
  timings+=("$label: $((SECONDS - t0)) s")
  return "$rc"
}

destroyed=0
cleanup() {
  rc=$?
  set +e
  if ((rc != 0)); then
    echo "--- failed (exit $rc); containers:"
    docker ps -a 2>/dev/null
  fi
  if ((destroyed == 0)) && docker version >/dev/null 2>&1; then
    step "destroy (cleanup)"
    (cd vagrant && vagrant destroy -f) 2>&1 | tail -5
    "$BIN" lab proxy --stop --dir vagrant/.vagrant/provisioner/acng
  fi
  step "stop our dockerd"
  vagrant/dockerd.sh stop
  if ((${#timings[@]})); then
    printf '\nvagrant docker provider timings:\n'
    printf '  %s\n' "${timings[@]}"
  fi
  exit "$rc"
}
trap cleanup EXIT

step "our dockerd (no forwarding, no iptables)"
vagrant/dockerd.sh start
[[ $(host_state) == "$host_before" ]] || fail "starting dockerd changed the host's forwarding or iptables"
containers_before=$(docker ps -aq)
networks_before=$(docker network ls --format '{{.Name}}' | sort)
volumes_before=$(docker volume ls -q | sort)

step "image from the lab's cached base image"
timed "image" "$BIN" lab image --docker

step "vagrant up --provider=docker (MASTERS=$MASTERS AGENTS=$AGENTS, $VAGRANT_SUBNET.0/24)"
(cd vagrant && vagrant destroy -f >/dev/null 2>&1 || true)   # leftovers of an interrupted run
timed "vagrant up" bash -c 'cd vagrant && vagrant up --provider=docker' > >(tee "$LOG/up.log") 2>&1 ||
  fail "vagrant up failed (log: $LOG/up.log)"
grep -q 'StrictHostKeyChecking=yes' "$INV" || fail "the inventory does not check host keys"
hosts=$((MASTERS + AGENTS))
[[ $(grep -c ' ssh-ed25519 ' vagrant/.vagrant/provisioner/known_hosts) == "$hosts" ]] ||
  fail "known_hosts has no ed25519 key for each of the $hosts machines"

step "provisioner apply -i inventories/vagrant.yml"
timed "apply" "$BIN" apply -i "$INV" > >(tee "$LOG/apply.log") 2>&1 || fail "apply failed (log: $LOG/apply.log)"

step "the cluster is healthy: ZooKeeper 1 leader + 2 followers, 1 elected master, 2 active agents"
ok=0
for _ in $(seq 1 60); do
  "$BIN" status -i "$INV" --output json > "$LOG/status.json" 2>"$LOG/status.err" || true
  if jq -e --argjson agents "$AGENTS" '
      ([.view.zookeeper[] | select(.mode == "leader")] | length) == 1 and
      ([.view.zookeeper[] | select(.mode == "follower")] | length) == 2 and
      ([.view.masters[] | select(.elected)] | length) == 1 and
      ([.view.agents[] | select(.active)] | length) == $agents' "$LOG/status.json" >/dev/null; then
    ok=1; break
  fi
  sleep 5
done
jq -c '{zookeeper: [.view.zookeeper[] | {host, mode}], elected: [.view.masters[] | select(.elected) | .host],
        agents: [.view.agents[] | {hostname, active}], healthy}' "$LOG/status.json" || true
((ok)) || fail "the cluster did not become healthy (status: $LOG/status.json)"
"$BIN" status -i "$INV"

step "a second apply changes nothing"
timed "second apply" "$BIN" apply -i "$INV" --output json > "$LOG/apply2.jsonl" ||
  fail "the second apply failed ($LOG/apply2.jsonl)"
changed=$(jq -r 'select(.event == "task_finished" and .changed == true) | "\(.host): \(.task)"' "$LOG/apply2.jsonl")
[[ -z $changed ]] || fail "the second apply changed: $changed"
for h in $(jq -r 'select(.event == "run_started") | .hosts[]' "$LOG/apply2.jsonl"); do
  echo "$h: changed=0"
done

step "vagrant destroy -f"
timed "vagrant destroy" bash -c 'cd vagrant && vagrant destroy -f' > >(tee "$LOG/destroy.log") 2>&1 ||
  fail "vagrant destroy failed (log: $LOG/destroy.log)"
destroyed=1
[[ $(docker ps -aq) == "$containers_before" ]] || fail "containers left: $(docker ps -a)"
[[ $(docker network ls --format '{{.Name}}' | sort) == "$networks_before" ]] ||
  fail "networks left: $(docker network ls)"
[[ $(docker volume ls -q | sort) == "$volumes_before" ]] || fail "volumes left: $(docker volume ls)"
# The cluster left the labs' apt proxy (which still serves the lab, if one is up).
if ls /var/lib/provisioner/apt-proxy/users 2>/dev/null | grep -q '_vagrant_.vagrant_provisioner_acng$'; then
  fail "the Vagrant cluster still holds the apt proxy: $(ls /var/lib/provisioner/apt-proxy/users)"
fi
[[ $(host_state) == "$host_before" ]] || fail "the host's forwarding or iptables changed: $(diff <(echo "$host_before") <(host_state))"
step "vagrant docker provider: all checks passed"
