/*
 * thread_waits.c -- deadlines in threads, and a host's signal handlers.
 *
 * Uses only the public header.  The main thread holds an exclusive flock on
 * a file through one descriptor; eight threads each open their own
 * descriptor and wait with a different timeout.  Each must time out at its
 * own deadline (never before it, not long after), while the main thread
 * pesters them with SIGUSR1, for which the host installed a handler without
 * SA_RESTART: their blocking flock(2) returns EINTR and must resume.  One
 * thread blocks every signal first, as host worker threads often do.
 * Then a waiter with a long timeout must get the lock when it is released.
 *
 * The host's own handlers, on SIGUSR1 and on the real-time signal atomrun
 * would have picked first, must still be there at the end, and
 * atomrun_set_timer_signal() must refuse both with -EBUSY.
 *
 * Exit 0 on success; otherwise print each failure and exit 1.
 */
#define _GNU_SOURCE
#include "atomrun.h"

#include <time.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define NTHREADS 8
/* Generous: a loaded 2-core machine under ASan still wakes within this. */
#define LATE_OK 1.5

#define TEST_NAME "thread_waits"
#include "check.h"

/* CLOCK_MONOTONIC seconds, the clock atomrun's own deadlines run on. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static atomic_int usr1_count;
static atomic_int rt_count;

static void host_usr1(int signo)
{
    (void)signo;
    atomic_fetch_add(&usr1_count, 1);
}

static void host_rt(int signo, siginfo_t *si, void *uc)
{
    (void)signo;
    (void)si;
    (void)uc;
    atomic_fetch_add(&rt_count, 1);
}

typedef struct waiter {
    pthread_t thread;
    const char *path;
    double timeout;
    int block_all;          /* block every signal before waiting */
    atomic_int started;
    atomic_int done;
    int result;
    double took;
    int open_error;
} waiter;

static void *waiter_main(void *arg)
{
    waiter *w = arg;
    int fd;
    double t0;

    if (w->block_all) {
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);
    }
    fd = atomrun_lockfile_open(w->path, 1, 0666, ATOMRUN_NOFOLLOW, NULL);
    if (fd < 0) {
        w->open_error = fd;
        atomic_store(&w->started, 1);
        atomic_store(&w->done, 1);
        return NULL;
    }
    atomic_store(&w->started, 1);
    t0 = now_s();
    w->result = atomrun_flock(fd, ATOMRUN_EXCLUSIVE, w->timeout);
    w->took = now_s() - t0;
    if (w->result == 0)
        atomrun_funlock(fd);
    close(fd);
    atomic_store(&w->done, 1);
    return NULL;
}

static int all_done(waiter *ws, int n)
{
    for (int i = 0; i < n; i++)
        if (!atomic_load(&ws[i].done))
            return 0;
    return 1;
}

static int handler_is(int signo, void (*h)(int))
{
    struct sigaction sa;
    if (sigaction(signo, NULL, &sa) != 0)
        return 0;
    return !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == h;
}

static int action_is(int signo, void (*h)(int, siginfo_t *, void *))
{
    struct sigaction sa;
    if (sigaction(signo, NULL, &sa) != 0)
        return 0;
    return (sa.sa_flags & SA_SIGINFO) && sa.sa_sigaction == h;
}

static int handler_installed(int signo)
{
    struct sigaction sa;
    if (sigaction(signo, NULL, &sa) != 0)
        return 0;
    return (sa.sa_flags & SA_SIGINFO) || (sa.sa_handler != SIG_DFL &&
                                          sa.sa_handler != SIG_IGN);
}

