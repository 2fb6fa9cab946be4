/*
 * core/holder.c -- who holds a lock, and who waits for it: the bounded
 * search of /proc for the processes behind the lines of /proc/locks
 * (core/locktab.c), and the three questions put to it -- the one holder
 * that conflicts with a request (ar_find_holder, ar_find_ofd_holder), does
 * this pid hold a lock on the file (atomrun_pid_holds), and every lock on
 * the file with its holder or waiter (atomrun_locks_on, atomrun_who).
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
 * One search engine (scan_run, scan_pid) with a visit function per
 * question, because the questions differ only in what they look for in a
 * descriptor's fdinfo; the budget, the order and the care about reused pids
 * are then written once.
 *
 * Cost: a search looks at descriptors one by one (one statx of the file
 * behind each /proc/PID/fd link, with AT_STATX_DONT_SYNC so that a
 * descriptor on a dead NFS server cannot hang it; the fdinfo is read only
 * for descriptors of the very file), in this order: the last holder this
 * thread found (one-holder searches only), the pids /proc/locks names,
 * then every other process starting just above the highest of those (a
 * forked child usually has a higher pid), and this process last.  A
 * one-holder search stops at the holder; who()'s goes through the whole
 * of /proc, since it takes the held flock and OFD locks from the fdinfo
 * it finds and nothing it could trust says when it has them all.  A hard
 * budget (AR_SCAN_FDS descriptors, AR_SCAN_CPU_SECONDS of this thread's
 * CPU, AR_SCAN_WALL_SECONDS of wall clock as the backstop) ends a search
 * on a host with very many descriptors: the holder is then unknown.
 */
