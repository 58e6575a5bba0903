#!/usr/bin/env bash
# Adds a VM to a static kilo-rs mesh: run it on the new VM (as root). It creates the VM's WireGuard
# key if it has none (`kg pubkey`: /var/lib/kilo/key, 0600 in a 0700 directory; an existing key is
# kept) and prints the [[node]] block to paste into the shared mesh file. With --mesh it also checks
# the mesh with the block added (`kgctl validate`) without changing that file.
#
#   kilo-add-node.sh --name vm-4 --endpoint 203.0.113.14:51820 --location fra \
#       --internal-ip 10.0.1.14/24 --subnet 10.2.4.0/24 [--leader] [--keepalive 25] \
#       [--allowed-location-ips 10.0.8.0/24,10.0.9.0/24] [--mesh /etc/kilo/mesh.toml]
#
# Environment: KG, KGCTL (default: kg and kgctl from PATH), KEY_FILE (default /var/lib/kilo/key).
set -euo pipefail

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

KG=${KG:-kg}
KGCTL=${KGCTL:-kgctl}
KEY_FILE=${KEY_FILE:-/var/lib/kilo/key}
name=$(hostname)
endpoint=""
location=""
internal_ip=""
subnet=""
leader=0
keepalive=""
allowed_location_ips=""
mesh=""
while (($#)); do
  case $1 in
    --name) name=$2; shift 2 ;;
    --endpoint) endpoint=$2; shift 2 ;;
    --location) location=$2; shift 2 ;;
    --internal-ip) internal_ip=$2; shift 2 ;;
    --subnet) subnet=$2; shift 2 ;;
    --leader) leader=1; shift ;;
    --keepalive) keepalive=$2; shift 2 ;;
    --allowed-location-ips) allowed_location_ips=$2; shift 2 ;;
    --mesh) mesh=$2; shift 2 ;;
    -h | --help) usage ;;
    *) echo "kilo-add-node: unknown argument $1" >&2; usage ;;
  esac
done
[[ -n $name ]] || { echo "kilo-add-node: --name is required" >&2; exit 2; }
[[ -n $subnet ]] || { echo "kilo-add-node: --subnet is required (the VM's site or container subnet)" >&2; exit 2; }

public_key=$("$KG" pubkey --key-file "$KEY_FILE")

quote_list() { # a,b -> "a", "b"
  local IFS=,
  local out=() item
  for item in $1; do out+=("\"$item\""); done
  (IFS=,; echo "${out[*]}" | sed 's/,/, /g')
}

block=$(
  echo '[[node]]'
  echo "name = \"$name\""
  echo "public-key = \"$public_key\""
  [[ -z $endpoint ]] || echo "endpoint = \"$endpoint\""
  [[ -z $location ]] || echo "location = \"$location\""
  [[ -z $internal_ip ]] || echo "internal-ip = \"$internal_ip\""
  echo "subnet = \"$subnet\""
  [[ -z $allowed_location_ips ]] || echo "allowed-location-ips = [$(quote_list "$allowed_location_ips")]"
  [[ -z $keepalive ]] || echo "persistent-keepalive = $keepalive"
  ((leader == 0)) || echo "leader = true"
)

if [[ -n $mesh ]]; then
  tmp=$(mktemp)
  trap 'rm -f "$tmp"' EXIT
  { cat "$mesh"; echo; echo "$block"; } >"$tmp"
  if ! "$KGCTL" --backend file --file "$tmp" validate >&2; then
    echo "kilo-add-node: $mesh with this node added does not validate (see above)" >&2
    exit 1
  fi
fi

echo "# Paste into the mesh file on every VM (or into its source of truth), then distribute it:"
echo "$block"
