#!/usr/bin/env bash
# A dockerd of our own for Vagrant's docker provider, beside the system's (which must not run:
# a default dockerd turns IP forwarding on and sets the iptables FORWARD policy to DROP, which
# cuts the lab's bridged traffic). This one changes neither forwarding nor iptables, keeps its
# data, state, pid file and socket apart, and puts docker0 on PROVISIONER_DOCKER_BIP.
#
#   vagrant/dockerd.sh start     # idempotent; then: export DOCKER_HOST=unix:///run/provisioner-docker/docker.sock
#   vagrant/dockerd.sh stop      # stops it (and the containerd it started)
#   vagrant/dockerd.sh status
#
# Needs root and dockerd (Debian: docker.io; mask its units: systemctl mask docker.socket
# docker.service containerd.service).
set -euo pipefail

RUN=${PROVISIONER_DOCKER_RUN:-/run/provisioner-docker}
DATA=${PROVISIONER_DOCKER_DATA:-/var/lib/provisioner/docker}
BIP=${PROVISIONER_DOCKER_BIP:-172.31.250.1/24}
SOCK=$RUN/docker.sock
PIDFILE=$RUN/dockerd.pid
export DOCKER_HOST=unix://$SOCK

ours() { # our dockerd's pid, if it runs
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [[ -n $pid ]] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--pidfile $PIDFILE" && echo "$pid"
}

case ${1:-} in
start)
  if ours >/dev/null && docker version >/dev/null 2>&1; then echo "dockerd already runs (DOCKER_HOST=$DOCKER_HOST)"; exit 0; fi
  mkdir -p "$RUN" "$DATA"
  setsid dockerd \
    --data-root "$DATA" --exec-root "$RUN/exec" --pidfile "$PIDFILE" -H "$DOCKER_HOST" \
    --ip-forward=false --iptables=false --ip6tables=false --ip-masq=false --bip "$BIP" \
    >"$RUN/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 100); do
    docker version >/dev/null 2>&1 && { echo "dockerd runs (DOCKER_HOST=$DOCKER_HOST)"; exit 0; }
    sleep 0.2
  done
  echo "dockerd did not answer on $SOCK; its log:"; tail -20 "$RUN/dockerd.log"; exit 1
  ;;
stop)
  if pid=$(ours); then
    kill -TERM "$pid"
    for _ in $(seq 1 150); do [[ -d /proc/$pid ]] || break; sleep 0.2; done
    [[ -d /proc/$pid ]] && { echo "dockerd $pid did not stop; killing it"; kill -KILL "$pid"; }
    echo "dockerd stopped"
  else
    echo "dockerd is not running"
  fi
  ;;
status)
  if pid=$(ours); then echo "dockerd runs: pid $pid, DOCKER_HOST=$DOCKER_HOST"; else echo "dockerd is not running"; exit 3; fi
  ;;
*)
  echo "usage: $0 start|stop|status"; exit 2
  ;;
esac
