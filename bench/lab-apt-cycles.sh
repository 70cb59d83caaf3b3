#!/usr/bin/env bash
# The lab never hangs on apt (issue 15, item 5): CYCLES times (default 10), bring up two bare labs
# at once (HOSTS hosts each, default 4), then have every host of both labs run `apt-get update`
# and download the stack's packages at the same moment, through the machine's one apt proxy;
# then destroy both labs (the last one stops the proxy, so each cycle starts a fresh daemon).
#
# A strike is: an `apt-get` that fails or takes more than STRIKE_SECS (default 120; a clean
# update + download takes seconds); an index the proxy failed to serve (apt's `Ign:` for an
# InRelease: what preceded every hang seen); or a new "File exists" line in the proxy's error log
# (apt-cacher-ng replacing a cached file under a concurrent request). Prints one line per
# cycle and exits 1 on any strike.
#
#   bash bench/lab-apt-cycles.sh [CYCLES]      (root; BIN=path/to/provisioner, default the debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
CYCLES=${1:-10}
HOSTS=${HOSTS:-4}
STRIKE_SECS=${STRIKE_SECS:-120}
BIN=${BIN:-$PWD/target/debug/provisioner}
PKGS="openjdk-17-jre-headless zookeeper docker.io dnsmasq dnsutils prometheus prometheus-node-exporter glusterfs-client chrony curl"
ERR=/var/lib/provisioner/apt-proxy/log/apt-cacher.err
LABS=(aptc1 aptc2)
SUBNETS=(10.231.0.0/24 10.232.0.0/24)
OUT=$(mktemp -d)
trap 'for l in "${LABS[@]}"; do "$BIN" lab destroy --name "$l" >/dev/null 2>&1 || true; done; rm -rf "$OUT"' EXIT

races() { { grep -c 'File exists' "$ERR" 2>/dev/null || true; } | tail -1; }
strikes=0
for ((c = 1; c <= CYCLES; c++)); do
  t0=$SECONDS
  for i in 0 1; do
    "$BIN" lab up --name "${LABS[$i]}" --bare --masters 1 --agents $((HOSTS - 1)) --extra 0 \
      --subnet "${SUBNETS[$i]}" --inventory "$OUT/${LABS[$i]}.yml" >"$OUT/up-$i.log" 2>&1 &
  done
  wait || { cat "$OUT"/up-*.log; exit 1; }
  up=$((SECONDS - t0))
  before=$(races)
  pids=()
  for l in "${LABS[@]}"; do
    for h in master1 $(seq -f 'agent%g' 1 $((HOSTS - 1))); do
      (
        s=$SECONDS
        rc=0
        timeout 600 "$BIN" lab ssh --name "$l" "$h" -- \
          "sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --download-only $PKGS" \
          >"$OUT/$l-$h.log" 2>&1 || rc=$?
        echo "$l/$h $rc $((SECONDS - s))" >"$OUT/$l-$h.result"
      ) &
      pids+=($!)
    done
  done
  wait "${pids[@]}"
  worst=0 bad=()
  for r in "$OUT"/*.result; do
    read -r who rc secs <"$r"
    ((secs > worst)) && worst=$secs
    if ((rc != 0 || secs > STRIKE_SECS)); then bad+=("$who: exit $rc after $secs s"); fi
    log=$OUT/${who/\//-}.log
    if grep -q '^Ign:.*InRelease' "$log"; then bad+=("$who: the proxy failed to serve $(grep -m1 '^Ign:.*InRelease' "$log")"); fi
  done
  new=$(($(races) - before))
  ((new > 0)) && bad+=("$new new 'File exists' line(s) in $ERR")
  rm -f "$OUT"/*.result
  for l in "${LABS[@]}"; do "$BIN" lab destroy --name "$l" >/dev/null 2>&1; done
  if ((${#bad[@]})); then
    strikes=$((strikes + ${#bad[@]}))
    printf 'cycle %d: STRIKE: %s\n' "$c" "${bad[*]}"
  else
    printf 'cycle %d: ok: 2 labs up in %d s, %d hosts updated and downloaded at once, slowest %d s\n' \
      "$c" "$up" $((2 * HOSTS)) "$worst"
  fi
done
printf '%d cycle(s), %d strike(s)\n' "$CYCLES" "$strikes"
((strikes == 0))
