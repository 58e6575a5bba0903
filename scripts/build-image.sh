#!/usr/bin/env bash
# Builds the kilo-rs container image as an OCI image archive, from Debian packages and the release
# binaries, with no registry and no container engine: mmdebstrap makes the root file system (Debian
# bookworm, the "essential" package set plus what the agent runs), GNU tar makes one reproducible
# layer of it, umoci wraps that layer into an OCI image. Run as root (mmdebstrap's root mode):
#
#   IMAGE=registry.example.com/kilo:0.1.0 bash scripts/build-image.sh
#
# Environment (all optional):
#   IMAGE        the image's name, written into the archive (default ghcr.io/kilo-rs/kilo:latest,
#                the placeholder that manifests/ and charts/kilo use)
#   OUT          the archive to write (default target/image/kilo-$ARCH.oci.tar)
#   ARCH         Debian architecture (default: this machine's). Another architecture needs
#                qemu-user-static with binfmt_misc registered and BIN_DIR with binaries built for it.
#   BIN_DIR      a directory holding kg and kgctl built already; default: build them with
#                `cargo build --release --locked -p kg -p kgctl` and take them from target/release
#   PROFILE      release (default) or debug: which cargo build to take without BIN_DIR (CI takes
#                the debug build its tests made: the same code, without a second full build)
#   SUITE        Debian suite (default bookworm)
#   MIRROR       Debian mirror (default http://deb.debian.org/debian); SECURITY_MIRROR likewise
#                (default http://deb.debian.org/debian-security; empty: no security updates)
#   SNAPSHOT     a snapshot.debian.org timestamp such as 20250101T000000Z: take every package from
#                that frozen archive state instead of the mirrors (this is what makes two builds on
#                different days identical)
#   SOURCE_DATE_EPOCH  every timestamp in the image (default: the commit time of HEAD)
#   REVISION     the org.opencontainers.image.revision label (default: the commit of HEAD)
#
# What the image holds, at the paths upstream Kilo's manifests use:
#   /opt/bin/kg, /opt/bin/kgctl   the entrypoint is /opt/bin/kg; PATH starts with /opt/bin
#   /opt/cni/bin/{bridge,host-local,loopback,portmap}   copied to the host by the install-cni
#                                 init container (Debian's containernetworking-plugins, hard links
#                                 to the files in /usr/lib/cni)
#   iptables (legacy and nft variants; kg detects the one the host uses), nft, wg, ip, dot
#   (Graphviz, for /graph and `kgctl graph -o svg`), ca-certificates, /bin/sh and coreutils (the
#   init containers' scripts)
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $(id -u) == 0 ]] || { echo "build-image: run as root (mmdebstrap root mode)" >&2; exit 1; }
for tool in mmdebstrap umoci tar python3; do
  command -v "$tool" >/dev/null || { echo "build-image: $tool not found (bash scripts/setup.sh installs it)" >&2; exit 1; }
done

IMAGE=${IMAGE:-ghcr.io/kilo-rs/kilo:latest}
HOST_ARCH=$(dpkg --print-architecture)
ARCH=${ARCH:-$HOST_ARCH}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR-http://deb.debian.org/debian-security}
SNAPSHOT=${SNAPSHOT:-}
OUT=${OUT:-target/image/kilo-$ARCH.oci.tar}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
REVISION=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
# The CNI plugins upstream's image ships in /opt/cni/bin (install-cni copies all of that directory).
CNI_PLUGINS=(bridge host-local loopback portmap)
PACKAGES=(usr-is-merged ca-certificates iproute2 iptables nftables wireguard-tools graphviz
  containernetworking-plugins)

if [[ $ARCH != "$HOST_ARCH" ]]; then
  [[ -n ${BIN_DIR:-} ]] || { echo "build-image: ARCH=$ARCH needs BIN_DIR with kg and kgctl built for $ARCH" >&2; exit 1; }
  echo "build-image: foreign architecture $ARCH: mmdebstrap runs its maintainer scripts under qemu-user (binfmt_misc)"
fi

START=$(date +%s)
PROFILE=${PROFILE:-release}
if [[ -z ${BIN_DIR:-} ]]; then
  case $PROFILE in
    release) profile_flag=(--release) ;;
    debug) profile_flag=() ;;
    *) echo "build-image: PROFILE is release or debug" >&2; exit 1 ;;
  esac
  echo "== cargo build ${profile_flag[*]} --locked -p kg -p kgctl"
  cargo build "${profile_flag[@]}" --locked -p kg -p kgctl
  TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  BIN_DIR=$TARGET/$PROFILE
