#!/usr/bin/env bash
# Benchmarks the agent (not a test): run as root.   bash scripts/bench-agent.sh [N]
#
# In a network namespace of its own, one kg (userspace WireGuard, file backend) on a mesh file of
# N nodes (default 1000) in full granularity, so the local node has N-1 WireGuard peers and N-1
# routes. Measures and prints:
#   1. applying the N-1-peer plan to a fresh interface: time from start to /health 200, and the
#      WireGuard and netlink write counts;
#   2. a one-peer change (one node's endpoint and allowed IPs edited in the file): the WireGuard
#      operations it costs (1 expected) and the time until it is applied;
#   3. the agent's RSS once settled (VmRSS), and its CPU time over 30 s without events
#      (utime+stime; --resync-period 30s, upstream's default, so one resync falls in the window).
# PROFILE=release (default) or debug picks the build; FIREWALL=nftables (or iptables) is passed
# to kg as --firewall (unset: kg's default). No packet leaves the namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "bench: run as root (it creates a network namespace)" >&2; exit 1; }
N=${1:-1000}
PROFILE=${PROFILE:-release}
IDLE=${IDLE:-30}
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  if [[ $PROFILE == release ]]; then cargo build --locked --release -p kg >&2; else cargo build --locked -p kg >&2; fi
fi
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
KG=$TARGET/$PROFILE/kg

NS=kbench$$
WORK=$(mktemp -d /tmp/kilo-bench.XXXXXX)
PID=
cleanup() {
  set +e
  if [[ -n $PID ]]; then
    kill -TERM "$PID" 2>/dev/null
    # Clean-up deletes every firewall rule one iptables call at a time: give it two minutes.
    for _ in $(seq 1200); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null
  fi
  ip netns del "$NS" 2>/dev/null
  [[ -n ${KEEP_LOG:-} ]] && cp "$WORK/kg.log" "$KEEP_LOG"
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
ip netns add "$NS"
ip -n "$NS" link set lo up

"$KG" --key-file "$WORK/key" pubkey >"$WORK/pub"
# The mesh: node0 is this host; the others get random (valid-length) keys, endpoints in
# 198.18.0.0/15 and pod subnets in 10.16.0.0/14. Written by a helper so that step 2 can edit it.
write_mesh() { # $1: port of node 500's endpoint, $2: its extra allowed location IP
  python3 - "$N" "$WORK/pub" "$WORK/keys" "$1" "$2" >"$WORK/mesh/mesh.toml.new" <<'PY'
import base64, os, sys
n, pub, keys, port, extra = int(sys.argv[1]), open(sys.argv[2]).read().strip(), sys.argv[3], sys.argv[4], sys.argv[5]
if not os.path.exists(keys):
    with open(keys, "w") as f:
        f.write("\n".join(base64.b64encode(os.urandom(32)).decode() for _ in range(n)))
others = open(keys).read().split("\n")
print('[mesh]\ngranularity = "full"\n')
for i in range(n):
    key = pub if i == 0 else others[i]
    p = port if i == n // 2 else "51820"
    print(f'[[node]]\nname = "node{i}"\npublic-key = "{key}"\nendpoint = "198.18.{i // 250}.{i % 250 + 1}:{p}"')
    print(f'subnet = "10.{16 + i // 256}.{i % 256}.0/24"')
    if i == n // 2 and extra:
        print(f'allowed-location-ips = ["{extra}"]')
    print()
PY
  mv "$WORK/mesh/mesh.toml.new" "$WORK/mesh/mesh.toml"
}
mkdir -p "$WORK/mesh"
write_mesh 51820 ""

metric() { ip netns exec "$NS" curl -s http://127.0.0.1:1107/metrics | awk -v m="$1" '$1 == m { print $2 }'; }
ms() { date +%s%N | cut -b1-13; }

START=$(ms)
ip netns exec "$NS" "$KG" --backend file --file "$WORK/mesh/mesh.toml" --hostname node0 \
  --wireguard userspace --wireguard-socket-dir "$WORK/wg" --encapsulate never --cni=false \
  --key-file "$WORK/key" ${FIREWALL:+--firewall "$FIREWALL"} --listen 127.0.0.1:1107 --log-level "${LOG_LEVEL:-warn}" --log-format human >"$WORK/kg.log" 2>&1 &
PID=$!
until ip netns exec "$NS" curl -sf -o /dev/null http://127.0.0.1:1107/health; do
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/kg.log"; exit 1; }
  sleep 0.02
done
HEALTHY=$(( $(ms) - START )); echo "healthy after ${HEALTHY} ms" >&2
sleep 1
WG1=$(metric kilo_wireguard_operations_total)
NL1=$(metric kilo_netlink_writes_total)
NODES=$(metric kilo_nodes)
ROUTES=$(ip -n "$NS" route show proto static | wc -l)

# 2. one node's endpoint and allowed IPs change.
EDIT=$(ms)
write_mesh 51999 "172.31.200.0/24"
until [[ $(metric kilo_wireguard_operations_total) != "$WG1" ]]; do
  (( $(ms) - EDIT < 20000 )) || { echo "the edit was never applied"; tail "$WORK/kg.log"; exit 1; }
  sleep 0.02
done
APPLIED=$(( $(ms) - EDIT ))
sleep 3
WG2=$(metric kilo_wireguard_operations_total)
NL2=$(metric kilo_netlink_writes_total)

# 3. memory and idle CPU.
sleep 5
RSS=$(awk '/^VmRSS/ { print $2 " " $3 }' "/proc/$PID/status")
HZ=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
C1=$(cpu); sleep "$IDLE"; C2=$(cpu)
WG3=$(metric kilo_wireguard_operations_total)
CPU_MS=$(( (C2 - C1) * 1000 / HZ ))

printf '\nkg %s build, %s nodes in full granularity (%s WireGuard peers, %s static routes)\n\n' "$PROFILE" "$N" "$((N - 1))" "$ROUTES"
printf '%-58s %s\n' "measure" "value"
printf '%-58s %s\n' "start to /health 200 (fresh interface, whole plan)" "${HEALTHY} ms"
printf '%-58s %s\n' "WireGuard operations for the first plan" "$WG1"
printf '%-58s %s\n' "netlink writes for the first plan" "$NL1"
printf '%-58s %s\n' "kilo_nodes" "$NODES"
printf '%-58s %s\n' "one node edited: WireGuard operations" "$((WG2 - WG1))"
printf '%-58s %s\n' "one node edited: netlink writes" "$((NL2 - NL1))"
printf '%-58s %s\n' "one node edited: file write to WireGuard op" "${APPLIED} ms"
printf '%-58s %s\n' "RSS after settling (VmRSS)" "$RSS"
printf '%-58s %s\n' "CPU over ${IDLE} s without events (utime+stime)" "${CPU_MS} ms"
printf '%-58s %s\n' "WireGuard operations during the idle window" "$((WG3 - WG2))"
