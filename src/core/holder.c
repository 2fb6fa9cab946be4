/*
 * core/holder.c -- who holds a lock, and who waits for it.
 *
 * The kernel lists every lock in /proc/locks, waiters after their blocker:
 *
 *     1: FLOCK  ADVISORY  WRITE 4121 fe:00:10952846 0 EOF
 *     1: -> FLOCK  ADVISORY  WRITE 4130 fe:00:10952846 0 EOF
 *     2: OFDLCK ADVISORY  READ  -1 fe:00:10952846 10 14
 *     3: POSIX  ADVISORY  WRITE 5678 08:01:9999 1073741824 1073741825
 *
 * The traps, both because flock and OFD locks belong to an open file
 * description, not to a process:
 *   - the pid of a FLOCK line is whoever TOOK the lock.  That process may
 *     have died long ago while its child (a command, a daemon) keeps the
 *     description open and so keeps the lock; the pid may even belong to
 *     an unrelated process by now.
 *   - OFD locks print pid -1 (and F_OFD_GETLK says -1 too).
 * Either way the live holder is a process that has the description open
 * now, and the kernel lists the description's locks in that process's
 * /proc/PID/fdinfo/FD ("lock:" lines, the same text as /proc/locks).  So
 * the holder is the first process found with a descriptor of the file whose
 * fdinfo shows the lock.  A POSIX lock belongs to its process and dies
 * with it: its pid is the holder.  Another user's processes stay hidden
 * unless we are root: then the holder is unknown (pid 0), never a guess.
 *
 * Cost: a search looks at descriptors one by one (one fstatat of the
 * /proc/PID/fd link each; the fdinfo is read only for descriptors of the
 * very file), the processes /proc/locks names first, then the others
 * starting just above the taker's pid (a forked child usually has a higher
 * pid).  A hard budget (AR_SCAN_FDS descriptors, AR_SCAN_CPU_SECONDS of
 * this thread's CPU) ends a search on a host with very many descriptors:
 * the holder is then unknown.
 */
#define _GNU_SOURCE
#include "core/internal.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define AR_SCAN_FDS          100000
#define AR_SCAN_CPU_SECONDS  0.25
#define AR_SCAN_WALL_SECONDS 5.0

typedef struct ar_lockline {
    char    kind[8];         /* FLOCK, OFDLCK, POSIX, ... */
    int     write;           /* WRITE (1) or READ (0) */
    int     waiter;          /* a "->" line: waits, holds nothing */
    long    pid;
    unsigned maj, min;
    unsigned long long ino;
    int64_t start, end;      /* end -1: EOF */
} ar_lockline;

/* Parse "N: [-> ]KIND ADVISORY RW PID MAJ:MIN:INO START END" (the text
 * after an fdinfo "lock:" prefix too). */
static int parse_lockline(const char *line, ar_lockline *l)
{
    char adv[16], rw[16], end[32];
    long long start;
    const char *p = strchr(line, ':'), *arrow;

    if (!p)
        return 0;
    p++;
    arrow = strstr(p, "->");
    l->waiter = arrow != NULL;
    if (arrow)
        p = arrow + 2;
    if (sscanf(p, "%7s %15s %15s %ld %x:%x:%llu %lld %31s", l->kind, adv,
               rw, &l->pid, &l->maj, &l->min, &l->ino, &start, end) != 9)
        return 0;
    l->write = strcmp(rw, "WRITE") == 0;
    l->start = start;
    l->end = strcmp(end, "EOF") == 0 ? -1 : strtoll(end, NULL, 10);
    return 1;
}

static int line_is_file(const ar_lockline *l, dev_t dev, ino_t ino)
{
    return l->maj == major(dev) && l->min == minor(dev) && l->ino == ino;
}

/* Does lock line l conflict with a request (kind, mode, range)? */
static int line_conflicts(const ar_lockline *l, const char *kind, int mode,
                          int64_t start, int64_t length)
{
    int64_t end = length == 0 ? -1 : start + length - 1;

    if (l->waiter || strcmp(l->kind, kind) != 0)
        return 0;
    if (mode == ATOMRUN_SHARED && !l->write)
        return 0;                        /* readers do not exclude readers */
    if (l->end != -1 && l->end < start)
        return 0;
    if (end != -1 && l->start > end)
        return 0;
    return 1;
}

