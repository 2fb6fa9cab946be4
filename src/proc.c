/*
 * proc.c -- running a command that may inherit held locks.
 *
 * fork + exec (not posix_spawn) because the child must do three things
 * posix_spawn cannot express together: mark every descriptor >= 3
 * close-on-exec except the locks it inherits on purpose, change directory,
 * and tell us exactly why exec failed (through a close-on-exec pipe).
 * The child calls only async-signal-safe functions.
 */
#define _GNU_SOURCE
#include "ar_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
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
    int err;
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

int atomrun_exec(char *const argv[], const atomrun_spawn_opts *o)
{
    if (o && o->cwd && chdir(o->cwd) != 0)
        return -errno;
    ar_child_fds(o);
    if (o && o->envp)
        execvpe(argv[0], argv, o->envp);
    else
        execvp(argv[0], argv);
    return -errno;
}

/* Wait for pid, forwarding TERM/HUP (sigfd >= 0) and enforcing the
 * timeout; -1 as timeout means none. */
static int ar_wait_child(pid_t pid, atomrun_spawn_opts *o, int sigfd,
                         int *status)
{
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    double deadline = o->timeout >= 0 ? ar_now() + o->timeout : -1;
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
            double left = deadline - ar_now();
            if (left <= 0) {
                kill(target, stage == 0 ? SIGTERM : SIGKILL);
                o->timed_out = 1;
                stage++;
                deadline = stage == 1 ? ar_now() + o->kill_after : -1;
                continue;
            }
            wait_ms = (int)(left * 1000) + 1;
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
                kill(pid, (int)si.ssi_signo);
        }
    }
    if (pidfd >= 0)
        close(pidfd);
    return 0;
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
    if (o->forward) {
        sigaddset(&fwd, SIGTERM);
        sigaddset(&fwd, SIGHUP);
    }
    pthread_sigmask(SIG_BLOCK, &fwd, &saved);
    pid = fork();
    if (pid < 0) {
        r = -errno;
        pthread_sigmask(SIG_SETMASK, &saved, NULL);
        close(pipefd[0]);
        close(pipefd[1]);
        return r;
    }
    if (pid == 0)
        ar_child_exec(argv, o, &saved, pipefd[1]);
    close(pipefd[1]);
    do
        n = read(pipefd[0], &err, sizeof err);
    while (n < 0 && errno == EINTR);
    close(pipefd[0]);
    if (o->forward)
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
