#!/bin/sh
# scripts/bench/run.sh -- `make bench`: the atomrun binary drives the
# benchmarks (scripts/bench/run.lua) against the C references make built.
#
#   sh scripts/bench/run.sh [--quick] [--build DIR] [--out FILE] [--before DIR2]
#
# --quick      a seconds-long smoke run (CI): every benchmark runs, with
#              tiny counts; the numbers mean nothing and nothing is asserted
# --build DIR  where `make` put atomrun (default: $B or build)
# --out FILE   the JSON results (default: build/bench/results.json)
# --before DIR2  also time DIR2/atomrun (say, main's build) side by side
set -eu
cd "$(dirname "$0")/../.."

build=${B:-build}
quick=
before=
out=build/bench/results.json
while [ $# -gt 0 ]; do
    case $1 in
    --quick) quick=--quick ;;
    --build) build=$2; shift ;;
    --out) out=$2; shift ;;
    --before) before="--before $2"; shift ;;
    *) echo "run.sh: unknown argument '$1'" >&2; exit 64 ;;
    esac
    shift
done

if [ ! -x "$build/atomrun" ]; then
    echo "run.sh: $build/atomrun not found; run make first" >&2
    exit 1
fi

# The raw-syscall references (scripts/bench/*.c) are built by `make bench`,
# next to atomrun, with the Makefile's flags.
for bin in "$build/bench/ref" "$build/bench/harness"; do
    if [ ! -x "$bin" ]; then
        echo "run.sh: $bin not found; run make bench (it builds it)" >&2
        exit 1
    fi
done

mkdir -p "$(dirname "$out")"
"$build/atomrun" scripts/bench/run.lua --build "$build" --out "$out" $quick $before
# The etcd rows, on their own 3-member loopback cluster (skipped, saying
# so, when etcd-server is not installed).
AR_BUILD="$build" exec "$build/atomrun" scripts/bench/etcd.lua --build "$build" \
    --out "$(dirname "$out")/etcd.json" $quick