int main(void)
{
    char dir[] = "/tmp/atomrun-thread-waits.XXXXXX";
    char path[sizeof dir + 16];
    struct sigaction sa;
    waiter ws[NTHREADS];
    int holder_fd, r;
    int rt_host = SIGRTMIN + 2;     /* the first one atomrun would choose */

    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/lock", dir);

    /* The host's handlers, installed before atomrun does anything. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = host_usr1;          /* no SA_RESTART: real EINTRs */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = host_rt;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(rt_host, &sa, NULL);

    CHECK(atomrun_timer_signal() == 0, "a timer signal was chosen before any wait: %d",
          atomrun_timer_signal());
    r = atomrun_set_timer_signal(SIGUSR1);
    CHECK(r == -EBUSY, "set_timer_signal(SIGUSR1) handled by the host gave %d, not -EBUSY", r);
    r = atomrun_set_timer_signal(rt_host);
    CHECK(r == -EBUSY, "set_timer_signal(SIGRTMIN+2) handled by the host gave %d, not -EBUSY", r);
    r = atomrun_set_timer_signal(SIGKILL);
    CHECK(r == -EINVAL, "set_timer_signal(SIGKILL) gave %d, not -EINVAL", r);
    r = atomrun_set_timer_signal(0);
    CHECK(r == -EINVAL, "set_timer_signal(0) gave %d, not -EINVAL", r);
    CHECK(atomrun_timer_signal() == 0, "a refused set_timer_signal chose signal %d",
          atomrun_timer_signal());

    holder_fd = atomrun_lockfile_open(path, 1, 0666, ATOMRUN_NOFOLLOW, NULL);
    if (holder_fd < 0) {
        fprintf(stderr, "thread_waits: cannot open %s: %s\n", path, atomrun_strerror(holder_fd));
        return 1;
    }
    r = atomrun_flock(holder_fd, ATOMRUN_EXCLUSIVE, 0);
    CHECK(r == 0, "main thread could not take the lock: %d", r);

    /* Eight waiters with their own deadlines, 0.2 s apart. */
    for (int i = 0; i < NTHREADS; i++) {
        memset(&ws[i], 0, sizeof ws[i]);
        ws[i].path = path;
        ws[i].timeout = 0.25 + 0.2 * i;
        ws[i].block_all = i == NTHREADS - 1;
        if (pthread_create(&ws[i].thread, NULL, waiter_main, &ws[i]) != 0) {
            fprintf(stderr, "thread_waits: pthread_create failed\n");
            return 1;
        }
    }
    /* Interrupt them with the host's SIGUSR1 until all have given up. */
    while (!all_done(ws, NTHREADS)) {
        for (int i = 0; i < NTHREADS; i++)
            if (atomic_load(&ws[i].started) && !atomic_load(&ws[i].done))
                pthread_kill(ws[i].thread, SIGUSR1);
        usleep(15000);
    }
    for (int i = 0; i < NTHREADS; i++) {
        waiter *w = &ws[i];
        pthread_join(w->thread, NULL);
        CHECK(w->open_error == 0, "thread %d could not open the lock file: %d", i, w->open_error);
        CHECK(w->result == ATOMRUN_ETIMEOUT, "thread %d: result %d (%s), not a timeout",
              i, w->result, atomrun_err_name(w->result));
        CHECK(w->took >= w->timeout - 0.001,
              "thread %d: timed out after %.3f s, before its deadline of %.3f s", i, w->took, w->timeout);
        CHECK(w->took < w->timeout + LATE_OK,
              "thread %d: timed out after %.3f s, long after its deadline of %.3f s", i, w->took, w->timeout);
    }
    CHECK(atomic_load(&usr1_count) > 0, "no SIGUSR1 reached the waiters");

    /* The host's handlers are untouched; atomrun took another signal. */
    int ours = atomrun_timer_signal();
    CHECK(ours != 0, "no timer signal chosen after timed waits");
    CHECK(ours != SIGUSR1 && ours != rt_host, "atomrun took the host's signal %d", ours);
    CHECK(ours >= SIGRTMIN && ours <= SIGRTMAX, "timer signal %d is not a real-time signal", ours);
    CHECK(handler_installed(ours), "the timer signal %d has no handler", ours);
    CHECK(handler_is(SIGUSR1, host_usr1), "the host's SIGUSR1 handler was replaced");
    CHECK(action_is(rt_host, host_rt), "the host's SIGRTMIN+2 handler was replaced");
    r = atomrun_set_timer_signal(SIGUSR1);
    CHECK(r == -EBUSY, "set_timer_signal(SIGUSR1) after waits gave %d, not -EBUSY", r);
    CHECK(atomrun_timer_signal() == ours, "the timer signal changed to %d", atomrun_timer_signal());
    r = atomrun_set_timer_signal(ours);
    CHECK(r == 0, "set_timer_signal(%d), atomrun's own, gave %d, not 0", ours, r);

    /* A waiter with a long timeout gets the lock when it is released. */
    {
        waiter w;
        memset(&w, 0, sizeof w);
        w.path = path;
        w.timeout = 30;
        pthread_create(&w.thread, NULL, waiter_main, &w);
        while (!atomic_load(&w.started))
            usleep(1000);
        usleep(200000);
        for (int k = 0; k < 5; k++) {
            pthread_kill(w.thread, SIGUSR1);
            usleep(10000);
        }
        CHECK(!atomic_load(&w.done), "the waiter stopped waiting while the lock was held");
        atomrun_funlock(holder_fd);
        pthread_join(w.thread, NULL);
        CHECK(w.result == 0, "the waiter did not get the released lock: %d (%s)", w.result,
              atomrun_err_name(w.result));
        CHECK(w.took < 25, "the hand-off took %.3f s", w.took);
    }

    /* timeout 0 is "busy" at once; a free lock is granted with a timeout. */
    {
        int fd2 = atomrun_lockfile_open(path, 1, 0666, ATOMRUN_NOFOLLOW, NULL);
        CHECK(atomrun_flock(holder_fd, ATOMRUN_SHARED, 0) == 0, "shared lock refused");
        r = atomrun_flock(fd2, ATOMRUN_EXCLUSIVE, 0);
        CHECK(r == ATOMRUN_EBUSY, "timeout 0 gave %d, not ATOMRUN_EBUSY", r);
        CHECK(strcmp(atomrun_err_name(r), "busy") == 0, "err_name(EBUSY) is %s", atomrun_err_name(r));
        CHECK(strcmp(atomrun_err_name(ATOMRUN_ETIMEOUT), "timeout") == 0, "err_name(ETIMEOUT) is %s",
              atomrun_err_name(ATOMRUN_ETIMEOUT));
        r = atomrun_flock(fd2, ATOMRUN_SHARED, 5);
        CHECK(r == 0, "shared with shared gave %d", r);
        close(fd2);
    }

    close(holder_fd);
    unlink(path);
    rmdir(dir);
    if (failures) {
        fprintf(stderr, "thread_waits: %d check(s) failed\n", failures);
        return 1;
    }
    printf("thread_waits: ok (%d SIGUSR1 interruptions, timer signal %d)\n",
           atomic_load(&usr1_count), ours);
    return 0;
}