/* The same lock (as fdinfo prints a line of /proc/locks)? */
static int line_same(const ar_lockline *a, const ar_lockline *b)
{
    return strcmp(a->kind, b->kind) == 0 && a->write == b->write &&
           a->pid == b->pid && a->start == b->start && a->end == b->end;
}

/* One pass over /proc/locks: its lines about (dev, ino); see below. */
static int read_locks_once(dev_t dev, ino_t ino, ar_lockline **out)
{
    char line[512];
    ar_lockline l, *v = NULL;
    int n = 0, cap = 0;
    FILE *f = fopen("/proc/locks", "re");

    *out = NULL;
    if (!f)
        return -errno;
    while (fgets(line, sizeof line, f)) {
        if (!parse_lockline(line, &l) || !line_is_file(&l, dev, ino))
            continue;
        if (n == cap) {
            ar_lockline *more = realloc(v, sizeof *v * (size_t)(cap = cap * 2 + 8));
            if (!more) {
                free(v);
                fclose(f);
                return -ENOMEM;
            }
            v = more;
        }
        v[n++] = l;
    }
    fclose(f);
    *out = v;
    return n;
}

static int same_lines(const ar_lockline *a, const ar_lockline *b, int n)
{
    for (int i = 0; i < n; i++)
        if (!line_same(&a[i], &b[i]) || a[i].waiter != b[i].waiter)
            return 0;
    return 1;
}

/* How many lines of v[0..n) read the same as l. */
static int count_same(const ar_lockline *v, int n, const ar_lockline *l)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += line_same(&v[i], l) && v[i].waiter == l->waiter;
    return k;
}

static int median3(int a, int b, int c)
{
    if (a > b) { int t = a; a = b; b = t; }
    if (b > c) b = c;
    return a > b ? a : b;
}

/*
 * Every line of /proc/locks about (dev, ino), holders and waiters, in the
 * kernel's order; malloc'd.  -errno, or the count.
 *
 * A trap: /proc/locks is a seq_file that the kernel fills a page per
 * read(2), dropping its lock between pages and finding its place again by
 * position.  When other processes take or release locks meanwhile (anywhere
 * on the system: the table is global), a table longer than a page comes
 * back with lines skipped or repeated — 298 or 302 of a file's 300 locks.
 * The table is read again until two passes in a row agree (each pass takes
 * a few microseconds per lock, and churn that tears two passes the same way
 * is rare); if none do within AR_LOCKS_PASSES, each distinct line is kept
 * as many times as the median of the last three passes has it: a line one
 * pass skipped or repeated counts right, as long as no two of them tore at
 * the same place.
 */
#define AR_LOCKS_PASSES 12
static int read_locks(dev_t dev, ino_t ino, ar_lockline **out)
{
    ar_lockline *v[3] = { NULL, NULL, NULL }, *res;
    int n[3] = { 0, 0, 0 }, total = 0, got = 0, r = 0;

    *out = NULL;
    /* v[2] is the newest pass; stop as soon as it agrees with v[1]. */
    for (int pass = 0; pass < AR_LOCKS_PASSES; pass++) {
        free(v[0]);
        v[0] = v[1], n[0] = n[1];
        v[1] = v[2], n[1] = n[2];
        v[2] = NULL;
        n[2] = read_locks_once(dev, ino, &v[2]);
        if (n[2] < 0) {
            r = n[2];
            goto done;
        }
        if (pass > 0 && n[1] == n[2] && same_lines(v[1], v[2], n[2])) {
            *out = v[2];
            v[2] = NULL;
            r = n[1];
            goto done;
        }
    }
    total = n[0] + n[1] + n[2];
    res = malloc(sizeof *res * (size_t)(total ? total : 1));
    if (!res) {
        r = -ENOMEM;
        goto done;
    }
    /* In the order of first appearance, each line up to its median count. */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < n[i]; j++) {
            const ar_lockline *l = &v[i][j];
            int want = median3(count_same(v[0], n[0], l),
                               count_same(v[1], n[1], l),
                               count_same(v[2], n[2], l));
            if (count_same(res, got, l) < want)
                res[got++] = *l;
        }
    *out = res;
    r = got;
done:
    for (int i = 0; i < 3; i++)
        free(v[i]);
    return r;
}

/* ----------------------------------------------------- the bounded search */

typedef struct ar_scan ar_scan;
/* Called for each descriptor (pid, fd) of the file with its fdinfo text;
 * nonzero ends the search. */
