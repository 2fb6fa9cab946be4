/*
 * core/proc.c -- running a command that may inherit held locks.
 *
 * Descriptors: the command gets every descriptor the caller gave us (a
 * shell's `5>file`, make's jobserver pipe), exactly as flock(1) and
 * os.execute pass them.  Descriptors atomrun opens itself are all
 * O_CLOEXEC, so they stay out without any sweep here; the only ones we
 * touch are the held locks the child inherits on purpose, whose
 * close-on-exec flag is cleared in the child alone (keep_fds).
 *
 * vfork + exec (not posix_spawn) because the child must do what
 * posix_spawn cannot express together: make the lock descriptors
 * inheritable, change directory, take the terminal's foreground, ask to
 * die with its parent, and tell us exactly why exec failed (through a
 * close-on-exec pipe).  The child calls only async-signal-safe functions.
 */
#define _GNU_SOURCE
#include "core/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/prctl.h>
#include <termios.h>

void atomrun_spawn_opts_init(atomrun_spawn_opts *o)
{
    memset(o, 0, sizeof *o);
    o->timeout = -1;
    o->kill_after = 1;
}

/* The held locks the command inherits on purpose: inheritable in the
 * child only (our own copies stay close-on-exec for every other child). */
static void child_fds(const atomrun_spawn_opts *o)
{
    for (int i = 0; o && i < o->nkeep; i++)
        fcntl(o->keep_fds[i], F_SETFD, 0);
}

/* The caller's descriptors the command must not get (atomrun_run only:
 * in the child's own descriptor table, so the caller keeps them -- and
 * the lock on them -- while the command runs without). */
static void child_hide(const atomrun_spawn_opts *o)
{
    for (int i = 0; i < o->nhide; i++)
        fcntl(o->hide_fds[i], F_SETFD, FD_CLOEXEC);
}

/*
 * Which signals have a handler, from the kernel's own record: the SigCgt
 * line of /proc/self/status, one bit per signal (bit sig-1).  In the vfork
 * child "self" is the child, whose signal actions were copied from the
 * parent's at the vfork.  One open and read instead of a sigaction query
 * for each of the 64 signals (9 us against 5 us here, per command).  We
 * cannot keep a record of the handlers instead: a C host, or a C module a
 * script loads (luaposix's signal), installs its own without telling us.
 * Plain system calls and a loop over a stack buffer, safe in the child.
 * Returns 0, or -1 when /proc cannot tell (not mounted): ask each signal.
 */
