#!/usr/bin/env bash
# Measures the WireGuard data path (not a test): run as root.   bash scripts/bench-datapath.sh
#
# Every case runs between two network namespaces this script creates (and always removes) joined
# by a veth pair (192.168.77.1/24 <-> 192.168.77.2/24); no packet leaves them. iperf3 runs for
# SECS seconds (default 10) from the second namespace to the first, once with 1 TCP stream and once
# with 4 (-P 4). Cases (CASES, default all of them, in this order):
#   veth          the bare veth pair: the baseline, no tunnel;
#   wireguard-go  wireguard-go on both sides (10.77.0.1 <-> 10.77.0.2 over the veth), set up with
#                 `wg` through its UAPI socket;
#   boringtun     boringtun-cli likewise (BORINGTUN=/path/to/boringtun-cli, else found in PATH or
#                 under <target dir>/boringtun/bin, else installed there with `cargo install
#                 boringtun-cli --locked`; skipped with a message if that fails);
#   kilo          two kg agents (release build; KG=/path/to/kg uses another binary, SKIP_BUILD=1
#                 the existing build) on a static two-node mesh file, full granularity, file
#                 backend, `--wireguard userspace` (the in-process gotatun device); iperf3 runs
#                 between the nodes' pod addresses 10.2.2.1 -> 10.2.1.1; its TUN interfaces
#                 have segmentation offloads (TCP super-packets in, coalesced packets out);
#   kilo-plain    the same with `--tun-offloads=false`: one packet per TUN read and write.
# Every tunnel interface has MTU 1420 (kg's default; wireguard-go's and boringtun's are set to it).
# Reported per row: throughput (iperf3's receiver side), the CPU time of the tunnel processes (the
# two daemons or the two kg agents: utime+stime from /proc/PID/stat, every thread, before and after
# the iperf3 run) as cores busy over the run and as CPU seconds per Gbit moved. iperf3's own CPU
# and the kernel's softirq work outside the tunnel processes are not counted (so "-" for veth).
# Needs iperf3, wireguard-go and wg (wireguard-tools): installed with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "bench-datapath: run as root (it creates network namespaces)" >&2; exit 1; }
SECS=${SECS:-10}
CASES=${CASES:-veth wireguard-go boringtun kilo kilo-plain}
MTU=1420
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log() { echo "== $*" >&2; }

missing=()
for tool in iperf3 wireguard-go wg python3 ss; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  log "installing iperf3 wireguard-go wireguard-tools (missing: ${missing[*]})"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    iperf3 wireguard-go wireguard-tools python3 iproute2 >&2
fi

TARGET=
target_dir() {
  [[ -n $TARGET ]] || TARGET=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  echo "$TARGET"
}
has_case() { [[ " $CASES " == *" $1 "* ]]; }
if { has_case kilo || has_case kilo-plain; } && [[ -z ${KG:-} ]]; then
  if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building kg (release)"
    cargo build --locked --release -p kg >&2
  fi
  KG=$(target_dir)/release/kg
fi
BT_SKIP=
if has_case boringtun && [[ -z ${BORINGTUN:-} ]]; then
  if command -v boringtun-cli >/dev/null; then
    BORINGTUN=$(command -v boringtun-cli)
  else
    BORINGTUN=$(target_dir)/boringtun/bin/boringtun-cli
    if [[ ! -x $BORINGTUN ]]; then
      log "installing boringtun-cli into $(target_dir)/boringtun (cargo install, a few minutes)"
      if ! CARGO_TARGET_DIR=$(target_dir)/boringtun/build \
        cargo install boringtun-cli --locked --root "$(target_dir)/boringtun" >&2; then
        BT_SKIP="cargo install boringtun-cli failed"
      fi
    fi
  fi
fi

