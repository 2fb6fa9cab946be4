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

/* Scan a lock listing (the whole /proc/locks, or one fdinfo file). */
static int ar_scan_locks(FILE *f, dev_t dev, ino_t ino, const char *kind,
                         int mode, int64_t start, int64_t length,
                         ar_lockline *found)
{
    char line[512];
    while (fgets(line, sizeof line, f)) {
        const char *p = line;
        if (strncmp(p, "lock:", 5) == 0)      /* fdinfo prefixes its lines */
            p += 5;
        if (ar_parse_lockline(p, found) &&
            ar_lockline_matches(found, dev, ino, kind, mode, start, length))
            return 1;
    }
    return 0;
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

/* One process's descriptors: does any of them own the lock? */
static int ar_scan_process(const char *pid, dev_t dev, ino_t ino,
                           const char *kind, int mode, int64_t start,
                           int64_t length, ar_lockline *found)
{
    char dir[64], path[64 + 256 + 2];
    struct dirent *e;
    DIR *d;
    int hit = 0;

    snprintf(dir, sizeof dir, "/proc/%.20s/fdinfo", pid);
    d = opendir(dir);
    if (!d)
        return 0;
    while (!hit && (e = readdir(d)) != NULL) {
        if (!ar_is_number(e->d_name))
            continue;
        snprintf(path, sizeof path, "%s/%.255s", dir, e->d_name);
        hit = ar_scan_file(path, dev, ino, kind, mode, start, length, found);
    }
    closedir(d);
    return hit;
}

/* pid of the process holding the description behind an OFD lock. */
static long ar_find_ofd_owner(dev_t dev, ino_t ino, int mode, int64_t start,
                              int64_t length)
{
    struct dirent *e;
    ar_lockline l;
    long pid = 0;
    DIR *d = opendir("/proc");

    if (!d)
        return 0;
    while (!pid && (e = readdir(d)) != NULL)
        if (ar_is_number(e->d_name) &&
            ar_scan_process(e->d_name, dev, ino, "OFDLCK", mode, start,
                            length, &l))
            pid = strtol(e->d_name, NULL, 10);
    closedir(d);
    return pid;
}

int ar_find_holder(dev_t dev, ino_t ino, const char *kind, int mode,
                   int64_t start, int64_t length, atomrun_holder *h)
{
    ar_lockline l;
    long pid;

    if (!ar_scan_file("/proc/locks", dev, ino, kind, mode, start, length, &l))
        return 0;
    pid = l.pid;
    if (pid <= 0 && strcmp(kind, "OFDLCK") == 0)
        pid = ar_find_ofd_owner(dev, ino, mode, l.start,
                                l.end == -1 ? 0 : l.end - l.start + 1);
    ar_fill_holder(h, &l, pid);
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
