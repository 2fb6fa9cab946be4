/*
 * etcd/guard.c -- the guard of a command run under an etcd lock: a watchdog
 * process that ends the command before the lock's lease can expire.
 *
 * Why a process and not a thread of ours: a thread stops when we are
 * stopped (SIGSTOP, a debugger, a frozen cgroup) and dies when we are
 * killed, and then nothing ends the command while the lease runs out and
 * the cluster hands the lock to the next holder: two holders at once.  The
 * watchdog is forked from us, lives in a process group of its own (a stop
 * or a signal aimed at our group does not reach it), and reads the lease's
 * deadline from the session's shared page (ar_lease_view), which our
 * keepalive thread moves on while we run and which stands still while we
 * are stopped.  With D that deadline (CLOCK_BOOTTIME) and M the margin:
 *
 *   at D - M - kill_after   SIGTERM (and SIGCONT, so a stopped command
 *                           hears it) to the command's group and tree
 *   at D - M, or kill_after after the TERM if D moved on meanwhile
 *                           SIGKILL to them
 *   the lease is gone       SIGKILL at once: the cluster said so (a
 *                           keepalive answered without a TTL, a revoke),
 *                           and someone else may hold the lock already
 *   we are gone             SIGKILL at once: the pipe's write end, ours
 *                           alone, closed without the stop byte
 *
 * So the command is dead M before the cluster can give the lock away,
 * whether we run, are stopped or were killed -- with one condition, which
 * ar_etcd_kill_after enforces: kill_after + M must fit in half the
 * TTL (the other half is the keepalive's time to be confirmed; keepalives
 * go every TTL/3).  The command also gets PR_SET_PDEATHSIG SIGKILL from
 * run(): that ends it the moment we die even if the watchdog was killed
 * too.
 *
 * The command's tree: its process group, every descendant still reachable
 * through /proc/PID/task/TID/children (a child that left the group with
 * setsid, a daemon whose parent is still alive), and -- because we are a
 * child subreaper while a guard runs -- the orphans of that tree that the
 * kernel handed to us when their parent exited.  What escapes: a process
 * that left the group and whose parent exited, when we ourselves were
 * SIGKILLed (the kernel then hands it to init, out of sight).  A job that
 * starts daemons belongs in a cgroup of its own (systemd-run --scope), and
 * its writes want the fencing token.
 *
 * The child runs only async-signal-safe code: it is forked from a process
 * with threads (the keepalive's, curl's), and any lock one of them held at
 * the fork -- malloc's among them -- stays held in the child forever.  So:
 * system calls, stack buffers, no stdio.
 */
#define _GNU_SOURCE
#include "etcd/internal.h"
#include "core/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define GUARD_TICK       0.05    /* how often the watchdog looks (s) */
#define TREE_MAX         1024    /* processes ended in one sweep */
#define KNOWN_MAX        256     /* our children before the command ran */
#define STOP_BYTE        'S'

/* The page the watchdog reports in. */
typedef struct guard_report {
    _Atomic int fired;          /* bits: 1 TERM sent, 2 KILL sent */
} guard_report;

struct ar_guard {
    pid_t         pid;          /* the watchdog */
    int           wfd;          /* ours alone: STOP_BYTE stops it, EOF kills */
    guard_report *rep;
};

/* What the watchdog knows, copied into it by the fork. */
typedef struct watch {
    const ar_lease_view *view;
    guard_report        *rep;
    int                  rfd;
    pid_t                parent;
    pid_t                pgid;          /* 0: every child of the parent */
    double               kill_after;
    const pid_t         *known;         /* the parent's children before */
    int                  nknown;
} watch;

int ar_etcd_kill_after(int ttl, double asked, double *out)
{
    double most = ttl / 2.0 - ATOMRUN_ETCD_GUARD_MARGIN;
    if (ttl < 1)
        return -EINVAL;
    if (asked < 0) {            /* the default: TTL/4, at most 5 s */
        asked = ttl / 4.0;
        if (asked > 5)
            asked = 5;
    }
    if (!(asked <= most))       /* NaN too */
        return -ERANGE;
    *out = asked;
    return 0;
}

