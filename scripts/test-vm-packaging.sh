#!/usr/bin/env bash
# Tests the plain-VM packaging (docs/vms.md):
#   1. packaging/kilo.service passes `systemd-analyze verify` with no message at all, installed in a
#      scratch root next to a real kg binary (and a unit with a typo does not: the check can fail),
#      and `systemd-analyze security` rates its exposure at most 3.0 (0 is the most locked down);
#   2. kg accepts the unit's command line (ExecStart with packaging/kilo.default's values);
#   3. scripts/kilo-add-node.sh creates the VM's key (0600 in a 0700 directory), prints a [[node]]
#      block that makes a valid mesh with examples/three-locations.toml, keeps the key on a second
#      run, and refuses a node name that is already used.
#   4. kg, with only the unit's capability bounding set and no-new-privileges, brings up its
#      WireGuard interface and firewall rules in a network namespace.
# Run as root:   bash scripts/test-vm-packaging.sh      (KG, KGCTL: the binaries; default target/debug)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v systemd-analyze >/dev/null || { echo "test-vm-packaging: systemd-analyze not found (bash scripts/setup.sh installs systemd)" >&2; exit 1; }
if [[ -z ${KG:-} || -z ${KGCTL:-} ]]; then
  TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  [[ -x $TARGET/debug/kg && -x $TARGET/debug/kgctl ]] || cargo build --locked -p kg -p kgctl
  KG=${KG:-$TARGET/debug/kg}
  KGCTL=${KGCTL:-$TARGET/debug/kgctl}
fi
KG=$(realpath "$KG")
KGCTL=$(realpath "$KGCTL")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kilo-vm-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PASSED=0
FAILED=0
ok() { echo "ok: $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAILED: $*"; FAILED=$((FAILED + 1)); }

echo "== 1. systemd-analyze verify packaging/kilo.service"
ROOT=$WORK/root
mkdir -p "$ROOT/etc/systemd/system" "$ROOT/usr/local/bin" "$ROOT/usr/lib/systemd" "$ROOT/etc/kilo"
cp -r /usr/lib/systemd/system "$ROOT/usr/lib/systemd/"
cp "$KG" "$ROOT/usr/local/bin/kg"
cp packaging/kilo.service "$ROOT/etc/systemd/system/kilo.service"
: >"$ROOT/etc/kilo/mesh.toml"
verify() { # UNIT -> prints what systemd-analyze said, returns its status
  systemd-analyze verify --root="$ROOT" "$1" 2>&1
}
if out=$(verify kilo.service) && [[ -z $out ]]; then
  ok "packaging/kilo.service verifies with no message"
else
  fail "packaging/kilo.service verifies with no message: $out"
fi
sed 's/^ProtectSystem=strict/ProtectSystm=strict/' packaging/kilo.service >"$ROOT/etc/systemd/system/kilo-typo.service"
if out=$(verify kilo-typo.service) && [[ -n $out ]]; then
  ok "a unit with a misspelt option is reported ($(head -n1 <<<"$out" | sed 's/.*: //'))"
else
  fail "a unit with a misspelt option is reported"
fi

score=$(systemd-analyze security --offline=true --root="$ROOT" kilo.service 2>/dev/null | sed -n 's/.*Overall exposure level for kilo.service: \([0-9.]*\).*/\1/p')
# --threshold counts tenths: 30 is an exposure of 3.0.
if systemd-analyze security --offline=true --root="$ROOT" --threshold=30 kilo.service >/dev/null 2>&1; then
  ok "the unit's exposure (systemd-analyze security) is $score, at most 3.0"
else
  fail "the unit's exposure (systemd-analyze security) is $score, at most 3.0"
fi

