#!/usr/bin/env bash
# Benchmarks the agent (not a test): run as root.   bash scripts/bench-agent.sh [N...]
#
# For each mesh size N (default 1000) and each firewall (FIREWALLS, default "iptables nftables"),
# in a network namespace of its own, one kg (userspace WireGuard, file backend) on a mesh file of
# N nodes in full granularity, so the local node has N-1 WireGuard peers and N-1 routes.
# Measures, one table row per run:
#   1. applying the N-1-peer plan to a fresh interface: time from start to /health 200;
#   2. a one-peer change (node N/2's endpoint and allowed location IPs edited in the file): the
#      time from the file write until the new route is in the kernel (polled with `ip route`,
#      which costs the agent nothing), then the WireGuard operations, netlink writes and firewall
#      writes it cost;
#   3. the agent's RSS once settled (VmRSS), and its CPU time over IDLE seconds (default 60)
#      without events, its children's included (utime+stime+cutime+cstime: `iptables-save` and
#      the like count); --resync-period 30s, upstream's default, so two resyncs fall in the window.
#      SETTLE=S waits S more seconds before that window (default 0): SETTLE=30 lets the first
#      resync after the edit (which reads the kernel's routes and firewall once more, to know them
#      in order) fall before it, so that the window shows the steady state.
# PROFILE=release (default) or debug picks the build; KG=/path/to/kg benchmarks another binary
# (an older build, say: give it the same flags) and skips the build; SKIP_BUILD=1 uses the
# existing build. DEVICE=in-process (default: kg's own userspace WireGuard) or DEVICE=external
# (wireguard-go runs the device in a process of its own and kg attaches to its socket, as it would
# to a sidecar; the kernel module, which this machine lacks, likewise keeps the data path and its
# per-peer state out of kg: this separates the agent's own memory and CPU from the data path's).
# No packet leaves the namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "bench: run as root (it creates a network namespace)" >&2; exit 1; }
SIZES=("${@:-1000}")
PROFILE=${PROFILE:-release}
IDLE=${IDLE:-60}
FIREWALLS=${FIREWALLS:-iptables nftables}
DEVICE=${DEVICE:-in-process}
if [[ -z ${KG:-} ]]; then
  if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    if [[ $PROFILE == release ]]; then cargo build --locked --release -p kg >&2; else cargo build --locked -p kg >&2; fi
  fi
  TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  KG=$TARGET/$PROFILE/kg
fi

