/*
 * holder.c -- who holds a lock.
 *
 * The kernel lists every lock in /proc/locks:
 *
 *     1: FLOCK  ADVISORY  WRITE 4121 fe:00:10952846 0 EOF
 *     2: OFDLCK ADVISORY  READ  -1 fe:00:10952846 10 14
 *     3: POSIX  ADVISORY  WRITE 5678 08:01:9999 1073741824 1073741825
 *
 * The trap: open-file-description locks belong to a file description, not a
 * process, so the kernel prints pid -1 for them (and F_OFD_GETLK says -1
 * too).  The description is still open in some process, and that process's
 * /proc/PID/fdinfo/FD lists the same lock line; so for OFD locks we search
 * the fdinfo of every process we are allowed to read.  Another user's
 * processes stay hidden unless we are root: then the pid is 0 (unknown).
 */
#define _GNU_SOURCE
#include "ar_internal.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

typedef struct ar_lockline {
    char    kind[8];         /* FLOCK, OFDLCK, POSIX, ... */
    int     write;           /* WRITE (1) or READ (0) */
    long    pid;
    unsigned maj, min;
    unsigned long long ino;
    int64_t start, end;      /* end -1: EOF */
} ar_lockline;

/* Parse "N: KIND ADVISORY RW PID MAJ:MIN:INO START END"; skip waiters
 * ("N: -> KIND ..."), which hold nothing. */
static int ar_parse_lockline(const char *line, ar_lockline *l)
{
    char adv[16], rw[16], end[32];
    long long start;
    const char *p = strchr(line, ':');

    if (!p || strstr(line, "->"))
        return 0;
    if (sscanf(p + 1, "%7s %15s %15s %ld %x:%x:%llu %lld %31s", l->kind, adv,
               rw, &l->pid, &l->maj, &l->min, &l->ino, &start, end) != 9)
        return 0;
    l->write = strcmp(rw, "WRITE") == 0;
    l->start = start;
    l->end = strcmp(end, "EOF") == 0 ? -1 : strtoll(end, NULL, 10);
    return 1;
}

static int ar_lockline_matches(const ar_lockline *l, dev_t dev, ino_t ino,
                               const char *kind, int mode,
                               int64_t start, int64_t length)
{
    int64_t end = length == 0 ? -1 : start + length - 1;

    if (l->maj != major(dev) || l->min != minor(dev) || l->ino != ino)
        return 0;
    if (strcmp(l->kind, kind) != 0)
        return 0;
    if (mode == ATOMRUN_SHARED && !l->write)
        return 0;                        /* readers do not exclude readers */
    if (l->end != -1 && l->end < start)
        return 0;
    if (end != -1 && l->start > end)
        return 0;
    return 1;
}

static void ar_fill_holder(atomrun_holder *h, const ar_lockline *l, long pid)
{
    memset(h, 0, sizeof *h);
    h->pid = pid > 0 ? (pid_t)pid : 0;
    h->mode = l->write ? ATOMRUN_EXCLUSIVE : ATOMRUN_SHARED;
    h->start = l->start;
    h->length = l->end == -1 ? 0 : l->end - l->start + 1;
    snprintf(h->kind, sizeof h->kind, "%s",
             strcmp(l->kind, "FLOCK") == 0 ? "flock"
             : strcmp(l->kind, "OFDLCK") == 0 ? "ofd" : "posix");
    if (h->pid)
        ar_holder_cmd(h->pid, h->cmd, sizeof h->cmd);
}

/* Scan a lock listing (the whole /proc/locks, or one fdinfo file).  A
 * conflicting lock of another process is preferred to one of our own (a
 * shared lock we hold elsewhere in this process also conflicts with our
 * exclusive request, but the caller wants to hear about the other one). */
static int ar_scan_locks(FILE *f, dev_t dev, ino_t ino, const char *kind,
                         int mode, int64_t start, int64_t length,
                         ar_lockline *found)
{
    char line[512];
    ar_lockline l, own;
    int have_own = 0;
    while (fgets(line, sizeof line, f)) {
        const char *p = line;
        if (strncmp(p, "lock:", 5) == 0)      /* fdinfo prefixes its lines */
            p += 5;
        if (!ar_parse_lockline(p, &l) ||
            !ar_lockline_matches(&l, dev, ino, kind, mode, start, length))
            continue;
        if (l.pid != (long)getpid()) {
            *found = l;
            return 1;
        }
        if (!have_own) {
            own = l;
            have_own = 1;
        }
    }
    if (have_own)
        *found = own;
    return have_own;
}

static int ar_scan_file(const char *path, dev_t dev, ino_t ino,
                        const char *kind, int mode, int64_t start,
                        int64_t length, ar_lockline *found)
{
    FILE *f = fopen(path, "re");
    int hit;
    if (!f)
        return 0;
    hit = ar_scan_locks(f, dev, ino, kind, mode, start, length, found);
    fclose(f);
    return hit;
}