static int caught_bits(unsigned long long *bits)
{
    static const char key[] = "\nSigCgt:";
    char buf[4096];
    size_t len = 0, k = sizeof key - 1;
    ssize_t n;
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    while (len < sizeof buf - 1 &&
           (n = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    buf[len] = '\0';
    for (size_t i = 0; i + k <= len; i++) {
        if (memcmp(buf + i, key, k) != 0)
            continue;
        unsigned long long v = 0;
        int digits = 0;
        char *p = buf + i + k;
        while (*p == ' ' || *p == '\t')
            p++;
        for (;; p++, digits++) {
            int d = *p >= '0' && *p <= '9' ? *p - '0'
                  : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
            if (d < 0)
                break;
            v = v << 4 | (unsigned)d;
        }
        /* 16 digits: exactly the 64 signals this loop's caller knows */
        if (digits != 16 || *p != '\n')
            return -1;
        *bits = v;
        return 0;
    }
    return -1;
}

/* Back to the default action, unless it already is or is ignored (an
 * ignored signal stays ignored across exec, as the command expects). */
static void child_default(int sig)
{
    struct sigaction sa;
    if (sigaction(sig, NULL, &sa) != 0)
        return;
    if (!(sa.sa_flags & SA_SIGINFO) &&
        (sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN))
        return;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigaction(sig, &sa, NULL);
}

/*
 * In the vfork child, every signal still blocked.  ttyfd >= 0: the
 * terminal whose foreground this command's new group takes.
 */
static void child_exec(char *const argv[], const atomrun_spawn_opts *o,
                       const sigset_t *mask, int errpipe, pid_t parent,
                       int ttyfd)
{
    unsigned long long caught;
    int err;
    /* Sharing the parent's memory (vfork), no handler of the parent may
     * run here: every caught signal goes back to its default action
     * before the mask below lets a signal in.  exec would reset them
     * too, but a signal arriving between that unblocking and the exec
     * would run the parent's handler on the parent's memory. */
    if (NSIG - 1 == 64 && caught_bits(&caught) == 0) {
        for (int sig = 1; sig < NSIG; sig++)
            if (caught >> (sig - 1) & 1)
                child_default(sig);
    } else {
        for (int sig = 1; sig < NSIG; sig++)
            child_default(sig);
    }
    if (o->new_group) {
        setpgid(0, 0);
        /* The foreground is taken here, before exec, not by the parent
         * after it: the command may read the terminal at its first
         * instruction, and from a background group that read stops it
         * with SIGTTIN.  A background group may call tcsetpgrp because
         * SIGTTOU is blocked (all signals are, until the sigprocmask
         * below). */
        if (ttyfd >= 0)
            tcsetpgrp(ttyfd, getpid());
    }
    if (o->die_with_parent > 0) {
        prctl(PR_SET_PDEATHSIG, o->die_with_parent);
        /* The parent may have been killed before prctl took effect (it
         * waits in vfork, but SIGKILL ends it there too): then no signal
         * will ever come, and we must not start an orphan. */
        if (getppid() != parent)
            _exit(127);
    }
    sigprocmask(SIG_SETMASK, mask, NULL);
    if (o->cwd && chdir(o->cwd) != 0)
        goto fail;
    child_fds(o);
    child_hide(o);
    if (o->envp)
        execvpe(argv[0], argv, o->envp);
    else
        execvp(argv[0], argv);
fail:
    err = errno;
    if (write(errpipe, &err, sizeof err) < 0) {
        /* nothing more we can say */
    }
    _exit(127);
}

/*
 * A failed exec returns to the caller, which goes on running: undo what we
 * did for the new program.  Without this the kept lock descriptors would
 * stay inheritable (every later os.execute child would hold the lock), and
 * the caller would find itself in o->cwd.  Every other descriptor is left
 * as the caller had it: inheritable ones pass to the new program.
 */
int atomrun_exec(char *const argv[], const atomrun_spawn_opts *o)
{
    int here = -1, err;
    if (o && o->cwd) {
        here = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (chdir(o->cwd) != 0) {
            err = -errno;
            if (here >= 0)
                close(here);
            return err;
        }
    }
    child_fds(o);
    if (o && o->envp)
        execvpe(argv[0], argv, o->envp);
    else
        execvp(argv[0], argv);
    err = -errno;
    for (int i = 0; o && i < o->nkeep; i++)
        fcntl(o->keep_fds[i], F_SETFD, FD_CLOEXEC);
    if (here >= 0) {
        if (fchdir(here) != 0) {
            /* the old directory is gone; nothing better to do */
        }
        close(here);
    }
    return err;
}

/* ------------------------------------------------------------ terminal */

/*
 * The terminal a command in its own group should get: stdin's if it is
 * one, else the controlling terminal's (/dev/tty), and only while this
 * process's group is its foreground group -- a background job must never
 * steal the terminal from the job in front.  -1 when there is none.
 * *opened: we opened /dev/tty and must close it.
 */
static int foreground_tty(int *opened)
{
    int fd;
    *opened = 0;
    if (isatty(0))
        return tcgetpgrp(0) == getpgrp() ? 0 : -1;
    fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -1;
    if (tcgetpgrp(fd) != getpgrp()) {
        close(fd);
        return -1;
    }
    *opened = 1;
    return fd;
}

/* Give the terminal's foreground to pgrp.  We may be in the background
 * now (the command's group is in front): tcsetpgrp from a background
 * group raises SIGTTOU unless it is blocked, so block it in this thread
 * for the call (never change its disposition: a host may handle it). */
static void tty_give(int ttyfd, pid_t pgrp)
{
    sigset_t ttou, old;
    sigemptyset(&ttou);
    sigaddset(&ttou, SIGTTOU);
    pthread_sigmask(SIG_BLOCK, &ttou, &old);
    tcsetpgrp(ttyfd, pgrp);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* What the wait loop needs besides the options. */
typedef struct ar_child {
    pid_t pid;
    pid_t target;      /* -pid for a group of its own, else pid */
    int   sigfd;       /* the signals we catch while it runs, or -1 */
    int   ttyfd;       /* the terminal its group has, or -1 */
    int   interrupt;   /* the SIGINT/SIGQUIT we received meanwhile, or 0 */
} ar_child;

/*
 * Ctrl-Z stopped the command, whose group has the terminal: without this
 * the user would face a stopped job and a shell still waiting for us.  Do
 * what a shell's job would: take the terminal back, stop ourselves (our
 * shell then takes it), and when continued hand it to the command again
 * and wake it.
 */
static void child_stopped(const ar_child *c)
{
    tty_give(c->ttyfd, getpgrp());
    kill(getpid(), SIGSTOP);
    /* Continued.  By `fg` our group has the terminal again: pass it on.
     * By `bg` it has not, and taking it would steal it from the shell:
     * the command goes on in the background, as a job would. */
    if (tcgetpgrp(c->ttyfd) == getpgrp())
        tty_give(c->ttyfd, c->pid);
    kill(c->target, SIGCONT);
}

/* One batch of caught signals.  SIGINT/SIGQUIT: a command in our own group
 * got the terminal's (SI_KERNEL) signal itself; a kill(1) aimed at us,
 * and every one when the command has a group of its own, we pass on.
 * Either way we note it (see reraise).  SIGTERM/SIGHUP (caught only
 * when forwarding) go to the command. */
static void child_signals(ar_child *c, const atomrun_spawn_opts *o)
{
    struct signalfd_siginfo si;
    while (read(c->sigfd, &si, sizeof si) == sizeof si) {
        int sig = (int)si.ssi_signo;
        if (sig == SIGCHLD)
            continue;                  /* only a wake-up: waitpid looks */
        if (sig == SIGINT || sig == SIGQUIT) {
            c->interrupt = sig;
            if (!o->new_group && si.ssi_code == SI_KERNEL)
                continue;
        }
        kill(c->target, sig);
    }
}

/* Wait for the child, forwarding signals and enforcing the timeout; -1 as
 * timeout means none. */
static int wait_child(ar_child *c, atomrun_spawn_opts *o,
                      int *status)
{
    int pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
    double deadline = o->timeout >= 0 ? ar_now() + o->timeout : -1;
    int stage = 0;            /* 0 running, 1 TERM sent, 2 KILL sent */
    int flags = WNOHANG | (c->ttyfd >= 0 ? WUNTRACED : 0);

    for (;;) {
        pid_t w = waitpid(c->pid, status, flags);
        if (w == c->pid && WIFSTOPPED(*status)) {
            child_stopped(c);
            continue;
        }
        if (w == c->pid)
            break;
        if (w < 0 && errno != EINTR) {
            int err = -errno;
            if (pidfd >= 0)
                close(pidfd);
            return err;
        }
        int wait_ms = -1;
        if (deadline >= 0) {
            double left = deadline - ar_now();
            if (left <= 0) {
                kill(c->target, stage == 0 ? SIGTERM : SIGKILL);
                if (stage == 0)
                    kill(c->target, SIGCONT);  /* a stopped one must hear it */
                o->timed_out = 1;
                stage++;
                deadline = stage == 1 ? ar_now() + o->kill_after : -1;
                continue;
            }
            /* (int) of a double beyond INT_MAX is undefined: a timeout of
             * 1e300 s must wait, not turn negative (poll: forever) by luck */
            wait_ms = left > 1e6 ? 1000000000 : (int)(left * 1000) + 1;
        }
        if (pidfd < 0 && wait_ms < 0 && c->sigfd < 0) {
            /* No pidfd (Linux < 5.3) and nothing else to watch. */
            if (waitpid(c->pid, status, flags & ~WNOHANG) == c->pid &&
                !WIFSTOPPED(*status))
                break;
            continue;
        }
        struct pollfd pf[2] = { { pidfd, POLLIN, 0 }, { c->sigfd, POLLIN, 0 } };
        if (pidfd < 0 && (wait_ms < 0 || wait_ms > 10))
            wait_ms = 10;     /* old kernel: look again soon */
        poll(pf, 2, wait_ms);
        if (c->sigfd >= 0 && (pf[1].revents & POLLIN))
            child_signals(c, o);
    }
    if (pidfd >= 0)
        close(pidfd);
    return 0;
}

/*
 * Start the child with vfork, not fork: fork write-protects every page of
 * this process, and each page it writes afterwards (the Lua heap, the
 * stack) costs a page fault, dozens per run -- a third of the start-up of
 * `atomrun lock F true`.  A vfork child borrows our memory (and this
 * thread's stack, below this frame) until it execs or exits: it runs with
 * every signal blocked until it has reset the caught ones (child_exec),
 * so no handler of ours can run in it; it makes only system calls, and it
 * never returns from child_exec.  Its fd table, cwd and signal actions
 * are its own copies.  On return the caller's mask is *saved plus *extra.
 */
static pid_t vfork_exec(char *const argv[], const atomrun_spawn_opts *o,
                        const sigset_t *extra, sigset_t *saved,
                        int errpipe, int ttyfd)
{
    sigset_t all, want;
    pid_t pid, parent = getpid();
    int err;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, saved);
    pid = vfork();
    if (pid == 0)                                  /* does not return */
        child_exec(argv, o, saved, errpipe, parent, ttyfd);
    err = errno;
    want = *saved;
    for (int sig = 1; sig < NSIG; sig++)
        if (sigismember(extra, sig) == 1)
            sigaddset(&want, sig);
    pthread_sigmask(SIG_SETMASK, &want, NULL);
    errno = err;
    return pid;
}

/* The signals we catch (blocked, read from a signalfd) while the command
 * runs.  Blocked before the vfork, so none is lost before the signalfd. */
static void caught_signals(const atomrun_spawn_opts *o, int tty,
                           sigset_t *set)
{
    sigemptyset(set);
    /* Ctrl-C and Ctrl-\ reach the command first, with or without a
     * timeout, and the caller only after the command ended of them
     * (reraise): never a script gone and its command left running. */
    sigaddset(set, SIGINT);
    sigaddset(set, SIGQUIT);
    /* A command in its own process group (needed to kill all of it at the
     * timeout) no longer gets a supervisor's SIGTERM to our group:
     * without forwarding it, stopping atomrun would leave the command
     * running, orphaned. */
    if (o->forward || o->new_group) {
        sigaddset(set, SIGTERM);
        sigaddset(set, SIGHUP);
    }
    /* With the terminal handed over we must hear of a Ctrl-Z stop, which
     * no pidfd reports. */
    if (tty)
        sigaddset(set, SIGCHLD);
}

/*
 * Ctrl-C while the command runs ends the command first and the caller
 * after it, the way a shell treats a job ("wait and cooperative exit"):
 * when the command died of SIGINT/SIGQUIT and that was an interrupt --
 * we received the signal too, or the command had the terminal (then the
 * terminal's Ctrl-C reached only its group) -- the caller gets the same
 * signal once the command is reaped, so a script ends as interrupted and
 * its shell sees it die of the signal, as with flock(1).  A command that
 * handles Ctrl-C and exits (an editor, a pager) interrupts nothing.
 * Called with the caller's mask back: a host that handles or blocks the
 * signal gets it as it would have without us.
 */
static void reraise(const ar_child *c, int status)
{
    int sig;
    if (!WIFSIGNALED(status))
        return;
    sig = WTERMSIG(status);
    if ((sig == SIGINT || sig == SIGQUIT) &&
        (c->interrupt == sig || c->ttyfd >= 0))
        raise(sig);
}

int atomrun_run(char *const argv[], atomrun_spawn_opts *o, int *is_signal,
                int *code)
{
    int pipefd[2], status = 0, err = 0, r, tty_opened = 0;
    ar_child c = { 0, 0, -1, -1, 0 };
    sigset_t caught, saved;
    ssize_t n;

    if (!argv || !argv[0])
        return -EINVAL;
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        return -errno;
    if (o->new_group)
        c.ttyfd = foreground_tty(&tty_opened);
    caught_signals(o, c.ttyfd >= 0, &caught);
    c.pid = vfork_exec(argv, o, &caught, &saved, pipefd[1], c.ttyfd);
    if (c.pid < 0) {
        r = -errno;
        pthread_sigmask(SIG_SETMASK, &saved, NULL);
        close(pipefd[0]);
        close(pipefd[1]);
        if (tty_opened)
            close(c.ttyfd);
        return r;
    }
    c.target = o->new_group ? -c.pid : c.pid;
    close(pipefd[1]);
    do
        n = read(pipefd[0], &err, sizeof err);
    while (n < 0 && errno == EINTR);
    close(pipefd[0]);
    c.sigfd = signalfd(-1, &caught, SFD_CLOEXEC | SFD_NONBLOCK);
    if (n == sizeof err) {
        /* exec failed: reap the child, report its errno */
        while (waitpid(c.pid, &status, 0) < 0 && errno == EINTR)
            ;
        r = -err;
    } else if (o->on_start && (r = o->on_start(o->on_start_ctx, c.pid)) != 0) {
        /* The caller refused the running command: it must not outlive
         * the refusal, nor leave a zombie. */
        kill(c.target, SIGKILL);
        while (waitpid(c.pid, &status, 0) < 0 && errno == EINTR)
            ;
        r = r < 0 ? r : -ECANCELED;
    } else {
        r = wait_child(&c, o, &status);
    }
    if (c.ttyfd >= 0) {
        tty_give(c.ttyfd, getpgrp());
        if (tty_opened)
            close(c.ttyfd);
    }
    if (c.sigfd >= 0)
        close(c.sigfd);
    /* Drain what came after the last read: unblocking must not deliver
     * it now, before the command is accounted for; reraise decides. */
    {
        struct timespec zero = { 0, 0 };
        sigset_t drain;
        sigemptyset(&drain);
        for (int sig = 1; sig < NSIG; sig++)
            if (sig != SIGTERM && sig != SIGHUP &&
                sigismember(&caught, sig) == 1 && sigismember(&saved, sig) == 0)
                sigaddset(&drain, sig);
        int sig;
        while ((sig = sigtimedwait(&drain, NULL, &zero)) > 0)
            if (sig == SIGINT || sig == SIGQUIT)
                c.interrupt = sig;
    }
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (r < 0)
        return r;
    reraise(&c, status);
    if (WIFSIGNALED(status)) {
        *is_signal = 1;
        *code = WTERMSIG(status);
    } else {
        *is_signal = 0;
        *code = WEXITSTATUS(status);
    }
    return 0;
}
