#!/usr/bin/env bash
# The kilo-rs demo (README): a real encrypted mesh between network namespaces on one machine.
# Run as root on a fresh Debian machine:   bash scripts/demo.sh
#
# Builds two locations and an external peer, all inside namespaces this script creates:
#   WAN "internet" 203.0.113.0/24 (a bridge in kd-wan)
#   location a: nodes a1 (leader) and a2 on a dual-stack LAN 192.168.1.0/24 + fd00:1::/64;
#   location b: node b1 on 192.168.2.0/24 + fd00:2::/64
#   dual-stack pod subnets 10.2.N.0/24 + fd02:N::/64 on a bridge in each node (10.2.N.1 and
#   fd02:N::1 are "the pod"); WireGuard ranges 10.4.0.0/16 and fd04::/64
#   external peer "laptop" 10.5.0.1/32 + fd05::1/128 on the WAN, running a userspace WireGuard daemon
# starts one kg per node (userspace WireGuard, file backend), prints `kgctl graph`, pings every pod
# in both families from every node's pod and from the peer, and tears everything down on exit.
# Exit status 0 only if every ping succeeded.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 1; }

SKIP_SETUP=${SKIP_SETUP:-0}
if [[ $SKIP_SETUP != 1 ]]; then bash scripts/setup.sh; fi
echo "== building kg, kgctl and the userspace WireGuard daemon"
cargo build --locked -p kg -p kgctl
cargo build --locked -p kilo-net-linux --example wg_userspace
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
KG=$TARGET/debug/kg KGCTL=$TARGET/debug/kgctl WGU=$TARGET/debug/examples/wg_userspace

P=kd$$-   # namespace prefix
WORK=$(mktemp -d /tmp/kilo-demo.XXXXXX)
NAMESPACES=()
PIDS=()
cleanup() {
  local rc=$?
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$WORK"
  echo "== torn down"
  exit "$rc"
}
trap cleanup EXIT INT TERM

netns() {
  ip netns add "$P$1"; NAMESPACES+=("$P$1"); ip -n "$P$1" link set lo up
  # IPv6 addresses usable at once (no duplicate address detection).
  ip netns exec "$P$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
}
bridge() { ip -n "$P$1" link add "$2" type bridge; ip -n "$P$1" link set "$2" up; }
# plug NS IFACE HUB-NS BRIDGE ADDR: a veth from namespace NS (named IFACE) into a bridge
plug() {
  ip -n "$P$1" link add "$2" type veth peer name "$1-$2" netns "$P$3"
  ip -n "$P$3" link set "$1-$2" master "$4" up
  ip -n "$P$1" addr add "$5" dev "$2"
  ip -n "$P$1" link set "$2" up
}

echo "== building the hosts (namespaces ${P}*)"
netns wan; bridge wan br0
netns lana; bridge lana br0
netns lanb; bridge lanb br0
declare -A WAN=([a1]=203.0.113.11 [a2]=203.0.113.12 [b1]=203.0.113.21)
declare -A LAN=([a1]=192.168.1.11/24 [a2]=192.168.1.12/24 [b1]=192.168.2.21/24)
declare -A LAN6=([a1]=fd00:1::11/64 [a2]=fd00:1::12/64 [b1]=fd00:2::21/64)
declare -A LANNS=([a1]=lana [a2]=lana [b1]=lanb)
declare -A POD=([a1]=1 [a2]=2 [b1]=3)
declare -A LOC=([a1]=a [a2]=a [b1]=b)
NODES=(a1 a2 b1)
for n in "${NODES[@]}"; do
  netns "$n"
  ip netns exec "$P$n" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  plug "$n" wan0 wan br0 "${WAN[$n]}/24"
  plug "$n" lan0 "${LANNS[$n]}" br0 "${LAN[$n]}"
  ip -n "$P$n" addr add "${LAN6[$n]}" dev lan0
  ip -n "$P$n" link add pods type bridge
  ip -n "$P$n" addr add "10.2.${POD[$n]}.1/24" dev pods
  ip -n "$P$n" addr add "fd02:${POD[$n]}::1/64" dev pods
  ip -n "$P$n" link set pods up
done
netns peer
plug peer wan0 wan br0 203.0.113.100/24

echo "== keys and the mesh file"
for n in "${NODES[@]}" laptop; do
  (umask 077; "$KGCTL" genkey >"$WORK/$n.key")
  "$KGCTL" pubkey <"$WORK/$n.key" >"$WORK/$n.pub"