typedef int (*ar_visit_fn)(ar_scan *s, pid_t pid, int fd, const char *info);

struct ar_scan {
    dev_t       dev;
    ino_t       ino;
    pid_t       self;
    int         self_fd;       /* the asking descriptor, or -1 */
    long        looked;        /* descriptors looked at */
    double      cpu_deadline, wall_deadline;
    int         over;          /* the budget ran out */
    ar_visit_fn visit;
    void       *ctx;
};

/* This thread's CPU seconds. */
static double thread_cpu(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return atomrun_now();
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * The budget is the search's own work (CPU time), not the wall clock: on a
 * loaded machine (a busy build, a sanitizer run beside a kill storm) a
 * search of a few milliseconds' work can wait a quarter of a second for
 * the CPU, and a wall-clock budget then answered "holder unknown" for a
 * holder that was there all along -- a wrong answer because the machine
 * was busy.  The wall-clock cap is only the backstop for a search that
 * makes no progress at all.
 */
static int scan_overdue(const ar_scan *s)
{
    return thread_cpu() > s->cpu_deadline ||
           atomrun_now() > s->wall_deadline;
}

static void scan_init(ar_scan *s, dev_t dev, ino_t ino, int self_fd,
                      ar_visit_fn visit, void *ctx)
{
    memset(s, 0, sizeof *s);
    s->dev = dev;
    s->ino = ino;
    s->self = getpid();
    s->self_fd = self_fd;
    s->cpu_deadline = thread_cpu() + AR_SCAN_CPU_SECONDS;
    s->wall_deadline = atomrun_now() + AR_SCAN_WALL_SECONDS;
    s->visit = visit;
    s->ctx = ctx;
}

static int is_number(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return 0;
    return 1;
}

/* The same open file description as our asking descriptor (a child that
 * inherited it, or a dup)?  It holds no lock that conflicts with our own
 * request, whatever its fdinfo shows. */
static int is_asker(const ar_scan *s, pid_t pid, int fd)
{
    if (s->self_fd < 0)
        return 0;
    if (pid == s->self && fd == s->self_fd)
        return 1;
    return syscall(SYS_kcmp, s->self, pid, KCMP_FILE, s->self_fd, fd) == 0;
}

static ssize_t read_at(int dirfd, const char *name, char *buf, size_t size)
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
 * Is the descriptor named `name` in the /proc/PID/fd directory dirfd a
 * descriptor of (dev, ino)?  statx with AT_STATX_DONT_SYNC, not a plain
 * stat: another process's descriptor may be a file on a dead NFS server,
 * and a stat that asks the server would hang the holder lookup (and the
 * busy message) with it; the identity needs no fresh attributes.
 */
static int same_file(int dirfd, const char *name, dev_t dev, ino_t ino)
{
    struct statx sx;
    if (statx(dirfd, name, AT_STATX_DONT_SYNC, STATX_INO, &sx) != 0)
        return 0;
    return sx.stx_ino == (uint64_t)ino &&
           makedev(sx.stx_dev_major, sx.stx_dev_minor) == dev;
}

/* Look at every descriptor of pid; 1 when visit ended the search, -1 when
 * the budget did. */
static int scan_pid(ar_scan *s, pid_t pid)
{
    char name[32], info[8192];
    int pdir, fdir, stop = 0;
    DIR *d;
    struct dirent *e;

    snprintf(name, sizeof name, "/proc/%d", (int)pid);
    /* Everything through this directory: a pid reused mid-search cannot
     * mix two processes' descriptors. */
    pdir = open(name, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (pdir < 0)
        return 0;
    fdir = openat(pdir, "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fdir < 0 || !(d = fdopendir(fdir))) {
        if (fdir >= 0)
            close(fdir);
        close(pdir);
        return 0;                      /* gone, or another user's */
    }
    while (!stop && (e = readdir(d)) != NULL) {
        if ((e->d_type != DT_LNK && e->d_type != DT_UNKNOWN) ||
            !is_number(e->d_name))
            continue;
        if (++s->looked > AR_SCAN_FDS ||
            ((s->looked & 63) == 0 && scan_overdue(s))) {
            s->over = 1;
            stop = -1;
            break;
        }
        if (!same_file(dirfd(d), e->d_name, s->dev, s->ino))
            continue;
        int fd = atoi(e->d_name);
        if (is_asker(s, pid, fd))
            continue;
        snprintf(name, sizeof name, "fdinfo/%d", fd);
        if (read_at(pdir, name, info, sizeof info) < 0)
            continue;
        if (s->visit(s, pid, fd, info))
            stop = 1;
    }
    closedir(d);
    close(pdir);
    return stop;
}

static int pid_cmp(const void *a, const void *b)
{
    pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
    return (x > y) - (x < y);
}

static int listed(pid_t pid, const pid_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == pid)
            return 1;
    return 0;
}

/*
 * The search: first the pids in first[] (those /proc/locks names), then
 * every other process in pid order starting just above `after`, wrapping
 * around, and this process last (a conflicting lock of ours counts only
 * when nobody else's does).  1 when visit ended it, 0 when nothing did, -1
 * when the budget ran out.
 */
static int scan_run(ar_scan *s, const pid_t *first, size_t nfirst,
                    pid_t after)
{
    pid_t *pids = NULL;
    size_t n = 0, cap = 0, begin = 0;
    int r = 0, self_seen = 0;
    DIR *proc;
    struct dirent *e;

    for (size_t i = 0; i < nfirst && r == 0; i++) {
        if (first[i] <= 0 || first[i] == s->self ||
            listed(first[i], first, i))
            continue;
        r = scan_pid(s, first[i]);
    }
    if (r != 0)
        return r;
    proc = opendir("/proc");
    if (!proc)
        return 0;
    while ((e = readdir(proc)) != NULL) {
        if (e->d_type != DT_DIR || !is_number(e->d_name))
            continue;
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid == s->self) {
            self_seen = 1;
            continue;
        }
        if (listed(pid, first, nfirst))
            continue;
        if (n == cap) {
            pid_t *more = realloc(pids, sizeof *pids * (cap = cap * 2 + 256));
            if (!more)
                break;
            pids = more;
        }
        pids[n++] = pid;
    }
    closedir(proc);
    if (n)
        qsort(pids, n, sizeof *pids, pid_cmp);
    while (begin < n && pids[begin] <= after)
        begin++;
    for (size_t k = 0; k < n && r == 0; k++)
        r = scan_pid(s, pids[(begin + k) % n]);
    free(pids);
    if (r == 0 && self_seen)
        r = scan_pid(s, s->self);
    return r;
}