echo "== 2. kg accepts the unit's command line"
# ExecStart with ${KILO_LISTEN} and $KG_ARGS from packaging/kilo.default (as systemd expands them).
(
  set -a
  KILO_LISTEN=127.0.0.1:1107
  KG_ARGS=
  # shellcheck disable=SC1091
  . packaging/kilo.default
  set +a
  exec_start=$(sed -n 's/^ExecStart=//p' packaging/kilo.service)
  exec_start=${exec_start//\$\{KILO_LISTEN\}/$KILO_LISTEN}
  exec_start=${exec_start//\$KG_ARGS/$KG_ARGS}
  read -r -a argv <<<"$exec_start"
  [[ ${argv[0]} == /usr/local/bin/kg ]] || { echo "ExecStart runs ${argv[0]}"; exit 1; }
  "$KG" "${argv[@]:1}" --version >/dev/null
) && ok "kg parses ExecStart's flags (with packaging/kilo.default)" || fail "kg parses ExecStart's flags"

echo "== 3. scripts/kilo-add-node.sh"
export KG KGCTL
KEY=$WORK/var/lib/kilo/key
add() { KEY_FILE=$KEY bash scripts/kilo-add-node.sh "$@" 2>"$WORK/add.err"; }
if block=$(add --name vm-9 --endpoint 203.0.113.19:51820 --location fra --internal-ip 10.9.0.9/24 \
  --subnet 10.2.9.0/24 --allowed-location-ips 10.9.8.0/24,10.9.7.0/24 --keepalive 25 \
  --mesh examples/three-locations.toml); then
  ok "a new node validates with examples/three-locations.toml"
else
  fail "a new node validates with examples/three-locations.toml: $(cat "$WORK/add.err")"
fi
[[ $(stat -c %a "$(dirname "$KEY")") == 700 && $(stat -c %a "$KEY") == 600 ]] \
  && ok "the key is created 0600 in a 0700 directory" || fail "the key is created 0600 in a 0700 directory"
pub=$("$KG" pubkey --key-file "$KEY" 2>/dev/null)
expected="# Paste into the mesh file on every VM (or into its source of truth), then distribute it:
[[node]]
name = \"vm-9\"
public-key = \"$pub\"
endpoint = \"203.0.113.19:51820\"
location = \"fra\"
internal-ip = \"10.9.0.9/24\"
subnet = \"10.2.9.0/24\"
allowed-location-ips = [\"10.9.8.0/24\", \"10.9.7.0/24\"]
persistent-keepalive = 25"
[[ $block == "$expected" ]] && ok "the printed block is the whole [[node]] with the key's public key" \
  || { fail "the printed block"; diff <(echo "$expected") <(echo "$block") || true; }
before=$(sha256sum "$KEY")
add --name vm-9 --subnet 10.2.9.0/24 >/dev/null && [[ $(sha256sum "$KEY") == "$before" ]] \
  && ok "a second run keeps the key" || fail "a second run keeps the key"
if add --name gcp-1 --subnet 10.2.99.0/24 --mesh examples/three-locations.toml >/dev/null; then
  fail "a name already in the mesh is refused"
elif grep -q 'already used' "$WORK/add.err"; then
  ok "a name already in the mesh is refused"
else
  fail "a name already in the mesh is refused: $(cat "$WORK/add.err")"
fi

echo "== 4. kg runs with only the unit's capabilities"
# CapabilityBoundingSet and NoNewPrivileges as the unit sets them (setpriv), the unit's flags, in a
# network namespace of this test's own, with userspace WireGuard (/dev/net/tun, as DeviceAllow=).
# (--encapsulate never: the test machines' kernels have no IPIP.) The unit's other sandboxing (file
# system, system call filter) needs systemd to run it.
if [[ $(id -u) == 0 ]]; then
  caps=$(sed -n 's/^CapabilityBoundingSet=//p' packaging/kilo.service | tr 'A-Z' 'a-z' | sed 's/cap_//g; s/ /,+/g')
  NS=kvmpkg$$
  ip netns add "$NS"
  trap 'ip netns del "$NS" 2>/dev/null || true; rm -rf "$WORK"' EXIT
  ip -n "$NS" link set lo up
  ip -n "$NS" link add eth0 type veth peer name eth1
  ip -n "$NS" addr add 192.168.79.1/24 dev eth0
  ip -n "$NS" link set eth0 up
  ip -n "$NS" link set eth1 up
  mkdir -p "$WORK/vm"
  {
    for n in 1 2; do
      echo '[[node]]'
      echo "name = \"vm-$n\""
      echo "public-key = \"$("$KG" pubkey --key-file "$WORK/vm/key$n" 2>/dev/null)\""
      echo "endpoint = \"192.168.79.$n:51820\""
      echo "location = \"site-$n\""
      echo "internal-ip = \"192.168.79.$n/24\""
      echo "subnet = \"10.2.$n.0/24\""
      echo
    done
  } >"$WORK/vm/mesh.toml"
  # The default firewall (auto: native nftables on this fresh namespace, which has no iptables
  # rules), then iptables, as a VM whose host already uses iptables gets.
  for fw in auto iptables; do
    ip netns exec "$NS" setpriv --bounding-set "-all,+$caps" --no-new-privs \
      "$KG" --backend file --file "$WORK/vm/mesh.toml" --key-file "$WORK/vm/key1" --cni=false \
      --listen 127.0.0.1:1107 --hostname vm-1 --wireguard userspace --encapsulate never \
      --firewall "$fw" --wireguard-socket-dir "$WORK/vm/wg" >"$WORK/vm/kg.log" 2>&1 &
    KGPID=$!
    if [[ $fw == auto ]]; then
      what="its nftables rules"
      rules() { ip netns exec "$NS" nft list table ip kilo 2>/dev/null | grep -q 'chain nat-KILO-NAT'; }
    else
      what="its iptables rules"
      rules() { ip netns exec "$NS" iptables-save -t nat 2>/dev/null | grep -q '^-A KILO-NAT'; }
    fi
    up=0
    for _ in $(seq 100); do
      if ip -n "$NS" -4 -o addr show dev kilo0 2>/dev/null | grep -q ' 10\.4\.' && rules; then
        up=1
        break
      fi
      sleep 0.2
    done
    kill -TERM "$KGPID" 2>/dev/null || true
    wait "$KGPID" 2>/dev/null || true
    if ((up)); then
      ok "with only ${caps//,+/ and }, --firewall $fw: kg brings up kilo0 with its address and writes $what"
    else
      fail "with only ${caps//,+/ and }, --firewall $fw: kg brings up kilo0 and writes $what: $(tail -n 5 "$WORK/vm/kg.log")"
    fi
  done
  ip netns del "$NS" 2>/dev/null || true
else
  fail "section 4 needs root (network namespaces)"
fi

echo "== VM packaging test: $PASSED passed, $FAILED failed"
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
