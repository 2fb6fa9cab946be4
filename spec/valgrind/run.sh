#!/bin/sh
# spec/valgrind/run.sh BUILD -- memcheck over the CLI (make check-valgrind).
#
# Each representative script, and the bundled commands, run under valgrind:
# 0 bytes definitely lost, 0 invalid reads or writes (any memcheck error
# fails the run).  The scripts end normally: os.exit() would skip lua_close.
set -u
cd "$(dirname "$0")/../.." || exit 2
B=${1:-build}
VG="valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite --error-exitcode=99"
T=$(mktemp -d /tmp/atomrun-vg.XXXXXX)
failed=0
ran=0

check() {   # NAME CMD...
    name=$1; shift
    ran=$((ran + 1))
    if $VG "$@" > "$T/out" 2>&1; then
        echo "  ok      $name"
    else
        echo "  FAILED  $name (status $?)"
        sed 's/^/    /' "$T/out"
        failed=$((failed + 1))
    fi
}

echo "== valgrind memcheck ($B/atomrun)"
for s in spec/valgrind/*.lua; do
    d="$T/$(basename "$s" .lua)"
    mkdir -p "$d"
    check "$(basename "$s")" "$B/atomrun" "$s" "$d"
done
mkdir -p "$T/cli"
check "atomrun lock FILE CMD"       "$B/atomrun" lock "$T/cli/l" true
check "atomrun lock -n (busy)"      sh -c "flock $T/cli/l2 sh -c ': > $T/cli/held; \
    while [ ! -e $T/cli/done ]; do sleep 0.01; done' & \
    while [ ! -e $T/cli/held ]; do sleep 0.01; done; \
    $VG --error-exitcode=99 $B/atomrun lock -n $T/cli/l2 true; s=\$?; : > $T/cli/done; wait; \
    test \$s = 1"
check "atomrun once NAME CMD"       "$B/atomrun" once --dir "$T/cli" job true
check "atomrun doctor DIR"          "$B/atomrun" doctor "$T/cli"
check "atomrun doctor --json"       "$B/atomrun" doctor "$T/cli" --json
check "atomrun -e (an uncaught error)" sh -c "$VG --error-exitcode=99 $B/atomrun -e 'error(\"x\")'; test \$? = 1"
check "atomrun (usage error)"       sh -c "$VG --error-exitcode=99 $B/atomrun lock; test \$? = 64"
rm -rf "$T"
echo "valgrind: $ran runs, $failed failed"
[ "$failed" -eq 0 ]
