#!/usr/bin/python3
"""spec/faultproxy.py -- a fault-injecting HTTP/1.1 proxy in front of ONE real
etcd member, for spec/etcd_unknown_spec.lua (standard library only).

The fault it exists for is update()'s "unknown outcome": the txn reached etcd
and was applied, and the client never heard the answer (a leader died, a
connection was cut after the request went out).  Mocking etcd would prove
nothing -- the question is what the real server did -- so this proxy forwards
the real request to a real member, waits for the member's real answer (so
the txn really is applied), and then cuts the client's connection instead of
returning it.

    faultproxy.py --upstream 127.0.0.1:24791 --port-file F [--log L]
                  [--drop N[,N...]] [--drop-every K] [--then-blackhole]
                  [--late N [--late-hold]] [--control FILE] [--parent PID]
                  [--reset]

  --drop N,...      the answers of these txn POSTs (the Nth conditional
                    txn -- a POST to /v3/kv/txn with compares, i.e. a write;
                    a txn of ranges alone, update's read, is not counted --
                    through this proxy, counting from 1, resends included)
                    are read from etcd and thrown away; the client's
                    connection is closed instead
  --drop-every K    the same for every K-th txn POST
  --then-blackhole  after the first dropped answer, black-hole everything:
                    connections are accepted and read, never answered nor
                    forwarded, so no answer -- not even a refusal -- comes
  --late N          txn POST N is held back: its client is cut at once and
                    etcd has not seen it; the client's resends of it (the same
                    bytes) are cut unforwarded too; when a different request
                    comes (the caller's next attempt), the held txn is
                    delivered to etcd first -- a request stuck in the network
                    or in a member's queue that arrives after the caller
                    concluded it never did
  --late-hold       with --late: other requests pass and do not release the
                    held txn; it is delivered only when the control file
                    says "deliver" -- as late as the spec wants (after the
                    lock it asked for was taken elsewhere and released)
  --control FILE    read before each request: "blackhole" in it black-holes
                    from then on; "blackhole PATH..." only requests to those
                    paths ("blackhole /v3/kv/txn": the lease keepalives still
                    pass); "pass" forwards again; "deliver" delivers a
                    --late-hold txn now (a spec's switch; watched every
                    50 ms)
  --reset           cut with a TCP RST (SO_LINGER 0) instead of a FIN
  --port-file F     the listening port is written there (atomically) once
                    the proxy accepts connections; also printed on stdout
  --log L           one line per event: "txn N forwarded|dropped", "blackhole
                    on", "blackholed METHOD PATH" -- what the spec asserts on,
                    so a fault that did not happen cannot pass as resolved
  --parent PID      exit when PID is gone (a spec killed without its
                    teardown must not leave a proxy behind)

What the client really sends (src/etcd/http.c, libcurl): POST with Content-Length
(CURLOPT_POSTFIELDS; "Expect:" is disabled, so no 100-continue), on
keep-alive connections that curl reuses between calls; etcd's gateway answers
with Content-Length, or chunked for streams (watch, lease keep-alive).  Both
framings are handled in both directions, and a 100-continue from either side
is passed through, so the proxy stays correct if the client changes.  A
connection curl reuses and finds cut before any answer byte is retried by
curl itself on a fresh one: that resend is one more txn POST here, as it is
one more txn at etcd.
"""

import argparse
import os
import socket
import sys
import threading
import time

HOP_LIMIT = 1 << 16          # longest start line / header line accepted


class Closed(Exception):
    """The peer closed the connection mid-message (or before one)."""


