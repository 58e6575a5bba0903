#!/usr/bin/env bash
# The whole test suite: unit, property, golden, integration and network-namespace tests.
# Needs root for the namespace tests; installs its own packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace --locked