/* ---------------------------------------------------------- one holder */

typedef struct ar_want {
    /* conflict mode: kind/mode/start/length; exact mode: line */
    const char *kind;
    int         mode;
    int64_t     start, length;
    const ar_lockline *exact;
    pid_t       pid;           /* OUT */
    ar_lockline found;         /* OUT */
} ar_want;

static int visit_want(ar_scan *s, pid_t pid, int fd, const char *info)
{
    ar_want *w = s->ctx;
    ar_lockline l;
    (void)fd;
    for (const char *p = info; (p = strstr(p, "lock:")) != NULL; p += 5) {
        if (!parse_lockline(p + 5, &l) || !line_is_file(&l, s->dev, s->ino))
            continue;
        if (w->exact ? line_same(&l, w->exact)
                     : line_conflicts(&l, w->kind, w->mode, w->start,
                                      w->length)) {
            w->pid = pid;
            w->found = l;
            return 1;
        }
    }
    return 0;
}

static int pid_alive(pid_t pid)
{
    char path[64], buf[512], *p;
    ssize_t n;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    n = read_at(AT_FDCWD, path, buf, sizeof buf);
    if (n <= 0 || !(p = strrchr(buf, ')')))
        return 0;
    /* a zombie holds nothing, and counts as dead */
    return p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static void fill_holder(atomrun_holder *h, const ar_lockline *l, pid_t pid)
{
    memset(h, 0, sizeof *h);
    h->pid = pid > 0 ? pid : 0;
    h->mode = l->write ? ATOMRUN_EXCLUSIVE : ATOMRUN_SHARED;
    h->start = l->start;
    h->length = l->end == -1 ? 0 : l->end - l->start + 1;
    snprintf(h->kind, sizeof h->kind, "%s",
             strcmp(l->kind, "FLOCK") == 0 ? "flock"
             : strcmp(l->kind, "OFDLCK") == 0 ? "ofd" : "posix");
    if (h->pid) {
        ar_holder_cmd(h->pid, h->cmd, sizeof h->cmd);
        h->since = ar_start_time(h->pid);
    }
}

/*
 * The last holder found, per thread: a script that retries a busy lock, or
 * asks again after a timeout, usually meets the same holder, and looking
 * at that one process first turns a search of the whole host into one of
 * a few descriptors.  Only an order: the search proves the holder anew.
 */
static _Thread_local struct { dev_t dev; ino_t ino; pid_t pid; } last_holder;

static pid_t hinted_pid(dev_t dev, ino_t ino)
{
    return last_holder.pid && last_holder.dev == dev && last_holder.ino == ino
           ? last_holder.pid : 0;
}

static void remember(dev_t dev, ino_t ino, pid_t pid)
{
    last_holder.dev = dev;
    last_holder.ino = ino;
    last_holder.pid = pid;
}

int ar_find_holder(int self_fd, dev_t dev, ino_t ino, const char *kind,
                   int mode, int64_t start, int64_t length, atomrun_holder *h)
{
    ar_lockline *lines, *first_line = NULL;
    pid_t *takers;
    size_t nt = 0;
    pid_t after = 0;
    int n = read_locks(dev, ino, &lines), r;
    ar_want w;
    ar_scan s;

    if (n <= 0)
        return 0;
    takers = malloc(sizeof *takers * (size_t)(n + 1));
    if (takers && hinted_pid(dev, ino))
        takers[nt++] = hinted_pid(dev, ino);
    for (int i = 0; i < n; i++) {
        if (!line_conflicts(&lines[i], kind, mode, start, length))
            continue;
        if (!first_line)
            first_line = &lines[i];
        /* A POSIX lock dies with its process: its pid is the holder. */
        if (strcmp(kind, "POSIX") == 0 && lines[i].pid > 0 &&
            lines[i].pid != getpid() && pid_alive((pid_t)lines[i].pid)) {
            fill_holder(h, &lines[i], (pid_t)lines[i].pid);
            free(takers);
            free(lines);
            return 1;
        }
        if (lines[i].pid > 0 && takers) {
            takers[nt++] = (pid_t)lines[i].pid;
            if (lines[i].pid > after)
                after = (pid_t)lines[i].pid;
        }
    }
    if (!first_line) {
        free(takers);
        free(lines);
        return 0;
    }
    memset(&w, 0, sizeof w);
    w.kind = kind;
    w.mode = mode;
    w.start = start;
    w.length = length;
    scan_init(&s, dev, ino, self_fd, visit_want, &w);
    r = scan_run(&s, takers, nt, after);
    /* Found: the live holder.  Not found (another user's, or the budget
     * ran out): the lock is there, its holder unknown -- never the
     * possibly dead pid of /proc/locks. */
    if (r == 1) {
        fill_holder(h, &w.found, w.pid);
        remember(dev, ino, w.pid);
    } else {
        fill_holder(h, first_line, 0);
    }
    free(takers);
    free(lines);
    return 1;
}

/*
 * The process behind the OFD lock F_OFD_GETLK reported (pid -1): one whose
 * fdinfo lists exactly that lock.  Never the asking descriptor self_fd (or
 * another descriptor of its description): it may hold an identical shared
 * lock, which does not conflict with its own request.
 */
int ar_find_ofd_holder(int self_fd, dev_t dev, ino_t ino, int mode,
                       int64_t start, int64_t length, atomrun_holder *h)
{
    ar_lockline want;
    ar_want w;
    ar_scan s;
    pid_t hint;

    memset(&want, 0, sizeof want);
    snprintf(want.kind, sizeof want.kind, "OFDLCK");
    want.write = mode == ATOMRUN_EXCLUSIVE;
    want.pid = -1;
    want.start = start;
    want.end = length == 0 ? -1 : start + length - 1;
    memset(&w, 0, sizeof w);
    w.exact = &want;
    scan_init(&s, dev, ino, self_fd, visit_want, &w);
    hint = hinted_pid(dev, ino);
    if (scan_run(&s, &hint, hint ? 1 : 0, 0) != 1)
        return 0;
    fill_holder(h, &w.found, w.pid);
    remember(dev, ino, w.pid);
    return 1;
}

/* Does pid hold some lock on the file?  (any held line in a fdinfo) */
static int visit_any(ar_scan *s, pid_t pid, int fd, const char *info)
{
    ar_lockline l;
    (void)pid;
    (void)fd;
    for (const char *p = info; (p = strstr(p, "lock:")) != NULL; p += 5)
        if (parse_lockline(p + 5, &l) && !l.waiter &&
            line_is_file(&l, s->dev, s->ino)) {
            *(int *)s->ctx = 1;
            return 1;
        }
    return 0;
}

int atomrun_pid_holds(pid_t pid, uint64_t dev, uint64_t ino)
{
    ar_scan s;
    int hit = 0;
    if (pid <= 0)
        return -EINVAL;
    scan_init(&s, (dev_t)dev, (ino_t)ino, -1, visit_any, &hit);
    scan_pid(&s, pid);
    if (hit)
        return 1;
    /* a POSIX lock shows in the fdinfo of the descriptor that set it only:
     * /proc/locks names its owner directly */
    ar_lockline *lines;
    int n = read_locks((dev_t)dev, (ino_t)ino, &lines);
    for (int i = 0; i < n && !hit; i++)
        hit = !lines[i].waiter && strcmp(lines[i].kind, "POSIX") == 0 &&
              lines[i].pid == (long)pid;
    free(lines);
    return hit;
}

/* ------------------------------------------------------- every lock: who */

/* A descriptor of the file, kept only to look for OFD waiters among them. */
typedef struct ar_seen {
    pid_t pid;
    int   fd;
    int   used;               /* named as a waiter already */
} ar_seen;

/*
 * The search of who(): each held FLOCK/OFD line of /proc/locks gets the
 * first process seen whose fdinfo shows that very lock (each shown lock
 * names one line: two shared locks the same pid took through two opens are
 * two lines, two holders).  Matching as we go keeps a file with thousands
 * of locks (a big semaphore) linear, and lets the search stop as soon as
 * every line has its holder.
 */
typedef struct ar_who {
    const ar_lockline *lines;
    int      nlines;
    pid_t   *owner;           /* per line: its holder, 0 not found (yet) */
    int      unmatched;       /* held FLOCK/OFD lines without an owner */
    int      need_all;        /* OFD waiters: keep every descriptor seen */
    ar_seen *seen;
    size_t   n, cap;
} ar_who;

static int who_needs_owner(const ar_lockline *l)
{
    return !l->waiter && (strcmp(l->kind, "FLOCK") == 0 ||
                          strcmp(l->kind, "OFDLCK") == 0);
}

static void who_claim(ar_who *w, const ar_lockline *l, pid_t pid)
{
    for (int i = 0; i < w->nlines; i++)
        if (!w->owner[i] && who_needs_owner(&w->lines[i]) &&
            line_same(&w->lines[i], l)) {
            w->owner[i] = pid;
            w->unmatched--;
            return;
        }
}

static int visit_who(ar_scan *s, pid_t pid, int fd, const char *info)
{
    ar_who *w = s->ctx;
    ar_lockline l;

    for (const char *p = info; (p = strstr(p, "lock:")) != NULL; p += 5)
        if (parse_lockline(p + 5, &l) && !l.waiter &&
            line_is_file(&l, s->dev, s->ino))
            who_claim(w, &l, pid);
    if (w->need_all) {
        if (w->n == w->cap) {
            ar_seen *more = realloc(w->seen,
                                    sizeof *more * (w->cap = w->cap * 2 + 16));
            if (!more)
                return 1;
            w->seen = more;
        }
        w->seen[w->n].pid = pid;
        w->seen[w->n].fd = fd;
        w->seen[w->n].used = 0;
        w->n++;
        return 0;
    }
    return w->unmatched == 0;
}

/* Is a thread of pid blocked in fcntl(fd, F_OFD_SETLKW)?  The only trace
 * an OFD waiter leaves: /proc/locks says pid -1 for it, and its fdinfo
 * lists held locks only.  Needs ptrace access to pid (ours, or root). */
static int ofd_waiting(pid_t pid, int fd)
{
    char path[64], buf[256];
    struct dirent *e;
    int hit = 0;
    DIR *d;

    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    if (!(d = opendir(path)))
        return 0;
    while (!hit && (e = readdir(d)) != NULL) {
        long nr;
        unsigned long a0, a1;
        if (!is_number(e->d_name))
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%.20s/syscall", (int)pid,
                 e->d_name);
        if (read_at(AT_FDCWD, path, buf, sizeof buf) <= 0)
            continue;
        hit = sscanf(buf, "%ld %lx %lx", &nr, &a0, &a1) == 3 &&
              nr == SYS_fcntl && a0 == (unsigned long)fd &&
              a1 == (unsigned long)F_OFD_SETLKW;
    }
    closedir(d);
    return hit;
}

