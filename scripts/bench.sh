#!/usr/bin/env bash
# Benchmarks kilo-rs on the synthetic clusters of the upstream baseline (see BENCHMARKS.md).
#
#   scripts/bench.sh [--quick] [--no-criterion] [--no-e2e] [--out DIR]
#
#   --quick          criterion at N = 100 and 1,000 only (the 10,000 cases take most of the time)
#   --no-criterion   skip the criterion benches (only the whole-process measurements)
#   --no-e2e         skip the whole-process measurements
#   --out DIR        keep the generated inputs and raw results in DIR (default: a temp dir)
#
# Steps: build release binaries (kilo-gen, kgctl when the workspace has it), generate the
# baseline's synthetic clusters, run `cargo bench -p kilo-core --bench pipeline --bench dot`,
# summarise criterion's medians with the fitted log-log exponent per stage, then time whole
# processes with `/usr/bin/time -v` (wall, max RSS): `kgctl --backend file --file big.yaml
# showconf node n00000` and `kgctl graph`.
#
# Timings depend on the machine's load: the script prints the load average next to them.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

quick=0 criterion=1 e2e=1 out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --no-criterion) criterion=0 ;;
        --no-e2e) e2e=0 ;;
        --out) out="$2"; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown argument $1" >&2; exit 1 ;;
    esac
    shift
done
if [ -z "$out" ]; then
    out=$(mktemp -d /tmp/kilo-bench.XXXXXX)
fi
mkdir -p "$out"
echo "# results in $out"
echo "# machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(grep MemTotal /proc/meminfo | tr -s ' ')"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ ! -x /usr/bin/time ]; then
    echo "# installing GNU time" >&2
    apt-get install -y time >/dev/null
fi

# --- build -----------------------------------------------------------------------------------
have_kgctl=0
if cargo metadata --no-deps --format-version 1 2>/dev/null | grep -q '"name":"kgctl"'; then
    have_kgctl=1
    cargo build --release -q -p kilo-gen -p kgctl
else
    cargo build --release -q -p kilo-gen
    echo "# kgctl is not in this workspace: whole-process rows skipped"
fi
gen="$root/target/release/kilo-gen"
kgctl="$root/target/release/kgctl"

# --- inputs ----------------------------------------------------------------------------------
for n in 100 1000 10000; do
    "$gen" --nodes "$n" --baseline --format yaml >"$out/n$n.yaml"
    "$gen" --nodes "$n" --baseline --format toml >"$out/n$n.toml"
done
ls -l "$out"/*.yaml | awk '{printf "# input %s: %.2f MB\n", $NF, $5/1e6}'

# --- criterion -------------------------------------------------------------------------------
if [ "$criterion" = 1 ]; then
    sizes="100,1000,10000"
    [ "$quick" = 1 ] && sizes="100,1000"
    # glibc gives freed heap back to the kernel after each iteration (trim) and re-faults it in the
    # next (about 4,000 page faults per N=10,000 location iteration); Go's runtime keeps its heap.
    # Raise the trim and mmap thresholds so that the steady state is measured.
    GLIBC_TUNABLES=glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_threshold=33554432 \
    KILO_BENCH_SIZES=$sizes cargo bench -q -p kilo-core --bench pipeline --bench dot \
        2>&1 | tee "$out/criterion.log" | grep -E '^[a-z_]+/|time:' || true
    echo "# load average after criterion: $(cut -d' ' -f1-3 /proc/loadavg)"
    python3 - "$root/target/criterion" <<'EOF'
import json, math, os, sys
from collections import defaultdict

base = sys.argv[1]
rows = defaultdict(dict)
for dirpath, _, files in os.walk(base):
    if "benchmark.json" in files and os.path.basename(dirpath) == "new":
        meta = json.load(open(os.path.join(dirpath, "benchmark.json")))
        est = json.load(open(os.path.join(dirpath, "estimates.json")))
        n = int(meta["value_str"] or meta["function_id"])
        rows[meta["group_id"]][n] = est["median"]["point_estimate"]

def fmt(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"

def slope(points):
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")

print("\n| stage/granularity | N=100 | N=1,000 | N=10,000 | exponent |")
print("|---|---|---|---|---|")
for group in sorted(rows):
    pts = sorted(rows[group].items())
    cells = [fmt(rows[group][n]) if n in rows[group] else "—" for n in (100, 1000, 10000)]
    exp = f"{slope(pts):.2f}" if len(pts) >= 2 else "—"
    print(f"| {group} | " + " | ".join(cells) + f" | {exp} |")
EOF
fi

# --- whole process ---------------------------------------------------------------------------
# Runs "$@" $runs times under /usr/bin/time -v; prints median wall and max RSS.
measure() {
    local label=$1 runs=$2; shift 2
    local walls=() cpus=() rss=0
    for _ in $(seq "$runs"); do
        /usr/bin/time -v -o "$out/time.txt" "$@" >"$out/stdout.txt" 2>"$out/stderr.txt" || {
            echo "| $label | failed: $(head -c 200 "$out/stderr.txt") |"; return; }
        walls+=("$(awk -F': ' '/Elapsed \(wall clock\)/ {split($2, a, ":"); print a[1] * 60 + a[2]}' "$out/time.txt")")
        cpus+=("$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {print u + s}' "$out/time.txt")")
        local r
        r=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$out/time.txt")
        [ "$r" -gt "$rss" ] && rss=$r
    done
    local median cpu
    median=$(printf '%s\n' "${walls[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    cpu=$(printf '%s\n' "${cpus[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf '| %s | %.0f ms | %.0f ms | %.1f MiB | %s B out |\n' "$label" \
        "$(echo "$median * 1000" | bc -l)" "$(echo "$cpu * 1000" | bc -l)" \
        "$(echo "$rss / 1024" | bc -l)" "$(wc -c <"$out/stdout.txt")"
}

if [ "$e2e" = 1 ] && [ "$have_kgctl" = 1 ]; then
    echo
    echo "| command (median of runs) | wall | user+sys CPU | max RSS | output |"
    echo "|---|---|---|---|---|"
    for n in 1000 10000; do
        for g in location full; do
            measure "kgctl --mesh-granularity $g showconf node n00000, N=$n yaml" 5 \
                "$kgctl" --backend file --file "$out/n$n.yaml" --mesh-granularity "$g" showconf node n00000
        done
    done
    measure "kgctl showconf node n00000, N=10000 toml (location)" 5 \
        "$kgctl" --backend file --file "$out/n10000.toml" showconf node n00000
    measure "kgctl --mesh-granularity full graph, N=1000" 3 \
        "$kgctl" --backend file --file "$out/n1000.yaml" --mesh-granularity full graph
    measure "kgctl --mesh-granularity location graph, N=10000" 3 \
        "$kgctl" --backend file --file "$out/n10000.yaml" --mesh-granularity location graph
    echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