/* ------------------------------------------------ async-signal-safe */

typedef struct dirent64_raw {
    uint64_t       ino;
    int64_t        off;
    unsigned short reclen;
    unsigned char  type;
    char           name[];
} dirent64_raw;

/* "/proc/" N "/task" or "/proc/" N "/task/" T "/children" into buf. */
static char *put(char *p, const char *s)
{
    while (*s)
        *p++ = *s++;
    return p;
}

static char *put_num(char *p, long n)
{
    char tmp[24];
    int i = 0;
    do
        tmp[i++] = (char)('0' + n % 10);
    while ((n /= 10) > 0);
    while (i > 0)
        *p++ = tmp[--i];
    return p;
}

static int has_pid(const pid_t *set, int n, pid_t pid)
{
    for (int i = 0; i < n; i++)
        if (set[i] == pid)
            return 1;
    return 0;
}

/* Append the pids listed in one children file to set (unique), skipping
 * skip; the new count. */
static int read_children_file(const char *path, pid_t skip, pid_t *set, int n, int max)
{
    char buf[4096];
    ssize_t len;
    long pid = 0;
    int digits = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return n;
    while ((len = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i <= len; i++) {
            if (i < len && buf[i] >= '0' && buf[i] <= '9') {
                pid = pid * 10 + (buf[i] - '0');
                digits++;
                continue;
            }
            if (i == len)       /* a number may go on in the next read */
                break;
            if (digits && pid > 1 && (pid_t)pid != skip && n < max &&
                !has_pid(set, n, (pid_t)pid))
                set[n++] = (pid_t)pid;
            pid = 0;
            digits = 0;
        }
    }
    if (digits && pid > 1 && (pid_t)pid != skip && n < max && !has_pid(set, n, (pid_t)pid))
        set[n++] = (pid_t)pid;
    close(fd);
    return n;
}