done
MESH=$WORK/mesh.toml
{
  echo '[mesh]'
  echo 'granularity = "location"'
  echo 'subnet = ["10.4.0.0/16", "fd04::/64"]'
  for n in "${NODES[@]}"; do
    echo
    echo '[[node]]'
    echo "name = \"$n\""
    echo "public-key = \"$(cat "$WORK/$n.pub")\""
    echo "endpoint = \"${WAN[$n]}:51820\""
    echo "location = \"${LOC[$n]}\""
    echo "internal-ip = [\"${LAN[$n]}\", \"${LAN6[$n]}\"]"
    echo "subnet = [\"10.2.${POD[$n]}.0/24\", \"fd02:${POD[$n]}::/64\"]"
    [[ $n == a1 ]] && echo 'leader = true'
  done
  echo
  echo '[[peer]]'
  echo 'name = "laptop"'
  echo "public-key = \"$(cat "$WORK/laptop.pub")\""
  echo 'allowed-ips = ["10.5.0.1/32", "fd05::1/128"]'
  echo 'endpoint = "203.0.113.100:51820"'
} >"$MESH"
cat "$MESH"

echo "== starting kg on every node"
for n in "${NODES[@]}"; do
  ip netns exec "$P$n" "$KG" --backend file --file "$MESH" --hostname "$n" \
    --wireguard userspace --wireguard-socket-dir "$WORK/$n.wg" --encapsulate never --cni=false \
    --key-file "$WORK/$n.key" --listen 127.0.0.1:1107 --log-format human --resync-period 2s \
    >"$WORK/$n.log" 2>&1 &
  PIDS+=($!)
done

echo "== the external peer: kgctl showconf peer laptop, plus its own key and port"
{
  echo '[Interface]'
  echo "PrivateKey = $(cat "$WORK/laptop.key")"
  echo 'ListenPort = 51820'
  "$KGCTL" --backend file --file "$MESH" showconf peer laptop
} >"$WORK/laptop.conf"
sed 's/^PrivateKey = .*/PrivateKey = (hidden)/' "$WORK/laptop.conf"
ip netns exec "${P}peer" "$WGU" wg0 "$WORK/laptop.wg" "$WORK/laptop.conf" >"$WORK/laptop.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q ready "$WORK/laptop.log" && break; sleep 0.1; done
grep -q ready "$WORK/laptop.log" || { cat "$WORK/laptop.log"; exit 1; }
ip -n "${P}peer" addr add 10.5.0.1/32 dev wg0
ip -n "${P}peer" addr add fd05::1/128 dev wg0
ip -n "${P}peer" link set wg0 up
for cidr in $(sed -n 's/^AllowedIPs = //p' "$WORK/laptop.conf" | tr ',' ' '); do
  ip -n "${P}peer" route replace "$cidr" dev wg0
done

echo "== waiting for every agent's /health"
for n in "${NODES[@]}"; do
  for _ in $(seq 100); do
    ip netns exec "$P$n" curl -sf -o /dev/null http://127.0.0.1:1107/health && break
    sleep 0.2
  done
  ip netns exec "$P$n" curl -sf -o /dev/null http://127.0.0.1:1107/health \
    || { echo "kg on $n is not healthy:"; cat "$WORK/$n.log"; exit 1; }
  echo "   $n: healthy"
done

echo "== kgctl graph"
"$KGCTL" --backend file --file "$MESH" graph

echo "== routes on a2 (not the leader: location b goes through a1, each family through its address)"
ip -n "${P}a2" route show | sed 's/^/   /'
ip -n "${P}a2" -6 route show | grep -v '^fe80' | sed 's/^/   /'

FAILED=0
ping_from() { # NS SOURCE DEST: ping DEST from address SOURCE in namespace NS
  local ok=0
  for _ in $(seq 10); do
    if ip netns exec "$P$1" ping -c1 -W1 -I "$2" "$3" >/dev/null 2>&1; then ok=1; break; fi
  done
  if ((ok)); then printf '   %-4s %-10s -> %-10s ok\n' "$1" "$2" "$3"; else printf '   %-4s %-10s -> %-10s FAILED\n' "$1" "$2" "$3"; FAILED=1; fi
}
echo "== pings (every pod, IPv4 and IPv6, from every node's pod address and from the peer)"
for src in "${NODES[@]}" peer; do
  if [[ $src == peer ]]; then from4=10.5.0.1 from6=fd05::1; else from4=10.2.${POD[$src]}.1 from6=fd02:${POD[$src]}::1; fi
  for dst in "${NODES[@]}"; do
    ping_from "$src" "$from4" "10.2.${POD[$dst]}.1"
    ping_from "$src" "$from6" "fd02:${POD[$dst]}::1"
  done
done
if ((FAILED)); then
  echo "== some pings failed; agent logs:"
  for n in "${NODES[@]}"; do echo "--- $n"; tail -n 20 "$WORK/$n.log"; done
  exit 1
fi
echo "== every ping succeeded"