class State:
    def __init__(self, args):
        self.args = args
        self.mu = threading.Lock()
        self.txns = 0
        self.blackhole = False
        self.blackhole_paths = frozenset()
        self.held = None           # --late: (n, head, body), False once delivered
        self.drop = set(int(x) for x in args.drop.split(",") if x) if args.drop else set()
        self.log_fh = open(args.log, "a", buffering=1) if args.log else None

    def log(self, line):
        if self.log_fh:
            with self.mu:
                self.log_fh.write(line + "\n")
                self.log_fh.flush()

    def control_word(self):
        path = self.args.control
        if not path:
            return ""
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return ""

    def control(self):
        """Apply the control file, if any; True when black-holing."""
        words = self.control_word().split()
        if words and words[0] in ("blackhole", "pass"):
            on = words == ["blackhole"]
            paths = frozenset(words[1:]) if words[0] == "blackhole" else frozenset()
            with self.mu:
                changed = (on, paths) != (self.blackhole, self.blackhole_paths)
                self.blackhole, self.blackhole_paths = on, paths
            if changed:
                self.log("blackhole " + ("on" if on else " ".join(sorted(paths)) or "off"))
        return self.blackhole

    def watch_control(self):
        """--late-hold: deliver the held txn when the control says so."""
        while True:
            if self.control_word() == "deliver" and self.held:
                self.deliver("on the control's word")
            time.sleep(0.05)

    def deliver(self, when):
        """Send the held txn to etcd now, once, and log etcd's verdict."""
        with self.mu:
            held = self.held
            if not held:
                return
            self.held = False
        host, port = self.args.upstream.rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
        rf = s.makefile("rb")
        s.sendall(held[1] + held[2])
        rstart, rlines = read_head(rf)
        ans = []
        copy_body(rf, ans.append, rlines, True)
        s.close()
        ans = b"".join(ans)
        self.log("txn %d delivered late, %s (etcd answered %s: %s)"
                 % (held[0], when, rstart.split()[1].decode(),
                    "succeeded" if b'"succeeded":true' in ans else "not succeeded"))

    def late_step(self, n, head, body, client):
        """--late: True when this txn was cut here instead of forwarded."""
        if self.args.late == n:
            with self.mu:
                self.held = (n, head, body)
            self.log("txn %d held (the client is cut; etcd has not seen it)" % n)
            cut(client, self.args.reset)
            return True
        held = self.held
        if held is None or held is False:
            return False
        if body == held[2]:
            self.log("txn %d cut unforwarded (the client's resend of txn %d)" % (n, held[0]))
            cut(client, self.args.reset)
            return True
        # another request: the held one arrives at etcd first, late --
        # unless the spec delivers it itself (--late-hold)
        if not self.args.late_hold:
            self.deliver("before txn %d" % n)
        return False

    def next_txn(self):
        """Count one txn POST; (its number, whether to drop its answer)."""
        with self.mu:
            self.txns += 1
            n = self.txns
        k = self.args.drop_every
        return n, n in self.drop or (k > 0 and n % k == 0)


def read_line(rf):
    line = rf.readline(HOP_LIMIT)
    if not line:
        raise Closed()
    if not line.endswith(b"\n"):
        raise Closed()           # over-long or cut: give up on this connection
    return line


def read_head(rf):
    """Start line and header lines (raw bytes, CRLFs kept) of one message."""
    start = read_line(rf)
    while start in (b"\r\n", b"\n"):          # stray CRLF between messages
        start = read_line(rf)
    lines = []
    while True:
        line = read_line(rf)
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return start, lines


def header(lines, name):
    name = name.lower().encode("latin-1")
    for line in lines:
        k, sep, v = line.partition(b":")
        if sep and k.strip().lower() == name:
            return v.strip().lower()
    return None


def copy_exact(rf, out, n):
    while n > 0:
        chunk = rf.read(min(n, 65536))
        if not chunk:
            raise Closed()
        if out:
            out(chunk)
        n -= len(chunk)


def copy_body(rf, out, lines, until_close):
    """Copy one message body from rf to out (None: discard), as framed."""
    te = header(lines, "transfer-encoding")
    if te and b"chunked" in te:
        while True:
            size_line = read_line(rf)
            if out:
                out(size_line)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:                       # trailers, then a blank line
                while True:
                    t = read_line(rf)
                    if out:
                        out(t)
                    if t in (b"\r\n", b"\n"):
                        return
            copy_exact(rf, out, size + 2)       # the data and its CRLF
    cl = header(lines, "content-length")
    if cl is not None:
        copy_exact(rf, out, int(cl))
    elif until_close:                           # a response framed by close
        while True:
            chunk = rf.read1(65536) if hasattr(rf, "read1") else rf.read(65536)
            if not chunk:
                return
            if out:
                out(chunk)


def cut(sock, reset):
    try:
        if reset:
            import struct
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def black_hole(rf, st, what):
    """Never answer: read (and forget) until the client gives up."""
    if what:
        st.log("blackholed " + what)
    try:
        while rf.read1(65536) if hasattr(rf, "read1") else rf.read(1):
            pass
    except OSError:
        pass