static int ar_is_number(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return 0;
    return 1;
}

int ar_find_holder(dev_t dev, ino_t ino, const char *kind, int mode,
                   int64_t start, int64_t length, atomrun_holder *h)
{
    ar_lockline l;

    if (!ar_scan_file("/proc/locks", dev, ino, kind, mode, start, length, &l))
        return 0;
    /* pid -1 here is an OFD lock: see ar_find_ofd_holder for those. */
    ar_fill_holder(h, &l, l.pid);
    return 1;
}

/* Does this fdinfo listing hold exactly that OFD lock? */
static int ar_fdinfo_holds(const char *path, dev_t dev, ino_t ino, int write,
                           int64_t start, int64_t end)
{
    char line[512];
    ar_lockline l;
    int hit = 0;
    FILE *f = fopen(path, "re");

    if (!f)
        return 0;
    while (!hit && fgets(line, sizeof line, f))
        hit = strncmp(line, "lock:", 5) == 0 &&
              ar_parse_lockline(line + 5, &l) &&
              strcmp(l.kind, "OFDLCK") == 0 && l.maj == major(dev) &&
              l.min == minor(dev) && l.ino == ino && l.write == write &&
              l.start == start && l.end == end;
    fclose(f);
    return hit;
}

/*
 * The process behind the OFD lock F_OFD_GETLK reported (pid -1): the one
 * whose fdinfo lists exactly that lock.  Never the asking descriptor
 * self_fd: it may hold an identical shared lock, which does not conflict
 * with its own request, and /proc/locks cannot tell the two apart.
 */
int ar_find_ofd_holder(int self_fd, dev_t dev, ino_t ino, int mode,
                       int64_t start, int64_t length, atomrun_holder *h)
{
    char dir[64], path[64 + 256 + 2];
    long self = (long)getpid(), pid = 0;
    int64_t end = length == 0 ? -1 : start + length - 1;
    int write = mode == ATOMRUN_EXCLUSIVE;
    struct dirent *e, *fe;
    DIR *proc = opendir("/proc"), *d;

    if (!proc)
        return 0;
    while (!pid && (e = readdir(proc)) != NULL) {
        if (!ar_is_number(e->d_name))
            continue;
        /* Only descriptors of this very file are worth reading the fdinfo
         * of: one stat of the /proc/PID/fd link each, where reading every
         * fdinfo (sockets, epoll, ...) took 20 ms for 900 descriptors. */
        snprintf(dir, sizeof dir, "/proc/%.20s/fd", e->d_name);
        d = opendir(dir);
        if (!d)
            continue;
        while (!pid && (fe = readdir(d)) != NULL) {
            struct stat st;
            if (!ar_is_number(fe->d_name))
                continue;
            if (strtol(e->d_name, NULL, 10) == self &&
                strtol(fe->d_name, NULL, 10) == self_fd)
                continue;
            if (fstatat(dirfd(d), fe->d_name, &st, 0) != 0 ||
                st.st_dev != dev || st.st_ino != ino)
                continue;
            snprintf(path, sizeof path, "/proc/%.20s/fdinfo/%.255s",
                     e->d_name, fe->d_name);
            if (ar_fdinfo_holds(path, dev, ino, write, start, end))
                pid = strtol(e->d_name, NULL, 10);
        }
        closedir(d);
    }
    closedir(proc);
    if (!pid)
        return 0;
    memset(h, 0, sizeof *h);
    h->pid = (pid_t)pid;
    h->mode = mode;
    h->start = start;
    h->length = length;
    snprintf(h->kind, sizeof h->kind, "ofd");
    ar_holder_cmd(h->pid, h->cmd, sizeof h->cmd);
    return 1;
}

void ar_holder_cmd(pid_t pid, char *buf, size_t size)
{
    char path[64], raw[512];
    ssize_t n;
    int fd;

    buf[0] = '\0';
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    n = read(fd, raw, sizeof raw - 1);
    close(fd);
    if (n <= 0)
        return;
    raw[n] = '\0';
    /* argv[0] by its basename, then the arguments, space-separated:
     * "atomrun backup.lua", "flock /var/lock/x sleep 60". */
    char *argv0 = raw, *slash = strrchr(raw, '/');
    size_t len0 = strlen(raw);
    if (slash)
        argv0 = slash + 1;
    for (ssize_t i = (ssize_t)len0; i < n - 1; i++)
        if (raw[i] == '\0')
            raw[i] = ' ';
    /* Long command lines are cut: the message must stay one line. */
    if (strlen(argv0) > 72 && size > 76)
        memcpy(argv0 + 69, "...", 4);
    snprintf(buf, size, "%s", argv0);
    /* Trim a trailing space left by the final NUL of the argument list. */
    size_t bl = strlen(buf);
    while (bl > 0 && buf[bl - 1] == ' ')
        buf[--bl] = '\0';
}
