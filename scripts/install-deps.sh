#!/bin/sh
# Install every Debian package atomrun needs to build, test and benchmark.
# One list, used by README's quick start and by .ci/run.  Run as root.
set -e
# Root installs directly (a fresh Debian has no sudo); anyone else via sudo.
if [ "$(id -u)" != 0 ]; then
    exec sudo sh "$0" "$@"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    build-essential pkg-config ca-certificates \
    lua5.4 liblua5.4-dev lua-cjson lua-busted \
    util-linux procps psmisc python3 python3-filelock sqlite3 \
    strace valgrind lua-posix hyperfine groff-base man-db \
    libcurl4-openssl-dev libjansson-dev etcd-server etcd-client openssl curl >/dev/null
echo "atomrun: build and test dependencies installed"
