#!/usr/bin/env bash
# Tests the kilo-rs image without a container engine: unpacks the OCI archive with `umoci unpack` and
# runs kg and kgctl from its root file system (chroot), in network namespaces this script creates:
#   1. the image's layout: /opt/bin/kg is the entrypoint, the CNI plugins are where upstream's
#      install-cni init container copies them from, and the tools kg and the init containers call;
#   2. `kg --version`, `kgctl --version`, `kgctl graph -o svg` on examples/three-locations.toml;
#   3. two agents (file backend, userspace WireGuard), one per namespace, joined by a veth: each
#      brings up kilo0 with its WireGuard address, they ping each other through the tunnel, and
#      /health and /graph (rendered by the image's Graphviz) answer.
# Run as root:   bash scripts/test-image.sh [ARCHIVE]
# Without ARCHIVE it builds one with scripts/build-image.sh (its settings, such as PROFILE and BIN_DIR,
# pass through: CI sets PROFILE=debug to use the binaries its test run built). Everything it makes is
# removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "test-image: run as root (namespaces, chroot)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kilo-image-test.XXXXXX")
P=kimg$$-
NAMESPACES=()
PIDS=()
PASSED=0
FAILED=0
cleanup() {
  local rc=$?
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  for ns in "${NAMESPACES[@]}" $(ip netns list | awk '{print $1}' | grep "^$P"); do ip netns del "$ns" 2>/dev/null; done
  # The chroots' mounts live in private mount namespaces that ended with their processes; refuse to
  # remove anything if one is still visible here.
  if findmnt -rn -o TARGET | grep -q "^$WORK"; then
    echo "test-image: a mount is left under $WORK; not removing it" >&2
  else
    rm -rf --one-file-system "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT INT TERM

ok() { echo "ok: $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAILED: $*"; FAILED=$((FAILED + 1)); }
check() { # DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}

ARCHIVE=${1:-}
if [[ -z $ARCHIVE ]]; then
  ARCHIVE=$WORK/kilo.oci.tar
  OUT=$ARCHIVE IMAGE=${IMAGE:-kilo-rs/kilo:test} bash scripts/build-image.sh
fi
[[ -f $ARCHIVE ]] || { echo "test-image: $ARCHIVE not found" >&2; exit 1; }

echo "== unpacking $ARCHIVE"
mkdir "$WORK/oci"
tar -xf "$ARCHIVE" -C "$WORK/oci"
# umoci finds an image by a plain tag: give our copy of the index one.
python3 - "$WORK/oci/index.json" <<'EOF'
import json, sys
index = json.load(open(sys.argv[1]))
index["manifests"][0].setdefault("annotations", {})["org.opencontainers.image.ref.name"] = "test"
json.dump(index, open(sys.argv[1], "w"))
EOF
umoci unpack --image "$WORK/oci:test" "$WORK/bundle" >/dev/null
R=$WORK/bundle/rootfs
CONFIG=$WORK/bundle/config.json

# in_root NS COMMAND...: runs COMMAND inside the image's root file system, in network namespace NS
# (or this one for "-"), with its own /proc, /sys, /dev, /run and /tmp in a private mount namespace.
in_root() {
  local ns=$1
  shift
  local -a netns=()
  [[ $ns == - ]] || netns=(ip netns exec "$ns")
  "${netns[@]}" unshare --mount --propagation private sh -ec '
    r=$1; shift
    mount -t proc proc "$r/proc"
    mount -t sysfs sysfs "$r/sys"
    mount --rbind /dev "$r/dev"
    mount -t tmpfs tmpfs "$r/run"
    mount -t tmpfs tmpfs "$r/tmp"
    exec chroot "$r" /usr/bin/env -i PATH=/opt/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"' sh "$R" "$@"
}

echo "== 1. the image's layout"
check "the entrypoint is /opt/bin/kg" \
  python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); sys.exit(c["process"]["args"][0] != "/opt/bin/kg")' "$CONFIG"
for plugin in bridge host-local loopback portmap; do
  check "CNI plugin /opt/cni/bin/$plugin is executable" test -x "$R/opt/cni/bin/$plugin"
done
for tool in /bin/sh /usr/sbin/iptables /usr/sbin/iptables-legacy /usr/sbin/iptables-nft \
  /usr/sbin/ip6tables /usr/sbin/nft /usr/bin/wg /usr/bin/dot /usr/sbin/ip /usr/bin/sed; do
  check "$tool is in the image" test -x "$R$tool"
done
check "ca-certificates is installed" test -s "$R/etc/ssl/certs/ca-certificates.crt"
check "/var/run is /run (userspace manifests mount the sidecar's sockets at /var/run/wireguard)" \
  test "$(readlink "$R/var/run")" = /run
check "the CNI plugin runs from the image (bridge reports its version)" \
  sh -c "CNI_COMMAND=VERSION chroot '$R' /opt/cni/bin/bridge </dev/null | grep -q cniVersion"

echo "== 2. kg and kgctl from the image"
KG_VERSION=$(in_root - kg --version)
KGCTL_VERSION=$(in_root - kgctl --version)
check "kg --version prints a version ($KG_VERSION)" grep -Eq '^kg [0-9]+\.[0-9]+' <<<"$KG_VERSION"
check "kgctl --version prints a version ($KGCTL_VERSION)" grep -Eq '^kgctl [0-9]+\.[0-9]+' <<<"$KGCTL_VERSION"
mkdir -p "$R/etc/kilo"
cp examples/three-locations.toml "$R/etc/kilo/three-locations.toml"
in_root - kgctl --backend file --file /etc/kilo/three-locations.toml graph -o svg >"$WORK/graph.svg"
check "kgctl graph -o svg renders an SVG with the image's Graphviz" \
  python3 -c '
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
sys.exit(not (root.tag.endswith("svg") and "gcp-1" in text and "home-gw" in text))' "$WORK/graph.svg"

echo "== 3. two agents from the image, one per network namespace"
for n in a b; do
  ip netns add "$P$n"
  NAMESPACES+=("$P$n")
  ip -n "$P$n" link set lo up
done
ip -n "${P}a" link add eth0 type veth peer name eth0 netns "${P}b"
ip -n "${P}a" addr add 192.168.77.1/24 dev eth0
ip -n "${P}b" addr add 192.168.77.2/24 dev eth0
ip -n "${P}a" link set eth0 up
ip -n "${P}b" link set eth0 up
for n in a b; do
  (umask 077; in_root - kgctl genkey >"$R/etc/kilo/$n.key")
done
pub() { in_root - kgctl pubkey <"$R/etc/kilo/$1.key"; }
cat >"$R/etc/kilo/mesh.toml" <<EOF
[mesh]
granularity = "location"

[[node]]
name = "a"
public-key = "$(pub a)"
endpoint = "192.168.77.1:51820"
location = "site-a"
internal-ip = "192.168.77.1/24"
subnet = "10.2.1.0/24"

[[node]]
name = "b"
public-key = "$(pub b)"
endpoint = "192.168.77.2:51820"
location = "site-b"
internal-ip = "192.168.77.2/24"
subnet = "10.2.2.0/24"
EOF
# a uses the image's iptables; b the default firewall (auto: native nftables on a namespace
# without iptables rules, no binary involved).
for n in a b; do
  fw=auto
  [[ $n == a ]] && fw=iptables
  in_root "$P$n" kg --backend file --file /etc/kilo/mesh.toml --hostname "$n" \
    --key-file "/etc/kilo/$n.key" --wireguard userspace --encapsulate never --cni=false \
    --firewall "$fw" --listen 127.0.0.1:1107 --resync-period 2s >"$WORK/$n.log" 2>&1 &
  PIDS+=($!)
done
wg_ip() { ip -n "$P$1" -4 -o addr show dev kilo0 2>/dev/null | awk '{print $4}' | cut -d/ -f1; }
for n in a b; do
  for _ in $(seq 150); do [[ -n $(wg_ip "$n") ]] && break; sleep 0.2; done
  if [[ -n $(wg_ip "$n") ]]; then
    ok "kg on $n brought up kilo0 with its WireGuard address $(wg_ip "$n")"
  else
    fail "kg on $n brought up kilo0 with its WireGuard address"
    tail -n 30 "$WORK/$n.log"
  fi
done
B_IP=$(wg_ip b)
if [[ -n $B_IP ]]; then
  check "a pings b's WireGuard address $B_IP through the tunnel" \
    sh -c "for i in \$(seq 20); do ip netns exec '${P}a' ping -c1 -W1 '$B_IP' >/dev/null 2>&1 && exit 0; done; exit 1"
  check "kg on a answers /metrics with kilo_ metrics" \
    sh -c "ip netns exec '${P}a' curl -sf http://127.0.0.1:1107/metrics | grep -q '^kilo_'"
else
  fail "a pings b's WireGuard address through the tunnel (b has no WireGuard address)"
fi
check "kg wrote its firewall rules with the image's iptables (KILO-NAT in the nat table)" \
  sh -c "ip netns exec '${P}a' chroot '$R' iptables-save -t nat | grep -q '^-A KILO-NAT'"
check "kg with the default firewall wrote its rules in native nftables (table ip kilo)" \
  sh -c "for i in \$(seq 50); do ip netns exec '${P}b' nft list table ip kilo 2>/dev/null | grep -q 'chain nat-KILO-NAT' && exit 0; sleep 0.2; done; exit 1"
for n in a b; do
  check "kg on $n answers /health" \
    sh -c "for i in \$(seq 50); do ip netns exec '$P$n' curl -sf -o /dev/null http://127.0.0.1:1107/health && exit 0; sleep 0.2; done; exit 1"
done
check "kg's /graph renders SVG with the image's dot" \
  sh -c "ip netns exec '${P}a' curl -sf 'http://127.0.0.1:1107/graph?format=svg' | grep -q '<svg'"

echo "== 4. the manifests' containers, run from the image"
# Upstream's install-cni is a one-line `cp /opt/cni/bin/* /host/opt/cni/bin/`: the same source path.
mkdir -p "$WORK/upstream-cni"
if unshare --mount --propagation private sh -ec 'mkdir -p "$1/host/opt/cni/bin"; mount --bind "$2" "$1/host/opt/cni/bin"; chroot "$1" /bin/sh -ec "cp /opt/cni/bin/* /host/opt/cni/bin/"' sh "$R" "$WORK/upstream-cni" \
  && [[ $(ls "$WORK/upstream-cni" | tr '\n' ' ') == "bridge host-local loopback portmap " ]]; then
  ok "upstream's install-cni command copies bridge, host-local, loopback and portmap"
else
  fail "upstream's install-cni command copies bridge, host-local, loopback and portmap"
fi
rmdir "$R/host/opt/cni/bin" "$R/host/opt/cni" "$R/host/opt" "$R/host" 2>/dev/null || true
# Every manifests/kilo-*.yaml: init containers' scripts, then the agent with the manifest's args
# against a fake API server (scripts/test_image_manifests.py).
mkdir "$WORK/manifests"
# The stand-in for upstream's userspace WireGuard sidecar: the repository's userspace daemon (the
# test suite builds it; built here otherwise).
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
[[ -x $TARGET/debug/examples/wg_userspace ]] || cargo build --locked -p kilo-net-linux --example wg_userspace
WG_USERSPACE=$TARGET/debug/examples/wg_userspace \
  python3 scripts/test_image_manifests.py "$R" "$WORK/manifests" "${P}m" | tee "$WORK/manifests.out" || true
PASSED=$((PASSED + $(grep -c '^ok: ' "$WORK/manifests.out" || true)))
FAILED=$((FAILED + $(grep -c '^FAILED: ' "$WORK/manifests.out" || true)))
grep -q '^ok: ' "$WORK/manifests.out" || fail "scripts/test_image_manifests.py ran"

echo "== image test: $PASSED passed, $FAILED failed"
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