P=dp$$                 # namespace and interface prefix
A=${P}a B=${P}b          # the two namespaces: A serves, B sends
WORK=$(mktemp -d /tmp/kilo-bench-datapath.XXXXXX)
PIDS=()                  # every process started (stopped between cases and on exit)
TUNNEL_PIDS=()           # the ones whose CPU is counted
SOCKETS=()               # UAPI sockets the daemons leave in /var/run/wireguard
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=() TUNNEL_PIDS=()
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  for s in "${SOCKETS[@]}"; do rm -f "$s"; done
  SOCKETS=()
}
cleanup() {
  local rc=$?
  set +e
  stop_all
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT INT TERM

# Two namespaces and the veth between them.
underlay() {
  ip netns add "$A"
  ip netns add "$B"
  ip -n "$A" link set lo up
  ip -n "$B" link set lo up
  ip link add veth0 netns "$A" type veth peer name veth0 netns "$B"
  ip -n "$A" addr add 192.168.77.1/24 dev veth0
  ip -n "$B" addr add 192.168.77.2/24 dev veth0
  ip -n "$A" link set veth0 up
  ip -n "$B" link set veth0 up
}

# A WireGuard daemon of its own per namespace, configured with `wg` through its UAPI socket
# (/var/run/wireguard/IFACE.sock, one directory for every namespace: hence an interface name per
# namespace). $1: wireguard-go or boringtun.
daemons() {
  local kind=$1 side ns iface addr peer_addr peer_side
  for side in a b; do
    (umask 077 && wg genkey >"$WORK/$side.key")
    wg pubkey <"$WORK/$side.key" >"$WORK/$side.pub"
  done
  for side in a b; do
    ns=$P$side iface=${P}w$side
    SOCKETS+=("/var/run/wireguard/$iface.sock")
    if [[ $kind == wireguard-go ]]; then
      ip netns exec "$ns" wireguard-go -f "$iface" >"$WORK/$iface.log" 2>&1 &
    else
      ip netns exec "$ns" "$BORINGTUN" -f --disable-drop-privileges -l "$WORK/$iface.log" "$iface" \
        >"$WORK/$iface.out" 2>&1 &
    fi
    PIDS+=($!) TUNNEL_PIDS+=($!)
    for _ in $(seq 100); do [[ -S /var/run/wireguard/$iface.sock ]] && break; sleep 0.05; done
    [[ -S /var/run/wireguard/$iface.sock ]] ||
      { log "$kind did not open its socket"; cat "$WORK/$iface".* >&2; exit 1; }
  done
  for side in a b; do
    ns=$P$side iface=${P}w$side
    if [[ $side == a ]]; then addr=1 peer_addr=2 peer_side=b; else addr=2 peer_addr=1 peer_side=a; fi
    ip netns exec "$ns" wg set "$iface" private-key "$WORK/$side.key" listen-port 51820 \
      peer "$(cat "$WORK/$peer_side.pub")" allowed-ips "10.77.0.$peer_addr/32" \
      endpoint "192.168.77.$peer_addr:51820"
    ip -n "$ns" addr add "10.77.0.$addr/24" dev "$iface"
    ip -n "$ns" link set "$iface" mtu "$MTU" up
  done
}

# Two kg agents on a static two-node mesh (full granularity, userspace WireGuard in-process);
# arguments: more flags for both.
agents() {
  local side n
  for side in a b; do "$KG" --key-file "$WORK/$side.key" pubkey >"$WORK/$side.pub" 2>/dev/null; done
  {
    printf '[mesh]\ngranularity = "full"\n'
    n=1
    for side in a b; do
      printf '\n[[node]]\nname = "%s"\npublic-key = "%s"\nendpoint = "192.168.77.%s:51820"\nsubnet = "10.2.%s.0/24"\n' \
        "node-$side" "$(cat "$WORK/$side.pub")" "$n" "$n"
      n=$((n + 1))
    done
  } >"$WORK/mesh.toml"
  n=1
  for side in a b; do
    # The node's pod network: a bridge holding 10.2.N.1, the address iperf3 uses.
    ip -n "$P$side" link add pods type bridge
    ip -n "$P$side" addr add "10.2.$n.1/24" dev pods
    ip -n "$P$side" link set pods up
    ip netns exec "$P$side" "$KG" --backend file --file "$WORK/mesh.toml" --hostname "node-$side" \
      --wireguard userspace --wireguard-socket-dir "$WORK/$side.wg" --encapsulate never --cni=false \
      --key-file "$WORK/$side.key" --listen 127.0.0.1:1107 --log-level warn --log-format human "$@" \
      >"$WORK/kg-$side.log" 2>&1 &
    PIDS+=($!) TUNNEL_PIDS+=($!)
    n=$((n + 1))
  done
  for side in a b; do
    for _ in $(seq 150); do
      ip netns exec "$P$side" curl -sf -o /dev/null http://127.0.0.1:1107/health && break
      sleep 0.2
    done
    ip netns exec "$P$side" curl -sf -o /dev/null http://127.0.0.1:1107/health ||
      { log "kg on node-$side is not healthy"; cat "$WORK/kg-$side.log" >&2; exit 1; }
  done
}

# Pings until the tunnel carries traffic (the first handshake happens here, not in the measurement).
reachable() { # $1: destination in A, $2: source in B
  for _ in $(seq 30); do
    ip netns exec "$B" ping -c1 -W1 -I "$2" "$1" >/dev/null 2>&1 && return 0
  done
  log "$1 is not reachable from $2"
  for f in "$WORK"/*.log; do echo "--- $f" >&2; tail -n 20 "$f" >&2; done
  exit 1
}

HZ=$(getconf CLK_TCK)
cpu_ticks() { # utime+stime of TUNNEL_PIDS (fields 14 and 15, counted after the `(comm)` field)
  local total=0 pid
  for pid in "${TUNNEL_PIDS[@]}"; do
    total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')))
  done
  echo "$total"
}

ROWS=()
RESULTS=()   # "case streams gbps" for the ratios
# $1: case, $2: server address (in A), $3: client address (in B), $4: the tunnel interface or "-"
measure() {
  local name=$1 server=$2 client=$3 iface=$4 mtu=-
  if [[ $iface != - ]]; then mtu=$(ip -n "$A" -o link show "$iface" | sed -n 's/.* mtu \([0-9]*\).*/\1/p'); fi
  ip netns exec "$A" iperf3 -s -B "$server" >"$WORK/iperf3-server.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    [[ -n $(ip netns exec "$A" ss -Hltn "sport = :5201") ]] && break
    sleep 0.05
  done
  local streams c1 c2 t1 t2 out
  for streams in 1 4; do
    c1=$(cpu_ticks) t1=$(date +%s%N)
    ip netns exec "$B" iperf3 -c "$server" -B "$client" -t "$SECS" -P "$streams" -J >"$WORK/iperf3.json"
    c2=$(cpu_ticks) t2=$(date +%s%N)
    # gbps, retransmits, CPU cores busy, CPU seconds per Gbit
    out=$(python3 - "$WORK/iperf3.json" "$((c2 - c1))" "$HZ" "$((t2 - t1))" "${#TUNNEL_PIDS[@]}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ticks, hz, ns, procs = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
received = r["end"]["sum_received"]
gbit = received["bytes"] * 8 / 1e9
gbps = received["bits_per_second"] / 1e9
retr = r["end"]["sum_sent"].get("retransmits", "-")
if procs:
    cpu = ticks / hz
    print(f"{gbps:.2f} {retr} {cpu / (ns / 1e9):.2f} {cpu / gbit:.3f}")
else:
    print(f"{gbps:.2f} {retr} - -")
PY
    )
    read -r gbps retr cores per_gbit <<<"$out"
    ROWS+=("| $name | $streams | $mtu | $gbps | $retr | $cores | $per_gbit |")
    RESULTS+=("$name $streams $gbps")
    log "${ROWS[-1]}"
  done
}

for c in $CASES; do
  case $c in
    veth)
      log "case veth"
      underlay
      measure veth 192.168.77.1 192.168.77.2 -
      ;;
    wireguard-go)
      log "case wireguard-go"
      underlay
      daemons wireguard-go
      reachable 10.77.0.1 10.77.0.2
      measure wireguard-go 10.77.0.1 10.77.0.2 "${P}wa"
      ;;
    boringtun)
      if [[ -n $BT_SKIP ]]; then
        log "case boringtun skipped: $BT_SKIP"
        ROWS+=("| boringtun-cli | skipped: $BT_SKIP | | | | | |")
        continue
      fi
      log "case boringtun"
      underlay
      daemons boringtun
      reachable 10.77.0.1 10.77.0.2
      measure boringtun-cli 10.77.0.1 10.77.0.2 "${P}wa"
      ;;
    kilo)
      log "case kilo"
      underlay
      agents
      reachable 10.2.1.1 10.2.2.1
      measure kilo-rs 10.2.1.1 10.2.2.1 kilo0
      ;;
    kilo-plain)
      log "case kilo-plain"
      underlay
      agents --tun-offloads=false
      reachable 10.2.1.1 10.2.2.1
      measure "kilo-rs, no TUN offloads" 10.2.1.1 10.2.2.1 kilo0
      ;;
    *) log "unknown case $c (cases: veth wireguard-go boringtun kilo kilo-plain)"; exit 1 ;;
  esac
  stop_all