fi
for bin in kg kgctl; do
  [[ -x $BIN_DIR/$bin ]] || { echo "build-image: $BIN_DIR/$bin not found" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kilo-image.XXXXXX")
cleanup() {
  # Never follow a mount out of the work directory (mmdebstrap unmounts its own on exit).
  if findmnt -rn -o TARGET | grep -q "^$WORK"; then
    echo "build-image: something is still mounted under $WORK; not removing it" >&2
    return
  fi
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

# ---- the root file system ---------------------------------------------------------------------
sources=()
aptopts=()
if [[ -n $SNAPSHOT ]]; then
  sources+=("deb http://snapshot.debian.org/archive/debian/$SNAPSHOT $SUITE main"
    "deb http://snapshot.debian.org/archive/debian-security/$SNAPSHOT $SUITE-security main")
  aptopts+=(--aptopt='Acquire::Check-Valid-Until "false"')
else
  sources+=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main")
  [[ -z $SECURITY_MIRROR ]] || sources+=("deb $SECURITY_MIRROR $SUITE-security main")
fi
# Of Debian's CNI plugins only those upstream's image ships (the others would only overwrite newer
# ones the host may have).
cni_include=()
for plugin in "${CNI_PLUGINS[@]}"; do cni_include+=(--dpkgopt="path-include=/usr/lib/cni/$plugin"); done
echo "== mmdebstrap $SUITE ($ARCH): ${PACKAGES[*]}"
# Recommends are not installed (mmdebstrap's default): wireguard-tools would otherwise pull in
# systemd. Documentation, man pages and translations are left out; copyright files stay.
mmdebstrap --mode=root --format=directory --variant=essential --architectures="$ARCH" \
  --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  "${aptopts[@]}" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/lib/cni/*' \
  "${cni_include[@]}" \
  "$SUITE" "$WORK/rootfs" "${sources[@]}" >"$WORK/mmdebstrap.log" 2>&1 \
  || { tail -n 40 "$WORK/mmdebstrap.log" >&2; exit 1; }
R=$WORK/rootfs

# The container runtime provides /dev, /etc/resolv.conf, /etc/hostname and /etc/hosts; the apt
# lists and caches are not needed at run time (apt is not in the image).
find "$R/dev" -mindepth 1 -delete
: >"$R/etc/resolv.conf"
: >"$R/etc/hostname"
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/* "$R"/var/cache/debconf/*-old \
  "$R"/var/lib/dpkg/*-old "$R"/var/log/*.log
rm -f "$R/etc/apt/apt.conf.d/99mmdebstrap"

install -d -m 0755 "$R/opt/bin" "$R/opt/cni/bin" "$R/var/lib/kilo"
chmod 0700 "$R/var/lib/kilo"
install -m 0755 "$BIN_DIR/kg" "$BIN_DIR/kgctl" "$R/opt/bin/"
# Debug information (a debug build's bulk; a release build has none) is not needed at run time;
# symbols stay, so backtraces keep their function names.
if command -v strip >/dev/null; then
  strip --strip-debug "$R/opt/bin/kg" "$R/opt/bin/kgctl"
fi
for plugin in "${CNI_PLUGINS[@]}"; do
  ln "$R/usr/lib/cni/$plugin" "$R/opt/cni/bin/$plugin"
done

# ---- one reproducible layer ---------------------------------------------------------------------
echo "== layer"
mapfile -t top < <(cd "$R" && LC_ALL=C ls -A | LC_ALL=C sort)
tar --create --file "$WORK/layer.tar" --directory "$R" \
  --sort=name --format=pax --numeric-owner \
  --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -- "${top[@]}"

# ---- the OCI image ----------------------------------------------------------------------------
echo "== OCI image"
OCI=$WORK/oci
umoci init --layout "$OCI"
umoci new --image "$OCI:kilo"
umoci raw add-layer --image "$OCI:kilo" --history.created "$CREATED" \
  --history.created_by "scripts/build-image.sh: Debian $SUITE ${PACKAGES[*]}; /opt/bin/kg, /opt/bin/kgctl" \
  "$WORK/layer.tar"
umoci config --image "$OCI:kilo" --no-history \
  --created "$CREATED" --architecture "$ARCH" --os linux --author "kilo-rs" \
  --config.entrypoint /opt/bin/kg \
  --config.env PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.exposedports 1107/tcp \
  --config.label "org.opencontainers.image.title=kilo-rs" \
  --config.label "org.opencontainers.image.version=$VERSION" \
  --config.label "org.opencontainers.image.revision=$REVISION" \
  --config.label "org.opencontainers.image.created=$CREATED" \
  --config.label "org.opencontainers.image.base.name=debian:$SUITE"
umoci gc --layout "$OCI"
# Name the image in the index the way the loaders read it: podman and skopeo read
# org.opencontainers.image.ref.name, containerd (ctr, k3s) io.containerd.image.name.
python3 - "$OCI/index.json" "$IMAGE" <<'EOF'
import json, sys
path, image = sys.argv[1], sys.argv[2]
index = json.load(open(path))
(manifest,) = index["manifests"]
manifest["annotations"] = {
    "io.containerd.image.name": image,
    "org.opencontainers.image.ref.name": image,
}
json.dump(index, open(path, "w"), separators=(",", ":"), sort_keys=True)
EOF

mkdir -p "$(dirname "$OUT")"
tar --create --file "$OUT" --directory "$OCI" \
  --sort=name --format=pax --numeric-owner --owner=0 --group=0 \
  --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  oci-layout index.json blobs

MANIFEST_DIGEST=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$OCI/index.json")
ELAPSED=$(($(date +%s) - START))
cat <<EOF
== done in ${ELAPSED}s
image:     $IMAGE ($ARCH)
archive:   $OUT ($(du -h "$OUT" | cut -f1); unpacked root file system $(du -sh "$R" | cut -f1))
manifest:  $MANIFEST_DIGEST
sha256sum: $(sha256sum "$OUT" | cut -d' ' -f1)

Load or push it (any of):
  podman load -i $OUT && podman push $IMAGE
  skopeo copy oci-archive:$OUT docker://$IMAGE
  ctr -n k8s.io images import $OUT            # containerd on a node
  cp $OUT /var/lib/rancher/k3s/agent/images/  # k3s imports it at start
Then name $IMAGE in the manifests (or the chart's image.repository and image.tag).
EOF
