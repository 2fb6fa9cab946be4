/*
 * core/procinfo.c -- facts about a process, read from /proc: when it
 * started, whether it is alive, its command line as holder text, and the
 * terminal escape that every holder text goes through.
 *
 * A room of its own because these are facts about a process, not about
 * locks: the holder search (core/holder.c), the classic-lock holder of
 * core/lock.c and the etcd lock's holder records (etcd/lock.c) all use
 * them.  Two rules hold throughout: a process may be gone at any moment,
 * so every reader answers "unknown" (0, "") rather than failing; and
 * another user chose the bytes of its command line, so they reach a
 * terminal only through ar_escape.
 */
#define _GNU_SOURCE
#include "core/internal.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

ssize_t ar_read_at(int dirfd, const char *name, char *buf, size_t size)
{
    ssize_t n, got = 0;
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    while ((size_t)got < size - 1 &&
           (n = read(fd, buf + got, size - 1 - (size_t)got)) > 0)
        got += n;
    close(fd);
    buf[got] = '\0';
    return got;
}

/*
 * Read through one open file, never reopened: a /proc file of one record
 * (an fdinfo, whose "lock:" lines are written in one go under the inode's
 * lock) is generated whole at the first read(2) and handed out from that
 * one snapshot by the reads after it, so however long it is, the text is
 * of one moment.  Reopening to retry with a bigger buffer would be
 * another moment.
 */
char *ar_read_whole_at(int dirfd, const char *name, char *buf, size_t size)
{
    char *v = buf, *more;
    size_t got = 0, cap = size;
    ssize_t n;
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return NULL;
    for (;;) {
        if (got == cap - 1) {
            more = malloc(cap * 2);
            if (!more)
                break;             /* keep what fits: the caller's buf */
            memcpy(more, v, got);
            if (v != buf)
                free(v);
            v = more;
            cap *= 2;
        }
        n = read(fd, v + got, cap - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    v[got] = '\0';
    return v;
}

int ar_pid_alive(pid_t pid)
{
    char path[64], buf[512], *p;
    ssize_t n;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    n = ar_read_at(AT_FDCWD, path, buf, sizeof buf);
    if (n <= 0 || !(p = strrchr(buf, ')')))
        return 0;
    /* a zombie holds nothing, and counts as dead */
    return p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* Seconds since the epoch when pid started: /proc/PID/stat's starttime
 * (clock ticks after boot) plus /proc/stat's btime.  0 when unknown. */
int64_t ar_start_time(pid_t pid)
{
    /* Boot time never changes: threads that race to read it first all
     * store the same value, but the store must still be atomic. */
    static _Atomic long long boot_time;
    long long btime = atomic_load_explicit(&boot_time, memory_order_relaxed);
    char path[64], buf[1024], *p;
    unsigned long long ticks;
    long hz = sysconf(_SC_CLK_TCK);

    if (!btime) {
        char st[8192];
        const char *b;
        if (ar_read_at(AT_FDCWD, "/proc/stat", st, sizeof st) > 0 &&
            (b = strstr(st, "\nbtime ")) != NULL) {
            btime = atoll(b + 7);
            atomic_store_explicit(&boot_time, btime, memory_order_relaxed);
        }
    }
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (!btime || hz <= 0 || ar_read_at(AT_FDCWD, path, buf, sizeof buf) <= 0 ||
        !(p = strrchr(buf, ')')))
        return 0;
    /* after "pid (comm)": state is field 3, starttime field 22 */
    p += 2;
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p, ' ');
        if (p)
            p++;
    }
    if (!p || sscanf(p, "%llu", &ticks) != 1)
        return 0;
    return (int64_t)(btime + (long long)(ticks / (unsigned long long)hz));
}

/*
 * s[0..n) into out, escaped for a terminal: another user chose these
 * bytes, and a raw ESC (or a C1 control, or a newline) would let them
 * rewrite our output.  Controls become \n \t \r \e \xHH; bytes that are not
 * valid UTF-8 become \xHH; a backslash stays as it is.
 */
size_t ar_escape(char *out, size_t size, const unsigned char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < size;) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2
                   : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        int ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++)
            ok = (s[i + k] & 0xc0) == 0x80;
        /* U+0080..U+009F (C1 controls) and overlong forms: escape too */
        if (ok && len == 2 && (c < 0xc2 || (c == 0xc2 && s[i + 1] < 0xa0)))
            ok = 0;
        if (ok && len == 1 && c >= 0x20 && c != 0x7f) {
            out[o++] = (char)c;
            i++;
        } else if (ok && len > 1) {
            if (o + len + 1 >= size)
                break;
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        } else {
            const char *e = c == '\n' ? "\\n" : c == '\t' ? "\\t"
                          : c == '\r' ? "\\r" : c == 0x1b ? "\\e" : NULL;
            o += e ? (size_t)snprintf(out + o, size - o, "%s", e)
                   : (size_t)snprintf(out + o, size - o, "\\x%02x", c);
            i++;
        }
    }
    out[o] = '\0';
    return o;
}

/*
 * Raw, because the callers differ in what comes after: a holder's text is
 * escaped and cut (ar_holder_cmd), while an etcd lock record's has its
 * credentials stripped first (etcd/lock.c) -- a cut made before that could
 * leave half a password behind a URL whose "@" fell past the cut.  pid 0
 * reads /proc/self, which names this process even where /proc/getpid()
 * would not (a /proc mounted from another pid namespace).
 */
size_t ar_cmdline(pid_t pid, char *buf, size_t size)
{
    char path[64];
    ssize_t n;
    size_t len;
    int fd;

    buf[0] = '\0';
    if (pid == 0)
        snprintf(path, sizeof path, "/proc/self/cmdline");
    else
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, size - 1);
    close(fd);
    if (n <= 0) {
        buf[0] = '\0';
        return 0;
    }
    buf[n] = '\0';
    /* argv[0] by its basename, then the arguments, space-separated:
     * "atomrun backup.lua", "flock /var/lock/x sleep 60". */
    char *argv0 = buf, *slash = strrchr(buf, '/');
    size_t len0 = strlen(buf);
    if (slash)
        argv0 = slash + 1;
    for (ssize_t i = (ssize_t)len0; i < n - 1; i++)
        if (buf[i] == '\0')
            buf[i] = ' ';
    len = strlen(argv0);
    while (len > 0 && argv0[len - 1] == ' ')
        len--;             /* the space left by the list's final NUL */
    memmove(buf, argv0, len);
    buf[len] = '\0';
    return len;
}

void ar_holder_cmd(pid_t pid, char *buf, size_t size)
{
    char raw[512];
    size_t len = ar_cmdline(pid, raw, sizeof raw);

    len = ar_escape(buf, size, (const unsigned char *)raw, len);
    /* Long command lines are cut: the message must stay one line. */
    if (len > 72 && size > 76) {
        size_t cut = 69;
        while (cut > 0 && ((unsigned char)buf[cut] & 0xc0) == 0x80)
            cut--;         /* not inside a UTF-8 sequence */
        memcpy(buf + cut, "...", 4);
    }
}