static void who_fill(atomrun_lockinfo *out, const ar_lockline *l,
                     pid_t pid)
{
    fill_holder(&out->h, l, pid);
    out->waiting = l->waiter;
}

int atomrun_locks_on(uint64_t dev, uint64_t ino, atomrun_lockinfo **list)
{
    ar_lockline *lines;
    atomrun_lockinfo *out;
    pid_t *first, *owner;
    size_t nf = 0;
    pid_t after = 0;
    int n = read_locks((dev_t)dev, (ino_t)ino, &lines);
    ar_who w;
    ar_scan s;

    *list = NULL;
    if (n <= 0)
        return n;
    out = calloc((size_t)n, sizeof *out);
    first = malloc(sizeof *first * (size_t)n);
    owner = calloc((size_t)n, sizeof *owner);
    if (!out || !first || !owner) {
        free(out);
        free(first);
        free(owner);
        free(lines);
        return -ENOMEM;
    }
    memset(&w, 0, sizeof w);
    w.lines = lines;
    w.nlines = n;
    w.owner = owner;
    for (int i = 0; i < n; i++) {
        if (who_needs_owner(&lines[i]))
            w.unmatched++;
        if (lines[i].waiter && strcmp(lines[i].kind, "OFDLCK") == 0)
            w.need_all = 1;
        if (!lines[i].waiter && strcmp(lines[i].kind, "FLOCK") == 0 &&
            lines[i].pid > 0) {
            first[nf++] = (pid_t)lines[i].pid;
            if (lines[i].pid > after)
                after = (pid_t)lines[i].pid;
        }
    }
    scan_init(&s, (dev_t)dev, (ino_t)ino, -1, visit_who, &w);
    if (w.unmatched > 0 || w.need_all)
        scan_run(&s, first, nf, after);
    for (int i = 0; i < n; i++) {
        const ar_lockline *l = &lines[i];
        pid_t pid = owner[i];
        if (strcmp(l->kind, "POSIX") == 0 || (l->waiter &&
                                              strcmp(l->kind, "FLOCK") == 0)) {
            /* a POSIX lock's pid is its owner; a waiter's is the waiter */
            if (l->pid > 0 && pid_alive((pid_t)l->pid))
                pid = (pid_t)l->pid;
        } else if (l->waiter) {
            /* an OFD waiter: a process with the file open that waits in
             * F_OFD_SETLKW on that descriptor; each names one waiter */
            for (size_t k = 0; k < w.n && !pid; k++)
                if (!w.seen[k].used &&
                    ofd_waiting(w.seen[k].pid, w.seen[k].fd)) {
                    w.seen[k].used = 1;
                    pid = w.seen[k].pid;
                }
        }
        who_fill(&out[i], l, pid);
    }
    free(w.seen);
    free(owner);
    free(first);
    free(lines);
    *list = out;
    return n;
}