#define _GNU_SOURCE
#include "core/internal.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
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
        return ar_now();
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
           ar_now() > s->wall_deadline;
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
    s->wall_deadline = ar_now() + AR_SCAN_WALL_SECONDS;
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
    char name[32], buf[8192], *info;
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
        /* whole: one description's hundreds of OFD ranges pass 8 KiB */
        if (!(info = ar_read_whole_at(pdir, name, buf, sizeof buf)))
            continue;
        if (s->visit(s, pid, fd, info))
            stop = 1;
        if (info != buf)
            free(info);
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
        if (!ar_parse_lockline(p + 5, &l) || !ar_line_is_file(&l, s->dev, s->ino))
            continue;
        if (w->exact ? ar_line_same(&l, w->exact)
                     : ar_line_conflicts(&l, w->kind, w->mode, w->start,
                                         w->length)) {
            w->pid = pid;
            w->found = l;
            return 1;
        }
    }
    return 0;
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
    int n = ar_read_locks(dev, ino, &lines), r;
    ar_want w;
    ar_scan s;

    if (n <= 0)
        return 0;
    takers = malloc(sizeof *takers * (size_t)(n + 1));
    if (takers && hinted_pid(dev, ino))
        takers[nt++] = hinted_pid(dev, ino);
    for (int i = 0; i < n; i++) {
        if (!ar_line_conflicts(&lines[i], kind, mode, start, length))
            continue;
        if (!first_line)
            first_line = &lines[i];
        /* A POSIX lock dies with its process: its pid is the holder. */
        if (strcmp(kind, "POSIX") == 0 && lines[i].pid > 0 &&
            lines[i].pid != getpid() && ar_pid_alive((pid_t)lines[i].pid)) {
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
        if (ar_parse_lockline(p + 5, &l) && !l.waiter &&
            ar_line_is_file(&l, s->dev, s->ino)) {
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
    int n = ar_read_locks((dev_t)dev, (ino_t)ino, &lines);
    for (int i = 0; i < n && !hit; i++)
        hit = !lines[i].waiter && strcmp(lines[i].kind, "POSIX") == 0 &&
              lines[i].pid == (long)pid;
    free(lines);
    return hit;
}

/* ------------------------------------------------------- every lock: who */

/*
 * who() takes the HELD flock and OFD locks from their holders' fdinfo, not
 * from /proc/locks.  The trap: /proc/locks is a seq_file that the kernel
 * fills a page per read(2), finding its place again by position, so while
 * any process on the system takes or drops locks the table comes back with
 * lines skipped or repeated; ar_read_locks repairs most such reads, not
 * all (5 reads in 133 of a 300-lock file came back wrong under a kill
 * storm, a third of them under harder lock churn on other files).  A descriptor's fdinfo is written in one go
 * under the inode's lock: its "lock:" lines, every lock of that open file
 * description, are of one moment.  So each held flock/OFD lock is one that
 * a descriptor's fdinfo shows, named by the process that has that
 * descriptor, and /proc/locks is left to say what no fdinfo can: the
 * waiters, the classic POSIX locks (whose pid is their owner), and the
 * locks no visible descriptor shows (another user's; a description kept
 * only by an mmap or a descriptor in flight over a socket): holder unknown.
 */

/* A held flock or OFD lock, as a descriptor's fdinfo shows it. */
typedef struct ar_fdlock {
    ar_lockline line;
    pid_t       pid;          /* the process that has the descriptor */
    int         listed;       /* stands for a line of /proc/locks already */
} ar_fdlock;

/* One open file description's locks: w->locks[first..first+n). */
typedef struct ar_desc {
    size_t   first, n;
    unsigned sum;             /* of the lines: a quick first order */
    pid_t    pid;
    int      fd;
} ar_desc;

/* A descriptor of the file, kept only to look for OFD waiters among them. */
typedef struct ar_seen {
    pid_t pid;
    int   fd;
    int   used;               /* named as a waiter already */
} ar_seen;

#define AR_WHO_RECENT 8
typedef struct ar_who {
    ar_fdlock *locks;         /* each description's locks, once */
    size_t     nlocks, lockcap;
    ar_desc   *descs;
    size_t     ndescs, desccap;
    int        need_all;      /* OFD waiters: keep every descriptor seen */
    ar_seen   *seen;
    size_t     n, cap;
    int        nomem;
    atomrun_holder recent[AR_WHO_RECENT];  /* who_fill's last holders */
    size_t     nrecent;
} ar_who;

static int who_needs_owner(const ar_lockline *l)
{
    return !l->waiter && (strcmp(l->kind, "FLOCK") == 0 ||
                          strcmp(l->kind, "OFDLCK") == 0);
}

/* The lines who() takes from /proc/locks as they are: all but the held
 * flock and OFD locks, which fdinfo gives. */
static int who_from_table(const ar_lockline *l)
{
    return !who_needs_owner(l);
}

/* v (*cap elements of size each, n used) with room for one more: v, or
 * where realloc moved it; NULL when out of memory (v is still valid). */
static void *grow(void *v, size_t *cap, size_t n, size_t size)
{
    void *more;
    if (n < *cap)
        return v;
    more = realloc(v, size * (*cap * 2 + 16));
    if (more)
        *cap = *cap * 2 + 16;
    return more;
}

static unsigned line_sum(const ar_lockline *l)
{
    return (unsigned)l->write * 31u + (unsigned)l->pid * 131u +
           (unsigned)l->start * 17u + (unsigned)l->end * 7u +
           (unsigned char)l->kind[0];
}

#define CMP(x, y) ((x) < (y) ? -1 : (x) > (y) ? 1 : 0)

/* A total order of lines (0: the same lock, as ar_line_same). */
static int line_cmp(const ar_lockline *a, const ar_lockline *b)
{
    int c = strcmp(a->kind, b->kind);
    if (c == 0)
        c = CMP(a->write, b->write);
    if (c == 0)
        c = CMP(a->pid, b->pid);
    if (c == 0)
        c = CMP(a->start, b->start);
    return c ? c : CMP(a->end, b->end);
}

/*
 * The order in which who() keeps descriptions: by their lines, then by
 * kcmp's order of the open file descriptions themselves; 0 for the same
 * description.  The trap: one description can sit in many fd tables
 * (inherited over fork -- flock(1) and its command --, dup'ed, passed
 * over a socket) and shows the same lock lines in each, yet holds each
 * lock once; while two descriptions can show identical lines (two opens
 * by one process, each with a shared flock: the line names the taker and
 * the whole file), so the text does not tell.  kcmp (KCMP_FILE) does, and
 * orders them too, so that a big set of identical shared locks is kept
 * with a binary search, not a kcmp against each.  Where it cannot answer
 * (a kernel without CONFIG_KCMP, or refused) identical lines count as one
 * description: a process's two shared opens are then one holder, rather
 * than a forked holder two.
 */
static int desc_cmp(const ar_who *w, const ar_desc *a, const ar_desc *b)
{
    long r;
    int c = a->sum != b->sum ? CMP(a->sum, b->sum) : CMP(a->n, b->n);

    for (size_t i = 0; c == 0 && i < a->n; i++)
        c = line_cmp(&w->locks[a->first + i].line, &w->locks[b->first + i].line);
    if (c != 0)
        return c;
    r = syscall(SYS_kcmp, a->pid, b->pid, KCMP_FILE, a->fd, b->fd);
    if (r == 1 || r == 2)
        return r == 1 ? -1 : 1;
    /* ESRCH: a process died meanwhile, its descriptor with it */
    return r < 0 && errno == ESRCH ? -1 : 0;
}

/* Keep d in w->descs (in desc_cmp order) unless its description is
 * there already: 1 kept, 0 seen before, -1 out of memory. */
static int keep_description(ar_who *w, const ar_desc *d)
{
    size_t lo = 0, hi = w->ndescs;
    ar_desc *more;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = desc_cmp(w, d, &w->descs[mid]);
        if (c == 0)
            return 0;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (!(more = grow(w->descs, &w->desccap, w->ndescs, sizeof *more)))
        return -1;
    w->descs = more;
    memmove(&w->descs[lo + 1], &w->descs[lo],
            sizeof *w->descs * (w->ndescs - lo));
    w->descs[lo] = *d;
    w->ndescs++;
    return 1;
}

/* The held flock/OFD locks in descriptor (pid, fd)'s fdinfo, kept once
 * per description.  0 when out of memory. */
static int who_take_fdinfo(ar_scan *s, ar_who *w, pid_t pid, int fd,
                           const char *info)
{
    ar_desc d = { w->nlocks, 0, 0, pid, fd };
    ar_fdlock *more;
    ar_lockline l;

    for (const char *p = info; (p = strstr(p, "lock:")) != NULL; p += 5) {
        /* l.pid: whoever TOOK the lock, maybe long dead; the holder is
         * pid, who has the descriptor now */
        if (!ar_parse_lockline(p + 5, &l) || !who_needs_owner(&l) ||
            !ar_line_is_file(&l, s->dev, s->ino))
            continue;
        if (!(more = grow(w->locks, &w->lockcap, w->nlocks, sizeof *more)))
            return 0;
        w->locks = more;
        w->locks[w->nlocks].line = l;
        w->locks[w->nlocks].pid = pid;
        w->locks[w->nlocks].listed = 0;
        w->nlocks++;
        d.n++;
        d.sum = d.sum * 33u + line_sum(&l);
    }
    if (d.n == 0)
        return 1;
    switch (keep_description(w, &d)) {
    case 0:
        w->nlocks = d.first;        /* its locks are listed once already */
        return 1;
    case 1:
        return 1;
    default:
        return 0;
    }
}

/* Every descriptor of the file: its locks, and (OFD waiters) itself. */
static int visit_who(ar_scan *s, pid_t pid, int fd, const char *info)
{
    ar_who *w = s->ctx;

    if (!who_take_fdinfo(s, w, pid, fd, info)) {
        w->nomem = 1;
        return 1;
    }
    if (w->need_all) {
        ar_seen *more = grow(w->seen, &w->cap, w->n, sizeof *more);
        if (!more) {
            w->nomem = 1;
            return 1;
        }
        w->seen = more;
        w->seen[w->n].pid = pid;
        w->seen[w->n].fd = fd;
        w->seen[w->n].used = 0;
        w->n++;
    }
    return 0;
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
        if (ar_read_at(AT_FDCWD, path, buf, sizeof buf) <= 0)
            continue;
        hit = sscanf(buf, "%ld %lx %lx", &nr, &a0, &a1) == 3 &&
              nr == SYS_fcntl && a0 == (unsigned long)fd &&
              a1 == (unsigned long)F_OFD_SETLKW;
    }
    closedir(d);
    return hit;
}

/*
 * out: line l, held by (or waited for by) pid.  A few processes often hold
 * hundreds of a file's locks (a semaphore's slots): each one's command line
 * and start time are read once per who(), kept in w->recent.
 */
static void who_fill(ar_who *w, atomrun_lockinfo *out, const ar_lockline *l,
                     pid_t pid)
{
    atomrun_holder *known = NULL;

    for (size_t i = 0; pid > 0 && i < AR_WHO_RECENT && !known; i++)
        if (w->recent[i].pid == pid)
            known = &w->recent[i];
    if (known) {
        fill_holder(&out->h, l, 0);
        out->h.pid = pid;
        memcpy(out->h.cmd, known->cmd, sizeof out->h.cmd);
        out->h.since = known->since;
    } else {
        fill_holder(&out->h, l, pid);
        if (pid > 0)
            w->recent[w->nrecent++ % AR_WHO_RECENT] = out->h;
    }
    out->waiting = l->waiter;
}

/*
 * The search of who(): the takers /proc/locks names first (often still
 * the holders), then every other process.  The whole of /proc, however
 * many holders are found: the only count that could end it early would
 * come from /proc/locks, which may be torn.  The budget still bounds it.
 * 1 when the budget ran out (fdinfo did not show every lock), 0, -ENOMEM.
 */
static int who_search(dev_t dev, ino_t ino, const ar_lockline *lines,
                      int n, ar_who *w)
{
    pid_t *first = malloc(sizeof *first * (size_t)n), after = 0;
    size_t nf = 0;
    int any = 0;
    ar_scan s;

    if (!first)
        return -ENOMEM;
    for (int i = 0; i < n; i++) {
        const ar_lockline *l = &lines[i];
        any |= who_needs_owner(l);
        if (l->waiter && strcmp(l->kind, "OFDLCK") == 0)
            any = w->need_all = 1;
        if (!l->waiter && strcmp(l->kind, "FLOCK") == 0 && l->pid > 0) {
            first[nf++] = (pid_t)l->pid;
            if (l->pid > after)
                after = (pid_t)l->pid;
        }
    }
    scan_init(&s, dev, ino, -1, visit_who, w);
    if (any)
        scan_run(&s, first, nf, after);
    free(first);
    return w->nomem ? -ENOMEM : s.over;
}

/*
 * The fdinfo lock that stands for the held flock/OFD line l of /proc/locks:
 * 1 and *pid its holder, when one not listed yet reads the same; 1 and
 * *pid 0 (holder unknown) when no descriptor seen shows such a lock at all,
 * or the search ran out of budget (over); 0 -- leave the line out -- when
 * every lock that reads so is listed already: a line the torn read
 * repeated.  (A hidden holder whose lock reads exactly as a visible one's,
 * say another user's shared OFD lock on the same bytes, looks the same
 * from here and is left out with the repeats; and a hidden lock's line
 * that the read tore is missing or twice there, the table not being read
 * again for these lines: both rare, where torn lines are what lock churn
 * anywhere on the system makes.)
 */
static int who_match_line(ar_who *w, const ar_lockline *l, int over,
                          pid_t *pid)
{
    int alike = 0;

    *pid = 0;
    for (size_t k = 0; k < w->nlocks; k++) {
        if (!ar_line_same(&w->locks[k].line, l))
            continue;
        alike = 1;
        if (!w->locks[k].listed) {
            w->locks[k].listed = 1;
            *pid = w->locks[k].pid;
            return 1;
        }
    }
    return !alike || over;
}

/* The process behind a line that is not a held flock/OFD lock. */
static pid_t who_other_pid(ar_who *w, const ar_lockline *l)
{
    if (strcmp(l->kind, "POSIX") == 0 ||
        (l->waiter && strcmp(l->kind, "FLOCK") == 0))
        /* a POSIX lock's pid is its owner; a waiter's is the waiter */
        return l->pid > 0 && ar_pid_alive((pid_t)l->pid) ? (pid_t)l->pid : 0;
    if (l->waiter) {
        /* an OFD waiter: a process with the file open that waits in
         * F_OFD_SETLKW on that descriptor; each names one waiter */
        for (size_t k = 0; k < w->n; k++)
            if (!w->seen[k].used && ofd_waiting(w->seen[k].pid, w->seen[k].fd)) {
                w->seen[k].used = 1;
                return w->seen[k].pid;
            }
    }
    return 0;
}

static void who_free(ar_who *w, ar_lockline *lines)
{
    free(w->locks);
    free(w->descs);
    free(w->seen);
    free(lines);
}

/*
 * In /proc/locks order (waiters after their blocker), each held flock/OFD
 * line standing for a lock some fdinfo shows; then the fdinfo locks no
 * line stood for: those the torn read skipped, or taken since.
 */
int atomrun_locks_on(uint64_t dev, uint64_t ino, atomrun_lockinfo **list)
{
    ar_lockline *lines;
    atomrun_lockinfo *out;
    int n = ar_read_locks_where((dev_t)dev, (ino_t)ino, who_from_table,
                                &lines), over, got = 0;
    ar_who w;
    pid_t pid;

    *list = NULL;
    if (n <= 0)
        return n;
    memset(&w, 0, sizeof w);
    over = who_search((dev_t)dev, (ino_t)ino, lines, n, &w);
    out = over < 0 ? NULL : calloc((size_t)n + w.nlocks, sizeof *out);
    if (!out) {
        who_free(&w, lines);
        return over < 0 ? over : -ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        if (!who_needs_owner(&lines[i]))
            who_fill(&w, &out[got++], &lines[i], who_other_pid(&w, &lines[i]));
        else if (who_match_line(&w, &lines[i], over, &pid))
            who_fill(&w, &out[got++], &lines[i], pid);
    }
    for (size_t k = 0; k < w.nlocks; k++)
        if (!w.locks[k].listed)
            who_fill(&w, &out[got++], &w.locks[k].line, w.locks[k].pid);
    who_free(&w, lines);
    *list = out;
    return got;
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
