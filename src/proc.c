/*
 * proc.c -- running a command that may inherit held locks.
 *
 * vfork + exec (not posix_spawn) because the child must do three things
 * posix_spawn cannot express together: mark every descriptor >= 3
 * close-on-exec except the locks it inherits on purpose, change directory,
 * and tell us exactly why exec failed (through a close-on-exec pipe).
 * The child calls only async-signal-safe functions.
 */
#define _GNU_SOURCE
#include "ar_internal.h"

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

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

void atomrun_spawn_opts_init(atomrun_spawn_opts *o)
{
    memset(o, 0, sizeof *o);
    o->timeout = -1;
    o->kill_after = 1;
}

/* Everything >= 3 close-on-exec, then the chosen ones inheritable. */
static void ar_child_fds(const atomrun_spawn_opts *o)
{
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
        long max = sysconf(_SC_OPEN_MAX);
        if (max < 0 || max > 65536)
            max = 65536;
        for (int fd = 3; fd < max; fd++)
            fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    for (int i = 0; o && i < o->nkeep; i++)
        fcntl(o->keep_fds[i], F_SETFD, 0);
}

static void ar_child_exec(char *const argv[], const atomrun_spawn_opts *o,
                          const sigset_t *mask, int errpipe)
{
    struct sigaction sa;
    int err;
    /* Sharing the parent's memory (vfork), no handler of the parent may
     * run here: every caught signal goes back to its default action. */
    for (int sig = 1; sig < NSIG; sig++) {
        if (sigaction(sig, NULL, &sa) != 0)
            continue;
        if (!(sa.sa_flags & SA_SIGINFO) &&
            (sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN))
            continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(sig, &sa, NULL);
    }
    if (o->new_group)
        setpgid(0, 0);
    sigprocmask(SIG_SETMASK, mask, NULL);
    if (o->cwd && chdir(o->cwd) != 0)
        goto fail;
    ar_child_fds(o);
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

/* The descriptors >= 3 that are inheritable now (malloc'd; NULL, 0 when
 * /proc is not there to tell). */
static int *ar_inheritable_fds(int *n)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int *fds = NULL, cap = 0;

    *n = 0;
    if (!d)
        return NULL;
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name), flags;
        if (fd < 3 || fd == dirfd(d))
            continue;
        flags = fcntl(fd, F_GETFD);
        if (flags < 0 || (flags & FD_CLOEXEC))
            continue;
        if (*n == cap) {
            int *more = realloc(fds, sizeof *fds * (size_t)(cap = cap * 2 + 16));
            if (!more)
                break;
            fds = more;
        }
        fds[(*n)++] = fd;
    }
    closedir(d);
    return fds;
}

/*
 * A failed exec returns to the caller, which goes on running: undo what we
 * did for the new program.  Without this the kept lock descriptors would
 * stay inheritable (every later os.execute child would hold the lock), the
 * host's own inheritable descriptors would have become close-on-exec, and
 * the caller would find itself in o->cwd.
 */
int atomrun_exec(char *const argv[], const atomrun_spawn_opts *o)
{
    int here = -1, err, ninh = 0, *inh;
    if (o && o->cwd) {
        here = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (chdir(o->cwd) != 0) {
            err = -errno;
            if (here >= 0)
                close(here);
            return err;
        }
    }
    inh = ar_inheritable_fds(&ninh);
    ar_child_fds(o);
    if (o && o->envp)
        execvpe(argv[0], argv, o->envp);
    else
        execvp(argv[0], argv);
    err = -errno;
    for (int i = 0; o && i < o->nkeep; i++)
        fcntl(o->keep_fds[i], F_SETFD, FD_CLOEXEC);
    for (int i = 0; i < ninh; i++)
        fcntl(inh[i], F_SETFD, 0);
    free(inh);
    if (here >= 0) {
        if (fchdir(here) != 0) {
            /* the old directory is gone; nothing better to do */
        }
        close(here);
    }
    return err;
}

/* Wait for pid, forwarding TERM/HUP (sigfd >= 0) and enforcing the
 * timeout; -1 as timeout means none. */