done

versions="iperf3 $(iperf3 --version | sed -n '1s/^iperf \([^ ]*\).*/\1/p')"
if has_case wireguard-go; then versions+=", $(wireguard-go --version | sed -n '1s/^\(wireguard-go [^ ]*\).*/\1/p')"; fi
if has_case boringtun && [[ -z $BT_SKIP ]]; then versions+=", $("$BORINGTUN" --version)"; fi
if has_case kilo || has_case kilo-plain; then versions+=", kg $KG ($("$KG" version 2>/dev/null | head -n1), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"; fi
printf '\n%s s per run, %s; kernel %s, %s CPUs (%s); load average %s at the start, %s at the end\n%s\n\n' \
  "$SECS" "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(uname -r)" "$(nproc)" \
  "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)" "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)" \
  "$versions"
echo "| case | streams | tunnel MTU | Gbit/s | TCP retransmits | tunnel CPU (cores busy) | tunnel CPU s per Gbit |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
# Throughput ratios, kilo-rs against each other tunnel, per stream count.
printf '%s\n' "${RESULTS[@]}" | awk '
  { g[$1 " " $2] = $3 }
  END {
    for (s = 1; s <= 4; s += 3)
      for (o = 1; o <= 2; o++) {
        other = o == 1 ? "wireguard-go" : "boringtun-cli"
        if (g["kilo-rs " s] != "" && g[other " " s] > 0)
          printf "kilo-rs / %s, %d stream(s): %.2f\n", other, s, g["kilo-rs " s] / g[other " " s]
      }
  }' | sed '1s/^/\n/'