/* The children of every thread of pid, appended to set (unique). */
static int add_children(pid_t pid, pid_t skip, pid_t *set, int n, int max)
{
    char path[64], *p, buf[2048];
    long len;
    int fd;
    p = put_num(put(path, "/proc/"), pid);
    p = put(p, "/task");
    *p = '\0';
    fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return n;
    while ((len = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
        for (long off = 0; off < len;) {
            const dirent64_raw *d = (const dirent64_raw *)(buf + off);
            off += d->reclen;
            if (d->name[0] < '0' || d->name[0] > '9')
                continue;
            p = put(path, "/proc/");
            p = put_num(p, pid);
            p = put(p, "/task/");
            p = put(p, d->name);
            p = put(p, "/children");
            *p = '\0';
            n = read_children_file(path, skip, set, n, max);
        }
    }
    close(fd);
    return n;
}

/* set[from..n) and all their descendants (breadth first); the new n. */
static int add_trees(pid_t skip, pid_t *set, int from, int n, int max)
{
    for (int i = from; i < n; i++)
        n = add_children(set[i], skip, set, n, max);
    return n;
}

/*
 * Send sig to what the guard ends.  A pid read from /proc may in principle
 * be reaped and reused in the microseconds before the kill: the window a
 * kill(1) of a listed pid always has, accepted here.
 */
static void sweep(const watch *w, int sig)
{
    pid_t set[TREE_MAX], me = getpid();
    int n = 0, parent_alive = getppid() == w->parent;

    if (w->pgid > 0) {
        if (kill(-w->pgid, sig) < 0)    /* the group, or its leader alone */
            kill(w->pgid, sig);
        set[n++] = w->pgid;
        if (parent_alive) {             /* orphans the subreaper adopted */
            pid_t kids[TREE_MAX];
            int nk = add_children(w->parent, me, kids, 0, TREE_MAX);
            for (int i = 0; i < nk && n < TREE_MAX; i++)
                if (kids[i] != w->pgid && !has_pid(w->known, w->nknown, kids[i]))
                    set[n++] = kids[i];
        }
    } else if (parent_alive) {
        n = add_children(w->parent, me, set, 0, TREE_MAX);
        for (int i = 0; i < n; i++)
            if (getpgid(set[i]) == set[i])
                kill(-set[i], sig);
    }
    n = add_trees(me, set, 0, n, TREE_MAX);
    for (int i = 0; i < n; i++) {
        kill(set[i], sig);
        if (sig == SIGTERM)
            kill(set[i], SIGCONT);
    }
    if (sig == SIGTERM && w->pgid > 0)
        kill(-w->pgid, SIGCONT);
}

static double boot_now_safe(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0)
        clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Out of everything of ours: its own group, no terminal signals, the
 * stdio of /dev/null (never keeping a pipe of our caller's open), and no
 * descriptor but the pipe (a lock descriptor kept open here would keep
 * the lock held after we released it). */
static void detach(watch *w)
{
    static const int ignored[] = { SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGTSTP,
                                   SIGTTIN, SIGTTOU, SIGPIPE, SIGUSR1, SIGUSR2 };
    struct sigaction sa;
    sigset_t none;
    int null;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++)
        sigaction(ignored[i], &sa, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setpgid(0, 0);
    prctl(PR_SET_NAME, "atomrun-guard", 0, 0, 0);
    if (w->rfd != 3) {
        dup3(w->rfd, 3, O_CLOEXEC);
        w->rfd = 3;
    }
    null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
    }
    if (syscall(SYS_close_range, 4U, ~0U, 0U) != 0) {
        /* Linux < 5.9: every open descriptor, from /proc/self/fd */
        char buf[2048];
        long len;
        int fd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        while (fd >= 0 && (len = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
            for (long off = 0; off < len;) {
                const dirent64_raw *d = (const dirent64_raw *)(buf + off);
                long n = 0;
                off += d->reclen;
                for (const char *c = d->name; *c >= '0' && *c <= '9'; c++)
                    n = n * 10 + (*c - '0');
                if (d->name[0] >= '0' && d->name[0] <= '9' && n > 3 && n != fd)
                    close((int)n);
            }
        }
        if (fd >= 0)
            close(fd);
    }
}

static _Noreturn void watchdog(watch *w)
{
    int stage = 0;
    double termed = 0, killed = 0;
    detach(w);
    for (;;) {
        double now = boot_now_safe();
        double until = (double)atomic_load(&w->view->until_ns) / 1e9;
        double kill_at = until - ATOMRUN_ETCD_GUARD_MARGIN;
        double term_at = kill_at - w->kill_after, wait;
        struct pollfd pf = { w->rfd, POLLIN, 0 };
        int lost = atomic_load(&w->view->lost);

        if (stage == 1 && now >= termed + w->kill_after && termed + w->kill_after < kill_at)
            kill_at = termed + w->kill_after;
        if (stage < 2 && (lost || now >= kill_at)) {
            sweep(w, SIGKILL);
            stage = 2;
            killed = now;
            atomic_fetch_or(&w->rep->fired, 2);
        } else if (stage == 2 && now >= killed + GUARD_TICK) {
            sweep(w, SIGKILL);      /* what forked while the first went out */
            stage = 3;
        } else if (stage == 0 && now >= term_at) {
            sweep(w, SIGTERM);
            stage = 1;
            termed = now;
            atomic_fetch_or(&w->rep->fired, 1);
        }
        wait = stage == 0 ? term_at - now : stage == 1 ? kill_at - now
             : stage == 2 ? GUARD_TICK : 1.0;
        if (stage == 1 && termed + w->kill_after - now < wait)
            wait = termed + w->kill_after - now;
        if (stage < 2 && wait > GUARD_TICK)
            wait = GUARD_TICK;      /* the lost flag has no wake-up of its own */
        if (wait < 0)
            wait = 0;
        if (poll(&pf, 1, (int)(wait * 1000) + 1) > 0) {
            char b = 0;
            ssize_t n = read(w->rfd, &b, 1);
            if (n == 1 && b == STOP_BYTE)
                _exit(0);
            if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
                sweep(w, SIGKILL);          /* we are gone: so is the command */
                _exit(0);
            }
        }
        if (getppid() != w->parent) {       /* gone, the pipe kept open by a fork */
            sweep(w, SIGKILL);
            _exit(0);
        }
    }
}

/* ------------------------------------------------------- the parent */

/* The process stays a child subreaper while any guard runs, so that the
 * orphans of a guarded command come to us (and to the watchdog's sweep)
 * rather than to init; it is given back as it was found. */
static pthread_mutex_t reaper_mu = PTHREAD_MUTEX_INITIALIZER;
static int reaper_users, reaper_ours;

static void reaper_hold(void)
{
    pthread_mutex_lock(&reaper_mu);
    if (reaper_users++ == 0) {
        int was = 0;
        prctl(PR_GET_CHILD_SUBREAPER, &was, 0, 0, 0);
        reaper_ours = !was && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0;
    }
    pthread_mutex_unlock(&reaper_mu);
}

static void reaper_release(void)
{
    pthread_mutex_lock(&reaper_mu);
    if (--reaper_users == 0 && reaper_ours) {
        prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
        reaper_ours = 0;
    }
    pthread_mutex_unlock(&reaper_mu);
}

int ar_guard_start(ar_session *s, pid_t pgid, double kill_after, ar_guard **out)
{
    pid_t known[KNOWN_MAX];
    watch w;
    ar_guard *g;
    int p[2], r;

    *out = NULL;
    if (pgid < 0 || pgid == 1)
        return -EINVAL;
    if ((r = ar_etcd_kill_after(ar_session_ttl(s), kill_after, &kill_after)) < 0)
        return r;
    if (!(g = calloc(1, sizeof *g)))
        return -ENOMEM;
    g->rep = mmap(NULL, sizeof *g->rep, PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g->rep == MAP_FAILED) {
        free(g);
        return -ENOMEM;
    }
    if (pipe2(p, O_CLOEXEC) != 0) {
        r = -errno;
        munmap(g->rep, sizeof *g->rep);
        free(g);
        return r;
    }
    memset(&w, 0, sizeof w);
    w.view = ar_session_view(s);
    w.rep = g->rep;
    w.rfd = p[0];
    w.parent = getpid();
    w.pgid = pgid;
    w.kill_after = kill_after;
    w.known = known;
    w.nknown = pgid > 0 ? add_children(w.parent, 0, known, 0, KNOWN_MAX) : 0;
    reaper_hold();
    g->pid = fork();
    if (g->pid == 0) {
        close(p[1]);
        watchdog(&w);
    }
    r = -errno;
    close(p[0]);
    if (g->pid < 0) {
        reaper_release();
        close(p[1]);
        munmap(g->rep, sizeof *g->rep);
        free(g);
        return r;
    }
    g->wfd = p[1];
    *out = g;
    return 0;
}

/* Reap the watchdog; one that does not go at the stop byte within a
 * second (stopped by someone) is killed. */
static void reap(pid_t pid)
{
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0), status;
    if (pidfd >= 0) {
        struct pollfd pf = { pidfd, POLLIN, 0 };
        if (poll(&pf, 1, 1000) == 0)
            kill(pid, SIGKILL);
        close(pidfd);
    }
    /* ECHILD: a host's SIGCHLD handler reaped it first */
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

int ar_guard_stop(ar_guard *g)
{
    char b = STOP_BYTE;
    int fired;
    if (!g)
        return 0;
    if (write(g->wfd, &b, 1) != 1) {
        /* then EOF stops it, and it ends the command: already waited for */
    }
    close(g->wfd);
    reap(g->pid);
    fired = atomic_load(&g->rep->fired);
    munmap(g->rep, sizeof *g->rep);
    free(g);
    reaper_release();
    return fired;
}