def serve(client, st):
    args = st.args
    up = None
    crf = client.makefile("rb")
    try:
        while True:
            if st.control():
                black_hole(crf, st, "connection")
                return
            try:
                start, lines = read_head(crf)
            except Closed:
                return
            parts = start.split()
            method = parts[0].decode("latin-1") if parts else "?"
            path = parts[1].decode("latin-1").split("?")[0] if len(parts) > 1 else "?"
            what = method + " " + path
            if st.control():
                black_hole(crf, st, what)
                return
            drop, n = False, 0
            is_txn = method == "POST" and path == "/v3/kv/txn"
            if path in st.blackhole_paths:
                black_hole(crf, st, what)
                return
            if up is None:
                host, port = args.upstream.rsplit(":", 1)
                up = socket.create_connection((host, int(port)))
                up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                urf = up.makefile("rb")
            head = start + b"".join(lines)
            expect = header(lines, "expect")
            if expect and b"100-continue" in expect:
                # the body waits for the server's interim answer, passed back
                if is_txn:
                    n, drop = st.next_txn()
                up.sendall(head)
                rstart, rlines = read_head(urf)
                client.sendall(rstart + b"".join(rlines))
                if not rstart.split()[1:2] == [b"100"]:
                    copy_body(urf, client.sendall, rlines, True)
                    continue
                copy_body(crf, up.sendall, lines, False)
            else:
                body = []
                copy_body(crf, body.append, lines, False)
                body = b"".join(body)
                # only conditional txns (with compares: the writes) count;
                # update's read -- a txn of ranges alone -- passes through
                if is_txn and b'"compare"' in body:
                    n, drop = st.next_txn()
                if n and st.late_step(n, head, body, client):
                    return
                up.sendall(head + body)
            # the answer (1xx interim answers first)
            while True:
                rstart, rlines = read_head(urf)
                code = rstart.split()[1:2]
                if drop:
                    # read etcd's whole answer, so the txn is applied and
                    # answered on the server's side, then cut the client
                    size = [0]

                    def count(b):
                        size[0] += len(b)
                    if not (code and code[0].startswith(b"1")):
                        copy_body(urf, count, rlines, True)
                        st.log("txn %d dropped (etcd answered %s, %d body bytes, not returned)"
                               % (n, (code[0] if code else b"?").decode(), size[0]))
                        if args.then_blackhole:
                            with st.mu:
                                st.blackhole = True
                            st.log("blackhole on")
                        cut(client, args.reset)
                        return
                    continue
                client.sendall(rstart + b"".join(rlines))
                if code and code[0].startswith(b"1"):
                    continue
                if n:
                    st.log("txn %d forwarded" % n)
                no_body = code and code[0] in (b"204", b"304")
                if not no_body:
                    copy_body(urf, client.sendall, rlines, True)
                conn = header(rlines, "connection")
                if (conn and b"close" in conn) or (not no_body and
                        header(rlines, "content-length") is None and
                        not header(rlines, "transfer-encoding")):
                    return
                break
    except (Closed, OSError, ValueError):
        return
    finally:
        try:
            client.close()
        except OSError:
            pass
        if up is not None:
            try:
                up.close()
            except OSError:
                pass


def watch_parent(pid):
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass
        time.sleep(0.2)


def main():
    p = argparse.ArgumentParser(description="fault-injecting HTTP/1.1 proxy for one etcd member")
    p.add_argument("--upstream", required=True, help="HOST:PORT of the etcd member")
    p.add_argument("--listen", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--log")
    p.add_argument("--drop", default="")
    p.add_argument("--drop-every", type=int, default=0)
    p.add_argument("--then-blackhole", action="store_true")
    p.add_argument("--late", type=int, default=0)
    p.add_argument("--late-hold", action="store_true")
    p.add_argument("--control")
    p.add_argument("--reset", action="store_true")
    p.add_argument("--parent", type=int)
    args = p.parse_args()
    st = State(args)
    if args.parent:
        threading.Thread(target=watch_parent, args=(args.parent,), daemon=True).start()
    if args.late_hold and args.control:
        threading.Thread(target=st.watch_control, daemon=True).start()
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.listen, args.port))
    ls.listen(64)
    port = ls.getsockname()[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.port_file)
    sys.stdout.write("%d\n" % port)
    sys.stdout.flush()
    while True:
        c, _ = ls.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(c, st), daemon=True).start()


if __name__ == "__main__":
    main()
