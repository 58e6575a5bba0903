#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time, one after the other, one process each
# (the machine is shared), and prints a table of executions per target. A crash stops the run with
# exit 1 and leaves the input in fuzz/artifacts/TARGET/; turn it into a regression test in
# kilo-core/tests/regressions.rs (or the owning crate's tests).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     SECONDS per target, default 20; default all targets
#
# Environment: FUZZ_SANITIZER (default none: the code is safe Rust, and without ASan the targets
# run several times faster; use address for unsafe dependencies), FUZZ_RSS_MB (default 2048).
# Needs nightly and cargo-fuzz; installs either if absent (rustup, `cargo install cargo-fuzz --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-20}
shift || true
sanitizer=${FUZZ_SANITIZER:-none}
rss=${FUZZ_RSS_MB:-2048}

if ! cargo +nightly --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# The longest input each target is given: parsers of one value need little, files need more.
max_len() {
    case "$1" in
        cidr_parse | endpoint_parse | key_parse) echo 512 ;;
        peer_spec | annotations_node) echo 8192 ;;
        tun_offload) echo 65600 ;; # a mode byte, a virtio-net header and a 64 KiB super-packet
        *) echo 65536 ;;
    esac
}

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

cargo +nightly fuzz build --sanitizer "$sanitizer"

summary=()
status=0
for target in "${targets[@]}"; do
    corpus=fuzz/corpus/$target
    mkdir -p "$corpus"
    dirs=("$corpus")
    [ -d "fuzz/seeds/$target" ] && dirs+=("fuzz/seeds/$target")
    log=$(mktemp)
    echo "== $target: ${secs}s"
    if cargo +nightly fuzz run --sanitizer "$sanitizer" "$target" "${dirs[@]}" -- \
        -max_total_time="$secs" -max_len="$(max_len "$target")" -rss_limit_mb="$rss" \
        -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        status=1
        tail -n 40 "$log"
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    summary+=("$(printf '%-20s %-6s %12s executions in %ss' "$target" "$result" "${runs:-?}" "$secs")")
    rm -f "$log"
    [ "$result" = ok ] || break
done

echo
printf '%s\n' "${summary[@]}"
exit "$status"
