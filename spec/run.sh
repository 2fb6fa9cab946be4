#!/bin/sh
# spec/run.sh -- run every test and print one closing line:
# "N passed, N failed, N skipped" (skipped: pending specs that cannot run here).
#
#   sh spec/run.sh               (make test, make check-all) specs in stock
#                                lua5.4 (lua/ and build/lua/atomrun/core.so)
#                                and inside build/atomrun, the C tests in
#                                spec/c/, make check-tsan and check-valgrind,
#                                and the specs and C tests again under
#                                ASan+UBSan
#   sh spec/run.sh --check       (make check) the atomrun pass without the
#                                #heavy tests (the "quick" profile), the
#                                embedding test and the C tests, in one lane
#   sh spec/run.sh --asan-only   (make check-asan) only the sanitizer pass
#   sh spec/run.sh --lua54-only  (make check-lua54) only the lua5.4 pass
#
# Every binary it runs is the Makefile's (make test-bins; the ASan lane
# runs make for build/asan/): nothing is compiled here or in a spec file.
#
# Environment: AR_BUILD (default build), AR_NO_ASAN=1 to skip the sanitizer
# pass, SPEC="spec/x_spec.lua" to run some specs only (that also skips the
# TSan and valgrind step), AR_NO_HARDEN=1 to skip that step, AR_TSAN_BUILD
# (default build/tsan) for where the TSan build goes, AR_SERIAL=1 to run the
# two lanes below one after the other, ATOMRUN_TEST_ETCD_PORT (default
# 23791) the first etcd port.
#
# Which pass runs which spec file, and why: tags in the spec names
# (#child, #harness, #heavy) and a busted run profile for each pass in
# spec/.busted, which says what each tag means and which passes leave it
# out:
#   - the atomrun pass (inside build/atomrun, the shipped binary) runs every
#     spec file, and the #heavy tests (storms, sweeps) only there;
#   - the asan pass (inside build/asan/atomrun) leaves out #harness and
#     #heavy;
#   - the lua5.4 pass (stock lua5.4 with core.so) leaves out #child too.
# busted leaves the tagged tests out; a file whose every top-level describe
# has such a tag is not handed to busted at all, and each pass says how many
# files it runs and how many it leaves to the others, and why.
# The lua5.4 pass is cut in two so that the lanes below end together: these
# files run as "lua5.4-a" at the end of lane A, the rest as "lua5.4" in
# lane B (one lane: both, one after the other); the two always run together.
# (Lane scheduling, not selection: both halves run the lua5.4 profile.)
LUA_LANE_A="etcd_unknown etcd_watch"
#
# Two lanes run at once (2 cores; most spec time is waiting for etcd leases,
# timeouts and children, not CPU):
#   lane A: the atomrun pass, the embedding test, the C tests, check-tsan,
#           check-valgrind, the LUA_LANE_A part of the lua5.4 pass --
#           printed as each step ends;
#   lane B: the ASan build, the asan pass and its C tests, the rest of the
#           lua5.4 pass -- printed after lane A.
# What they must not share: etcd ports (the specs use BASE..BASE+49; lane B
# gets BASE+100) and build directories (lane A uses $AR_BUILD and build/tsan,
# lane B build/asan and $AR_BUILD read-only: the lua5.4 pass builds nothing,
# as the Makefile built every test binary before, and install_spec.lua,
# which runs make, is #heavy).  Scratch files are mktemp's.  Each step writes its log and its counts into $LOG;
# the closing line adds up every step's counts, and a step that left none
# (a lane killed) counts as a failure.
set -u
cd "$(dirname "$0")/.." || exit 2
BUILD=${AR_BUILD:-$PWD/build}
SPECS=${SPEC:-spec}
PORT=${ATOMRUN_TEST_ETCD_PORT:-23791}

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

in_list() {   # WORD LIST
    case " $2 " in *" $1 "*) return 0 ;; esac
    return 1
}

# The busted run profile of pass NAME (spec/.busted): lua5.4-a is lua5.4's.
profile() {   # NAME
    echo "${1%-a}"
}

# The tags pass NAME leaves out, from its profile: "harness heavy".
excluded_tags() {   # NAME
    lua5.4 -e "io.write(table.concat(dofile('spec/.busted')['$(profile "$1")']['exclude-tags'], ' '))"
}