static int ar_wait_child(pid_t pid, atomrun_spawn_opts *o, int sigfd,
                         int *status)
{
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    double deadline = o->timeout >= 0 ? atomrun_now() + o->timeout : -1;
    int stage = 0;            /* 0 running, 1 TERM sent, 2 KILL sent */
    pid_t target = o->new_group ? -pid : pid;

    for (;;) {
        pid_t w = waitpid(pid, status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            int err = -errno;
            if (pidfd >= 0)
                close(pidfd);
            return err;
        }
        int wait_ms = -1;
        if (deadline >= 0) {
            double left = deadline - atomrun_now();
            if (left <= 0) {
                kill(target, stage == 0 ? SIGTERM : SIGKILL);
                o->timed_out = 1;
                stage++;
                deadline = stage == 1 ? atomrun_now() + o->kill_after : -1;
                continue;
            }
            /* (int) of a double beyond INT_MAX is undefined: a timeout of
             * 1e300 s must wait, not turn negative (poll: forever) by luck */
            wait_ms = left > 1e6 ? 1000000000 : (int)(left * 1000) + 1;
        }
        if (pidfd < 0 && wait_ms < 0 && sigfd < 0) {
            /* No pidfd (Linux < 5.3) and nothing else to watch. */
            if (waitpid(pid, status, 0) == pid)
                break;
            continue;
        }
        struct pollfd pf[2] = { { pidfd, POLLIN, 0 }, { sigfd, POLLIN, 0 } };
        if (pidfd < 0 && (wait_ms < 0 || wait_ms > 10))
            wait_ms = 10;     /* old kernel: look again soon */
        poll(pf, 2, wait_ms);
        if (sigfd >= 0 && (pf[1].revents & POLLIN)) {
            struct signalfd_siginfo si;
            while (read(sigfd, &si, sizeof si) == sizeof si)
                kill(target, (int)si.ssi_signo);
        }
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
 * every signal blocked until it has reset the caught ones (ar_child_exec),
 * so no handler of ours can run in it; it makes only system calls, and it
 * never returns from ar_child_exec.  Its fd table, cwd and signal actions
 * are its own copies.  On return the caller's mask is *saved plus *extra.
 */
static pid_t ar_vfork_exec(char *const argv[], const atomrun_spawn_opts *o,
                           const sigset_t *extra, sigset_t *saved,
                           int errpipe)
{
    sigset_t all, want;
    pid_t pid;
    int err;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, saved);
    pid = vfork();
    if (pid == 0)
        ar_child_exec(argv, o, saved, errpipe);       /* does not return */
    err = errno;
    want = *saved;
    for (int sig = 1; sig < NSIG; sig++)
        if (sigismember(extra, sig) == 1)
            sigaddset(&want, sig);
    pthread_sigmask(SIG_SETMASK, &want, NULL);
    errno = err;
    return pid;
}

int atomrun_run(char *const argv[], atomrun_spawn_opts *o, int *is_signal,
                int *code)
{
    int pipefd[2], status = 0, err = 0, sigfd = -1, r;
    sigset_t fwd, saved;
    ssize_t n;
    pid_t pid;

    if (!argv || !argv[0])
        return -EINVAL;
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        return -errno;
    /* Block the forwarded signals before fork so none is lost between the
     * fork and the signalfd; the child gets the old mask back. */
    sigemptyset(&fwd);
    if (o->forward || o->new_group) {
        sigaddset(&fwd, SIGTERM);
        sigaddset(&fwd, SIGHUP);
    }
    /* A command in its own process group (needed to kill all of it at the
     * timeout) no longer gets the terminal's Ctrl-C or a supervisor's
     * SIGTERM to our group: without forwarding them, stopping atomrun
     * would leave the command running, orphaned. */
    if (o->new_group) {
        sigaddset(&fwd, SIGINT);
        sigaddset(&fwd, SIGQUIT);
    }
    pid = ar_vfork_exec(argv, o, &fwd, &saved, pipefd[1]);
    if (pid < 0) {
        r = -errno;
        pthread_sigmask(SIG_SETMASK, &saved, NULL);
        close(pipefd[0]);
        close(pipefd[1]);
        return r;
    }
    close(pipefd[1]);
    do
        n = read(pipefd[0], &err, sizeof err);
    while (n < 0 && errno == EINTR);
    close(pipefd[0]);
    if (o->forward || o->new_group)
        sigfd = signalfd(-1, &fwd, SFD_CLOEXEC | SFD_NONBLOCK);
    if (n == sizeof err) {
        /* exec failed: reap the child, report its errno */
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        r = -err;
    } else {
        r = ar_wait_child(pid, o, sigfd, &status);
    }
    if (sigfd >= 0)
        close(sigfd);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (r < 0)
        return r;
    if (WIFSIGNALED(status)) {
        *is_signal = 1;
        *code = WTERMSIG(status);
    } else {
        *is_signal = 0;
        *code = WEXITSTATUS(status);
    }
    return 0;
}