int atomrun_who(const char *path, atomrun_lockinfo **list)
{
    struct stat st;
    *list = NULL;
    if (!path)
        return -EINVAL;
    if (stat(path, &st) != 0)
        return -errno;
    return atomrun_locks_on(st.st_dev, st.st_ino, list);
}

/* ------------------------------------------------------- process facts */

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
        if (read_at(AT_FDCWD, "/proc/stat", st, sizeof st) > 0 &&
            (b = strstr(st, "\nbtime ")) != NULL) {
            btime = atoll(b + 7);
            atomic_store_explicit(&boot_time, btime, memory_order_relaxed);
        }
    }
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (!btime || hz <= 0 || read_at(AT_FDCWD, path, buf, sizeof buf) <= 0 ||
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
 * Append s[0..n) to out, escaped for a terminal: another user chose these
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

void ar_holder_cmd(pid_t pid, char *buf, size_t size)
{
    char path[64], raw[512];
    ssize_t n;
    size_t len;
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
    len = strlen(argv0);
    while (len > 0 && argv0[len - 1] == ' ')
        len--;             /* the space left by the list's final NUL */
    len = ar_escape(buf, size, (const unsigned char *)argv0, len);
    /* Long command lines are cut: the message must stay one line. */
    if (len > 72 && size > 76) {
        size_t cut = 69;
        while (cut > 0 && ((unsigned char)buf[cut] & 0xc0) == 0x80)
            cut--;         /* not inside a UTF-8 sequence */
        memcpy(buf + cut, "...", 4);
    }
}