# The tag that leaves FILE to another pass: one of TAGS on every top-level
# describe (or pending) of FILE -- the first such tag -- or nothing.
leaving_tag() {   # FILE TAGS
    [ -n "$2" ] || return 0
    awk -v tags="$2" '
        BEGIN { n = split(tags, t, " ") }
        /^(describe|pending)\("/ {
            top++
            name = $0; sub(/^[a-z]+\("/, "", name); sub(/".*/, "", name)
            hit = ""
            for (i = 1; i <= n && hit == ""; i++)
                if (index(name " ", "#" t[i] " ")) hit = t[i]
            if (hit == "") stays = 1
            else if (first == "") first = hit
        }
        END { if (top && !stays) print first }' "$1"
}

# The spec files of pass NAME, one a line; "$LOG/NAME.left" gets, one a
# line, the tag that leaves each other file to another pass.
spec_files() {   # NAME
    for sp in $SPECS; do
        if [ -d "$sp" ]; then ls "$sp"/*_spec.lua; else echo "$sp"; fi
    done > "$LOG/$1.all"
    tags=$(excluded_tags "$1")
    : > "$LOG/$1.left"
    while read -r f; do
        b=$(basename "$f" _spec.lua)
        tag=$(leaving_tag "$f" "$tags")
        if [ -n "$tag" ]; then
            echo "$tag" >> "$LOG/$1.left"
        elif [ "$1" = lua5.4 ] && in_list "$b" "$LUA_LANE_A"; then
            :   # run by lua5.4-a in lane A
        elif [ "$1" = lua5.4-a ] && ! in_list "$b" "$LUA_LANE_A"; then
            :   # run by lua5.4 in lane B
        else
            echo "$f"
        fi
    done < "$LOG/$1.all"
}

# " (17 left to the others: 9 #child, 1 #harness, 7 #heavy)", or nothing.
left_note() {   # NAME
    m=$(grep -c . "$LOG/$1.left")
    [ "$m" -gt 0 ] || return 0
    echo " ($m left to the others: $(sort "$LOG/$1.left" | uniq -c \
        | awk '{ printf "%s%d #%s", (NR > 1 ? ", " : ""), $1, $2 }'))"
}

busted_pass() {   # NAME INTERPRETER...
    name=$1; shift
    files=$(spec_files "$name")
    n=$(echo "$files" | grep -c .)
    echo "== specs: $name pass: $n spec files$(left_note "$name")"
    if [ "$n" -eq 0 ]; then return; fi
    # spec/timing.lua is busted's utfTerminal plus a note of each file's
    # time.  Our output goes to $LOG/NAME.log (run_step), so busted's
    # closing line is read back from there.  The run profile (spec/.busted)
    # leaves out the tests tagged for other passes.
    AR_TIMING="$LOG/$name.timing" "$@" /usr/bin/busted --config-file=spec/.busted \
        --run="$(profile "$name")" --output=spec/timing.lua --no-auto-insulate $files 2>&1
    count_busted "$LOG/$name.log"
    echo "   slowest files: $(grep -P '\tfile\t' "$LOG/$name.timing" 2>/dev/null | sort -rn \
        | head -n 5 | awk -F'\t' '{ sub(/.*\//, "", $3); printf "%s%s %.0f s", (NR > 1 ? ", " : ""), $3, $1 }')"
}

# The C tests, built by the Makefile as BUILD/spec_NAME (missing: failed).
c_tests() {   # BUILD
    for src in spec/c/*.c; do
        [ -f "$src" ] || continue
        t=$(basename "$src" .c)
        echo "== C test: $t ($1)"
        if [ ! -x "$1/spec_$t" ]; then
            echo "   FAILED: $t: $1/spec_$t not built (make test-bins)"
            failed=$((failed + 1))
        elif "$1/spec_$t"; then
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

# make check-tsan or make check-valgrind: one pass or failure.
make_check() {   # TARGET
    echo "== make $1"
    if make --no-print-directory -s B="$BUILD" TSAN_B="${AR_TSAN_BUILD:-build/tsan}" "$1"; then
        passed=$((passed + 1))
    else
        echo "   FAILED: make $1"
        failed=$((failed + 1))
    fi
}

asan_build() {
    echo "== building with AddressSanitizer + UBSan (build/asan/)"
    # The flags are the Makefile's SAN_FLAGS (the one copy), and the rules
    # its own: the library, the binary and every test binary.
    SAN=$(make --no-print-directory -s print-san)
    if [ -n "$SAN" ] && make --no-print-directory -s B=build/asan CFLAGS="$SAN" \
        build/asan/atomrun test-bins > "$LOG/asan-build.out" 2>&1; then
        : > "$LOG/asan.built"
    else
        cat "$LOG/asan-build.out"
        echo "   FAILED: sanitizer build"
        failed=$((failed + 1))
    fi
}

# One step: its output into $LOG/NAME.log, its counts into $LOG/NAME.count.
run_step() {   # NAME
    passed=0 failed=0 skipped=0
    t0=$(date +%s)
    case $1 in
        lua5.4|lua5.4-a)
            AR_PASS=lua5.4 AR_BUILD=$BUILD busted_pass "$1" env LUA_CPATH="$BUILD/lua/?.so;;" \
                LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;;" lua5.4 ;;
        atomrun)
            AR_PASS=atomrun AR_BUILD=$BUILD busted_pass atomrun "$BUILD/atomrun" ;;
        quick)
            # make check: inside build/atomrun too, with the small loops
            # of the passes that leave out #heavy (H.heavy is false)
            AR_PASS=quick AR_BUILD=$BUILD busted_pass quick "$BUILD/atomrun" ;;
        embed) embed_test "$BUILD" ;;
        c) c_tests "$BUILD" ;;
        tsan) make_check check-tsan ;;
        valgrind) make_check check-valgrind ;;
        asan-build) asan_build ;;
        asan)
            # Leaks are valgrind's job (make check-valgrind); os.exit skips lua_close.
            [ -e "$LOG/asan.built" ] && ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 \
                UBSAN_OPTIONS=print_stacktrace=1 AR_PASS=asan AR_BUILD=$PWD/build/asan AR_ASAN=1 \
                busted_pass asan "$PWD/build/asan/atomrun" ;;
        asan-c)
            [ -e "$LOG/asan.built" ] && ASAN_OPTIONS=detect_leaks=1 c_tests build/asan ;;
    esac > "$LOG/$1.log" 2>&1
    echo "   ($1: $(($(date +%s) - t0)) s)" >> "$LOG/$1.log"
    echo "$passed $failed $skipped" > "$LOG/$1.count"
}

run_lane() {   # STEP...
    for step in "$@"; do
        run_step "$step"
        [ -n "${AR_LANE_QUIET:-}" ] || cat "$LOG/$step.log"
    done
}

# Everything below is one function, read whole before it runs: sh reads a
# script as it goes, so an edit to this file during a run would otherwise
# garble the rest of that run.
main() {
    # Lane B runs as this script again ("--lane STEP..."), in a session of its
    # own so that the trap below can end it, children and all.  A command the
    # shell starts with & has SIGINT and SIGQUIT ignored, and every child
    # would inherit that (the specs that send ^C on a terminal would see their
    # command live on): env --default-signal gives them back.
    if [ "${1:-}" = --lane ]; then
        shift
        LOG=$AR_RUN_LOG
        AR_LANE_QUIET=1 run_lane "$@"
        exit 0
    fi

    LOG=$(mktemp -d /tmp/atomrun-run.XXXXXX)
    lane_a="" lane_b=""
    case ${1:-} in
        --check) lane_a="quick embed c" ;;
        --asan-only) lane_b="asan-build asan asan-c" ;;
        --lua54-only) lane_b="lua5.4-a lua5.4" ;;
        "")
            lane_a="atomrun embed c"
            if [ -n "${SPEC:-}" ] || [ "${AR_NO_HARDEN:-0}" = 1 ]; then
                echo "== TSan and valgrind: skipped (SPEC or AR_NO_HARDEN set)"
            else
                lane_a="$lane_a tsan valgrind"
            fi
            lane_a="$lane_a lua5.4-a"
            lane_b="lua5.4"
            if [ "${AR_NO_ASAN:-0}" != 1 ]; then
                lane_b="asan-build asan asan-c $lane_b"
            fi ;;
        *) echo "run.sh: unknown argument '$1'" >&2; rm -rf "$LOG"; exit 64 ;;
    esac

    start=$(date +%s)
    bpid=""
    if [ "${AR_SERIAL:-0}" = 1 ] || [ -z "$lane_a" ] || [ -z "$lane_b" ]; then
        echo "== one lane: $lane_a $lane_b"
        run_lane $lane_a $lane_b
    else
        echo "== two lanes at once: A ($lane_a), then B ($lane_b) printed when both end"
        AR_RUN_LOG=$LOG ATOMRUN_TEST_ETCD_PORT=$((PORT + 100)) env --default-signal=INT,QUIT \
            setsid -w sh "$0" --lane $lane_b \
            < /dev/null > "$LOG/lane-b.out" 2>&1 &
        bpid=$!
        trap 'kill -TERM -$bpid 2>/dev/null; rm -rf "$LOG"; exit 130' INT TERM
        ATOMRUN_TEST_ETCD_PORT=$PORT run_lane $lane_a
        wait "$bpid"
        trap - INT TERM
        cat "$LOG/lane-b.out"
        for step in $lane_b; do cat "$LOG/$step.log" 2>/dev/null; done
    fi

    passed=0 failed=0 skipped=0
    for step in $lane_a $lane_b; do
        if [ -f "$LOG/$step.count" ]; then
            read -r p f k < "$LOG/$step.count"
            passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + k))
        else
            echo "   FAILED: step $step left no result"
            failed=$((failed + 1))
        fi
    done
    echo "== all steps: $(($(date +%s) - start)) s"
    # Every failure once more, last: CI keeps only a log's tail.
    if [ "$failed" -ne 0 ]; then
        echo "== what failed:"
        for step in $lane_a $lane_b; do
            grep -P '\tfail\t' "$LOG/$step.timing" 2>/dev/null | cut -f3- | sed "s/^/   $step: /"
            grep -h '   FAILED' "$LOG/$step.log" 2>/dev/null | sed "s/^ */   $step: /"
        done
    fi
    rm -rf "$LOG"
    echo
    echo "$passed passed, $failed failed, $skipped skipped"
    [ "$failed" -eq 0 ]
}

main "$@"; exit
