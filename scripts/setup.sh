#!/usr/bin/env bash
# Installs what building and testing kilo-rs needs on a fresh Debian/Ubuntu machine (run as root).
# Idempotent: packages already present are not reinstalled.
set -euo pipefail
pkgs=(libclang-dev clang wireguard-tools wireguard-go iproute2 iptables nftables iputils-ping graphviz procps curl python3 python3-pip python3-venv)
# The image (scripts/build-image.sh, scripts/test-image.sh) and the VM packaging
# (scripts/test-vm-packaging.sh: systemd-analyze).
pkgs+=(mmdebstrap umoci python3-yaml openssl binutils systemd)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends: wireguard-tools would otherwise pull in a kernel and systemd.
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# The in-process WireGuard device's interoperability tests run boringtun-cli (one of the userspace
# implementations upstream's sidecars use; wireguard-go, the other, is a Debian package above).
command -v boringtun-cli >/dev/null || cargo install boringtun-cli --locked
