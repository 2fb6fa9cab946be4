"""peer.py -- what Python users write today, for `make bench`.

Run with Debian's interpreter and python3-filelock:
    /usr/bin/python3 scripts/bench/peer.py SUBCOMMAND ARGS...
Same subcommands, arguments and output as ref.c and work.lua:
    lockcycle PATH N          filelock.FileLock(PATH): acquire + release
    range PATH N              fcntl.lockf(fd, LOCK_EX|LOCK_NB, 100, 0) + LOCK_UN
    replace PATH SIZE N       mkstemp in the directory, write, fsync, os.replace
                              (the usual recipe: the directory is NOT fsynced)
    counter PATH K START_AT   FileLock(PATH.lock) + read + the replace above
    waiter PATH               FileLock(PATH, timeout=10).acquire(): polls, with
                              the default poll interval
"""
import fcntl
import os
import sys
import tempfile
import time

import filelock

now = time.monotonic            # CLOCK_MONOTONIC on Linux, as in ref.c
cpu = time.process_time         # CLOCK_PROCESS_CPUTIME_ID, as in ref.c


def report(wall, cpu_s, n):
    print("%.9e %.9e" % (wall / n, cpu_s / n))


def warmup_of(n):
    return min(n // 10, 1000)


def lockcycle(path, n):
    lock = filelock.FileLock(path)
    for _ in range(warmup_of(n)):
        lock.acquire()
        lock.release()
    t, c = now(), cpu()
    for _ in range(n):
        lock.acquire()
        lock.release()
    report(now() - t, cpu() - c, n)


def range_pair(path, n):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    for _ in range(warmup_of(n)):
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 0)
        fcntl.lockf(fd, fcntl.LOCK_UN, 100, 0)
    t, c = now(), cpu()
    for _ in range(n):
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 0)
        fcntl.lockf(fd, fcntl.LOCK_UN, 100, 0)
    report(now() - t, cpu() - c, n)
    os.close(fd)


def replace(path, data):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".",
                               prefix="." + os.path.basename(path) + ".")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def replace_bench(path, size, n):
    data = (b"abcdefghijklmnopqrstuvwxyz" * (size // 26 + 1))[:size]
    replace(path, data)                 # warm-up: the file exists
    t, c = now(), cpu()
    for _ in range(n):
        replace(path, data)
    report(now() - t, cpu() - c, n)


def counter(path, k, start_at):
    lock = filelock.FileLock(path + ".lock")
    d = start_at - now()
    if d > 0:
        time.sleep(d)
    t0 = now()
    for _ in range(k):
        with lock:
            try:
                with open(path, "rb") as f:
                    value = int(f.read() or b"0")
            except FileNotFoundError:
                value = 0
            replace(path, str(value + 1).encode())
    print("%.9f %.9f %d" % (t0, now(), k))


def waiter(path):
    lock = filelock.FileLock(path, timeout=10)
    print("ready", flush=True)
    for _ in sys.stdin:
        lock.acquire()
        t = now()
        print("%.9f" % t, flush=True)
        lock.release()


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "lockcycle":
        lockcycle(argv[2], int(argv[3]))
    elif cmd == "range":
        range_pair(argv[2], int(argv[3]))
    elif cmd == "replace":
        replace_bench(argv[2], int(argv[3]), int(argv[4]))
    elif cmd == "counter":
        counter(argv[2], int(argv[3]), float(argv[4]))
    elif cmd == "waiter":
        waiter(argv[2])
    else:
        sys.stderr.write("usage: peer.py lockcycle|range|replace|counter|waiter ARGS...\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