NS=kbench$$
WORK=$(mktemp -d /tmp/kilo-bench.XXXXXX)
PID=
WGPID=
stop_agent() {
  if [[ -n $PID ]]; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1200); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=
  fi
  if [[ -n $WGPID ]]; then
    kill -TERM "$WGPID" 2>/dev/null || true
    wait "$WGPID" 2>/dev/null || true
    WGPID=
  fi
}
cleanup() {
  set +e
  stop_agent
  ip netns del "$NS" 2>/dev/null
  [[ -n ${KEEP_LOG:-} ]] && cp "$WORK/kg.log" "$KEEP_LOG"
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

"$KG" --key-file "$WORK/key" pubkey >"$WORK/pub"
# The mesh: node0 is this host; the others get random (valid-length) keys, endpoints in
# 198.18.0.0/15 and pod subnets in 10.16.0.0/12. Written next to the file by a helper, then renamed
# over it (as editors do), so that step 2 times the change from the rename.
write_mesh() { # $1: N, $2: port of node N/2's endpoint, $3: its extra allowed location IP
  python3 - "$1" "$WORK/pub" "$WORK/keys.$1" "$2" "$3" >"$WORK/mesh/mesh.toml.new" <<'PY'
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
}
mkdir -p "$WORK/mesh"

metric() { ip netns exec "$NS" curl -s http://127.0.0.1:1107/metrics | awk -v m="$1" '$1 == m { s += $2 } END { print s + 0 }'; }
firewall_writes() {
  ip netns exec "$NS" curl -s http://127.0.0.1:1107/metrics |
    awk '$1 ~ /^kilo_iptables_operations_total/ && $1 !~ /operation="(Exists|List|ListChains)"/ { s += $2 } END { print s + 0 }'
}
ms() { date +%s%N | cut -b1-13; }
HZ=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$PID/stat"; }

ROWS=()
run_one() { # $1: N, $2: firewall
  local n=$1 firewall=$2
  ip netns add "$NS"
  ip -n "$NS" link set lo up
  write_mesh "$n" 51820 ""
  mv "$WORK/mesh/mesh.toml.new" "$WORK/mesh/mesh.toml"
  : >"$WORK/kg.log"
  local sockets=$WORK/wg
  if [[ $DEVICE == external ]]; then
    # wireguard-go serves /var/run/wireguard/kilo0.sock (shared by all namespaces: one run at a time).
    sockets=/var/run/wireguard
    ip netns exec "$NS" wireguard-go -f kilo0 >"$WORK/wg.log" 2>&1 &
    WGPID=$!
    until [[ -S $sockets/kilo0.sock ]]; do sleep 0.02; done
  fi
  local start; start=$(ms)
  ip netns exec "$NS" "$KG" --backend file --file "$WORK/mesh/mesh.toml" --hostname node0 \
    --wireguard userspace --wireguard-socket-dir "$sockets" --encapsulate never --cni=false \
    --key-file "$WORK/key" --firewall "$firewall" --listen 127.0.0.1:1107 \
    --log-level "${LOG_LEVEL:-warn}" --log-format human >"$WORK/kg.log" 2>&1 &
  PID=$!
  until ip netns exec "$NS" curl -sf -o /dev/null http://127.0.0.1:1107/health; do
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/kg.log"; exit 1; }
    sleep 0.02
  done
  local healthy=$(($(ms) - start))
  sleep 2
  local wg1 nl1 fw1 wg2 nl2 fw2
  wg1=$(metric kilo_wireguard_operations_total); nl1=$(metric kilo_netlink_writes_total); fw1=$(firewall_writes)

  # 2. node N/2's endpoint and allowed location IPs change: a new route to 172.31.200.0/24.
  write_mesh "$n" 51999 "172.31.200.0/24"
  local edit; edit=$(ms)
  mv "$WORK/mesh/mesh.toml.new" "$WORK/mesh/mesh.toml"
  until [[ -n $(ip -n "$NS" route show 172.31.200.0/24) ]]; do
    (($(ms) - edit < 20000)) || { echo "the edit was never applied"; tail "$WORK/kg.log"; exit 1; }
    sleep 0.005
  done
  local applied=$(($(ms) - edit))
  sleep 3
  wg2=$(metric kilo_wireguard_operations_total); nl2=$(metric kilo_netlink_writes_total); fw2=$(firewall_writes)

  # 3. memory and idle CPU.
  sleep $((5 + ${SETTLE:-0}))
  local rss; rss=$(awk '/^VmRSS/ { printf "%.1f MB", $2 / 1000 }' "/proc/$PID/status")
  local c1 c2; c1=$(cpu); sleep "$IDLE"; c2=$(cpu)
  local wg3; wg3=$(metric kilo_wireguard_operations_total)
  local cpu_ms=$(((c2 - c1) * 1000 / HZ))
  stop_agent
  ip netns del "$NS"
  ROWS+=("| $n | $firewall | ${healthy} ms | ${applied} ms | $((wg2 - wg1)) / $((nl2 - nl1)) / $((fw2 - fw1)) | $rss | ${cpu_ms} ms | $((wg3 - wg2)) |")
  echo "${ROWS[-1]}" >&2
}

for n in "${SIZES[@]}"; do
  for firewall in $FIREWALLS; do
    run_one "$n" "$firewall"
  done
done

printf '\n%s (%s build), full granularity, userspace WireGuard (%s device); load average %s\n\n' "$KG" "$PROFILE" "$DEVICE" "$(cut -d' ' -f1-3 /proc/loadavg)"
echo "| nodes | firewall | start to /health 200 | one-node edit: file write to route | its WireGuard ops / netlink writes / firewall writes | RSS after settling | CPU over ${IDLE} s idle (with children) | WireGuard ops while idle |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
