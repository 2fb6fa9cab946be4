/*
 * wait.c -- waiting for a lock in the kernel, with a deadline.
 *
 * Polling (try, sleep 50 ms, try again) is what most lock libraries do, and
 * it costs up to the poll interval on every hand-off.  Here the waiter
 * sleeps inside flock(2) / F_OFD_SETLKW, so the kernel wakes it the moment
 * the lock is released.  The deadline is a per-thread POSIX timer that sends
 * one signal to this thread; its handler is empty and installed without
 * SA_RESTART, so the blocking call returns EINTR and we look at the clock.
 */
#define _GNU_SOURCE
#include "ar_internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* After the deadline the timer keeps firing at this interval until we
 * delete it.  Why: the first signal can land in the few instructions between
 * our clock check and re-entering the system call, where it interrupts
 * nothing; without a repeat the wait would then never end. */
#define AR_REFIRE_NS (2 * 1000 * 1000)

static atomic_int ar_timer_signo;            /* 0 = not chosen yet */
static pthread_mutex_t ar_signal_mutex = PTHREAD_MUTEX_INITIALIZER;

static void ar_timer_handler(int signo)
{
    (void)signo;    /* its only job is to make the blocking call return EINTR */
}

static int ar_is_our_handler(const struct sigaction *sa)
{
    return !(sa->sa_flags & SA_SIGINFO) && sa->sa_handler == ar_timer_handler;
}

/* Install our handler on signo unless someone else handles it. */
static int ar_claim_signal(int signo)
{
    struct sigaction old, sa;

    if (signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP)
        return -EINVAL;
    if (sigaction(signo, NULL, &old) != 0)
        return -errno;
    if (ar_is_our_handler(&old))
        return 0;
    if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL)
        return -EBUSY;                 /* the host's: never replace it */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = ar_timer_handler;  /* no SA_RESTART: that is the point */
    sigemptyset(&sa.sa_mask);
    if (sigaction(signo, &sa, NULL) != 0)
        return -errno;
    return 0;
}

int atomrun_set_timer_signal(int signo)
{
    int r;
    pthread_mutex_lock(&ar_signal_mutex);
    r = ar_claim_signal(signo);
    if (r == 0)
        atomic_store(&ar_timer_signo, signo);
    pthread_mutex_unlock(&ar_signal_mutex);
    return r;
}

int atomrun_timer_signal(void)
{
    return atomic_load(&ar_timer_signo);
}

/* The signal to use, choosing one the first time. */
static int ar_timer_signal_get(void)
{
    int signo = atomic_load(&ar_timer_signo);
    if (signo)
        return signo;
    pthread_mutex_lock(&ar_signal_mutex);
    signo = atomic_load(&ar_timer_signo);
    /* SIGRTMIN and SIGRTMIN+1 are the ones hosts and libraries grab first. */
    for (int s = SIGRTMIN + 2; !signo && s <= SIGRTMAX; s++)
        if (ar_claim_signal(s) == 0)
            signo = s;
    if (signo)
        atomic_store(&ar_timer_signo, signo);
    pthread_mutex_unlock(&ar_signal_mutex);
    return signo ? signo : -EAGAIN;
}

static int ar_is_busy(int r)
{
    return r == -EWOULDBLOCK || r == -EAGAIN || r == -EACCES;
}

static int ar_wait_forever(ar_attempt_fn attempt, void *ctx)
{
    int r;
    do
        r = attempt(ctx, 1);
    while (r == -EINTR);   /* some other signal: keep waiting */
    return r;
}

/* A one-shot timer for this thread only, repeating after the deadline. */
static int ar_timer_start(timer_t *timer, int signo, double timeout)
{
    struct sigevent sev;
    struct itimerspec its;

    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = signo;
#ifdef sigev_notify_thread_id
    sev.sigev_notify_thread_id = gettid();
#else
    sev._sigev_un._tid = gettid();    /* glibc < 2.35 names no macro */
#endif
    if (timer_create(CLOCK_MONOTONIC, &sev, timer) != 0)
        return -errno;
    memset(&its, 0, sizeof its);
    its.it_value.tv_sec = (time_t)timeout;
    its.it_value.tv_nsec = (long)((timeout - (double)its.it_value.tv_sec) * 1e9);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1;    /* zero would disarm it */
    its.it_interval.tv_nsec = AR_REFIRE_NS;
    if (timer_settime(*timer, 0, &its, NULL) != 0) {
        int err = errno;
        timer_delete(*timer);
        return -err;
    }
    return 0;
}

static int ar_wait_until(ar_attempt_fn attempt, void *ctx, double timeout)
{
    double deadline = atomrun_now() + timeout;
    sigset_t ours, saved;
    timer_t timer;
    int signo, r;

    signo = ar_timer_signal_get();
    if (signo < 0)
        return signo;
    /* A host may block signals in its worker threads; ours must get
     * through while we wait, or the deadline would never interrupt. */
    sigemptyset(&ours);
    sigaddset(&ours, signo);
    pthread_sigmask(SIG_UNBLOCK, &ours, &saved);
    r = ar_timer_start(&timer, signo, timeout);
    if (r == 0) {
        for (;;) {
            r = attempt(ctx, 1);
            if (r != -EINTR)
                break;
            if (atomrun_now() >= deadline) {
                r = ATOMRUN_ETIMEOUT;
                break;
            }
            /* another signal, or ours a hair early: wait on */
        }
        timer_delete(timer);
    }
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    return r;
}

int ar_wait_for(ar_attempt_fn attempt, void *ctx, double timeout)
{
    int r = attempt(ctx, 0);
    if (!ar_is_busy(r))
        return r;
    if (timeout == 0)
        return ATOMRUN_EBUSY;
    if (timeout < 0 || timeout > 1e9)       /* over 30 years: forever */
        r = ar_wait_forever(attempt, ctx);
    else
        r = ar_wait_until(attempt, ctx, timeout);
    /* A blocking request is never "busy"; EAGAIN here would be a kernel
     * resource limit, which we pass on as it is. */
    return r;
}
