#!/bin/sh
# spec/run.sh -- run every test and print one closing line:
# "N passed, N failed, N skipped" (skipped: pending specs that cannot run here).
#
#   sh spec/run.sh              specs in stock lua5.4 (lua/ and
#                               build/lua/atomrun/core.so) and
#                               inside build/atomrun, the C tests in spec/c/,
#                               then everything again under ASan+UBSan
#   sh spec/run.sh --asan-only  only the sanitizer pass
#
# Environment: AR_BUILD (default build), AR_NO_ASAN=1 to skip the sanitizer
# pass, SPEC="spec/x_spec.lua" to run some specs only (that also skips the
# TSan and valgrind step), AR_NO_HARDEN=1 to skip that step, AR_TSAN_BUILD
# (default build/tsan) for where the TSan build goes.
set -u
cd "$(dirname "$0")/.." || exit 2
BUILD=${AR_BUILD:-$PWD/build}
SPECS=${SPEC:-spec}
LOG=$(mktemp -d /tmp/atomrun-run.XXXXXX)
passed=0
failed=0
skipped=0

# busted's closing line: "12 successes / 0 failures / 1 error / 0 pending : 3.2 seconds".
# Pending tests (pending(...): cannot run here) are counted as skipped,
# never as passed.
count_busted() {
    line=$(grep -E '^[0-9]+ success' "$1" | tail -n 1)
    if [ -z "$line" ]; then
        echo "  (busted printed no summary: counting the run as one failure)"
        failed=$((failed + 1))
        return
    fi
    s=$(echo "$line" | sed -E 's/^([0-9]+) success.*/\1/')
    f=$(echo "$line" | sed -E 's/.* ([0-9]+) failure.*/\1/')
    e=$(echo "$line" | sed -E 's/.* ([0-9]+) error.*/\1/')
    p=$(echo "$line" | sed -E 's/.* ([0-9]+) pending.*/\1/')
    passed=$((passed + s))
    failed=$((failed + f + e))
    skipped=$((skipped + p))
}

busted_pass() {   # NAME INTERPRETER...
    name=$1; shift
    echo "== specs: $name"
    "$@" /usr/bin/busted --output=utfTerminal --no-auto-insulate $SPECS > "$LOG/$name.log" 2>&1
    cat "$LOG/$name.log"
    count_busted "$LOG/$name.log"
}

c_tests() {   # BUILD CFLAGS...
    b=$1; shift
    for src in spec/c/*.c; do
        [ -f "$src" ] || continue
        t=$(basename "$src" .c)
        echo "== C test: $t ($b)"
        if cc -std=c11 -Wall -Wextra -Werror -g -pthread "$@" -Isrc $(pkg-config --cflags lua5.4) \
            -o "$b/spec_$t" "$src" "$b/libatomrun.a" $(pkg-config --libs lua5.4 libcurl jansson) -lm \
            && "$b/spec_$t"; then
            passed=$((passed + 1))
        else
            echo "   FAILED: $t"
            failed=$((failed + 1))
        fi
    done
}

embed_test() {   # BUILD
    echo "== embedding: a C host linked with libatomrun runs a script"
    if out=$("$1/spec_host" spec/embed_job.lua hello world) \
        && [ "$out" = "embedded: hello world" ]; then
        passed=$((passed + 1))
    else
        echo "   FAILED: spec_host printed: $out"
        failed=$((failed + 1))
    fi
}

# make check-tsan and make check-valgrind, one pass or failure each.
harden_step() {
    if [ -n "${SPEC:-}" ] || [ "${AR_NO_HARDEN:-0}" = 1 ]; then
        echo "== TSan and valgrind: skipped (SPEC or AR_NO_HARDEN set)"
        return
    fi
    for t in check-tsan check-valgrind; do
        echo "== make $t"
        if make --no-print-directory -s B="$BUILD" TSAN_B="${AR_TSAN_BUILD:-build/tsan}" "$t"; then
            passed=$((passed + 1))
        else
            echo "   FAILED: make $t"
            failed=$((failed + 1))
        fi
    done
}

if [ "${1:-}" != "--asan-only" ]; then
    AR_PASS=lua5.4 AR_BUILD=$BUILD busted_pass lua5.4 env LUA_CPATH="$BUILD/lua/?.so;;" \
        LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;;" lua5.4
    AR_PASS=atomrun AR_BUILD=$BUILD busted_pass atomrun "$BUILD/atomrun"
    embed_test "$BUILD"
    c_tests "$BUILD"
    harden_step
fi
if [ "${1:-}" = "--asan-only" ] || [ "${AR_NO_ASAN:-0}" != 1 ]; then
    echo "== building with AddressSanitizer + UBSan (build/asan/)"
    # The flags are the Makefile's SAN_FLAGS (the one copy).
    SAN=$(make --no-print-directory -s print-san)
    if [ -n "$SAN" ] && make --no-print-directory -s B=build/asan CFLAGS="$SAN" \
        build/asan/atomrun build/asan/libatomrun.a >"$LOG/asan-build.log" 2>&1; then
        # Leaks are valgrind's job (make check-valgrind); os.exit skips lua_close.
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
            AR_PASS=asan AR_BUILD=$PWD/build/asan AR_ASAN=1 busted_pass asan "$PWD/build/asan/atomrun"
        ASAN_OPTIONS=detect_leaks=1 c_tests build/asan $SAN
    else
        cat "$LOG/asan-build.log"
        echo "   FAILED: sanitizer build"
        failed=$((failed + 1))
    fi
fi
rm -rf "$LOG"
echo
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
