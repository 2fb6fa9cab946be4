#!/bin/sh
# scripts/bench/run.sh -- `make bench`: compile the C references, then let
# the atomrun binary drive the benchmarks (scripts/bench/run.lua).
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

# The raw-syscall references: plain C11, no library, built next to atomrun.
CC=${CC:-cc}
mkdir -p "$build/bench"
for name in ref harness; do
    src=scripts/bench/$name.c
    bin=$build/bench/$name
    if [ ! -x "$bin" ] || [ "$src" -nt "$bin" ]; then
        echo "$CC -O2 -o $bin $src"
        $CC -std=c11 -O2 -Wall -Wextra -Werror -o "$bin" "$src"
    fi
done

mkdir -p "$(dirname "$out")"
"$build/atomrun" scripts/bench/run.lua --build "$build" --out "$out" $quick $before
# The etcd rows, on their own 3-member loopback cluster (skipped, saying
# so, when etcd-server is not installed).
AR_BUILD="$build" exec "$build/atomrun" scripts/bench/etcd.lua --build "$build" \
    --out "$(dirname "$out")/etcd.json" $quick
