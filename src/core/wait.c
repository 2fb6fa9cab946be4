/*
 * core/wait.c -- waiting for a lock in the kernel, with a deadline.
 *
 * Polling (try, sleep 50 ms, try again) is what most lock libraries do, and
 * it costs up to the poll interval on every hand-off.  Here the waiter
 * sleeps inside flock(2) / F_OFD_SETLKW, so the kernel wakes it the moment
 * the lock is released.  The deadline is a per-thread POSIX timer that sends
 * one signal to this thread; its handler is empty and installed without
 * SA_RESTART, so the blocking call returns EINTR and we look at the clock.
 *
 * The timer is created once per thread and re-armed for each wait: a
 * hand-off is on the critical path of whoever waits, and creating and
 * deleting a kernel timer around every wait cost more than the wait's own
 * system call.  Only when no signal can be had at all (a host that ignores
 * or handles every real-time signal) do we poll; see wait_poll().
 */
#define _GNU_SOURCE
#include "core/internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* After the deadline the timer keeps firing at this interval until we
 * delete it.  Why: the first signal can land in the few instructions between
 * our clock check and re-entering the system call, where it interrupts
 * nothing; without a repeat the wait would then never end. */
#define AR_REFIRE_NS (2 * 1000 * 1000)

static atomic_int timer_signo;            /* 0 = not chosen yet */
static pthread_mutex_t signal_mutex = PTHREAD_MUTEX_INITIALIZER;

static void timer_handler(int signo)
{
    (void)signo;    /* its only job is to make the blocking call return EINTR */
}

static int is_our_handler(const struct sigaction *sa)
{
    return !(sa->sa_flags & SA_SIGINFO) && sa->sa_handler == timer_handler;
}

/* Install our handler on signo unless someone else handles it. */
static int claim_signal(int signo)
{
    struct sigaction old, sa;

    if (signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP)
        return -EINVAL;
    if (sigaction(signo, NULL, &old) != 0)
        return -errno;
    if (is_our_handler(&old))
        return 0;
    if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL)
        return -EBUSY;                 /* the host's: never replace it */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = timer_handler;  /* no SA_RESTART: that is the point */
    sigemptyset(&sa.sa_mask);
    if (sigaction(signo, &sa, NULL) != 0)
        return -errno;
    return 0;
}

int atomrun_set_timer_signal(int signo)
{
    int r;
    pthread_mutex_lock(&signal_mutex);
    r = claim_signal(signo);
    if (r == 0)
        atomic_store(&timer_signo, signo);
    pthread_mutex_unlock(&signal_mutex);
    return r;
}

int atomrun_timer_signal(void)
{
    return atomic_load(&timer_signo);
}

/* The signal to use, choosing one the first time. */
static int timer_signal_get(void)
{
    int signo = atomic_load(&timer_signo);
    if (signo)
        return signo;
    pthread_mutex_lock(&signal_mutex);
    signo = atomic_load(&timer_signo);
    /* SIGRTMIN and SIGRTMIN+1 are the ones hosts and libraries grab first. */
    for (int s = SIGRTMIN + 2; !signo && s <= SIGRTMAX; s++)
        if (claim_signal(s) == 0)
            signo = s;
    if (signo)
        atomic_store(&timer_signo, signo);
    pthread_mutex_unlock(&signal_mutex);
    return signo ? signo : -EAGAIN;
}

static int is_busy(int r)
{
    return r == -EWOULDBLOCK || r == -EAGAIN || r == -EACCES;
}

static int wait_forever(ar_attempt_fn attempt, void *ctx)
{
    int r;
    do
        r = attempt(ctx, 1);
    while (r == -EINTR);   /* some other signal: keep waiting */
    return r;
}

/* ------------------------------------------------ the per-thread timer */

/*
 * This thread's deadline timer, created on its first timed wait.  tid is
 * the thread it was made for: a child made by fork() has a copy of this
 * variable but not of the kernel timer, so a tid that is not ours means
 * "make a new one" (the atfork handler says so too, for a child that
 * happens to get the same tid number in a new pid namespace).
 */
typedef struct ar_thread_timer {
    timer_t id;
    pid_t   tid;          /* 0: no timer */
    int     signo;        /* the signal it was created with */
} ar_thread_timer;

static _Thread_local ar_thread_timer thread_timer;

static pthread_key_t  tt_key;
static pthread_once_t tt_once = PTHREAD_ONCE_INIT;
static int            tt_key_ok;

/*
 * At thread exit, delete the thread's timer: kernel timers belong to the
 * process, and a host that runs many short-lived threads would otherwise
 * leak one per thread.  (The library is linked -z nodelete so that this
 * destructor can never outlive its code after a dlclose.)
 */
static void tt_destroy(void *p)
{
    ar_thread_timer *tt = p;
    if (tt->tid == gettid())
        timer_delete(tt->id);
    tt->tid = 0;
}

static void tt_forget(void)   /* in a fork() child */
{
    thread_timer.tid = 0;
}

static void tt_init(void)
{
    tt_key_ok = pthread_key_create(&tt_key, tt_destroy) == 0;
    pthread_atfork(NULL, NULL, tt_forget);
}

/* Arm this thread's timer: first at `timeout` seconds, then every
 * AR_REFIRE_NS until disarmed. */
static int timer_arm(int signo, double timeout)
{
    struct itimerspec its;
    pid_t tid = gettid();

    if (thread_timer.tid != tid || thread_timer.signo != signo) {
        struct sigevent sev;

        pthread_once(&tt_once, tt_init);
        if (thread_timer.tid == tid)                 /* the host chose another signal */
            timer_delete(thread_timer.id);
        thread_timer.tid = 0;
        memset(&sev, 0, sizeof sev);
        sev.sigev_notify = SIGEV_THREAD_ID;
        sev.sigev_signo = signo;
#ifdef sigev_notify_thread_id
        sev.sigev_notify_thread_id = tid;
#else
        sev._sigev_un._tid = tid;             /* glibc < 2.35 names no macro */
#endif
        if (timer_create(CLOCK_MONOTONIC, &sev, &thread_timer.id) != 0)
            return -errno;
        thread_timer.tid = tid;
        thread_timer.signo = signo;
        if (tt_key_ok)
            pthread_setspecific(tt_key, &thread_timer);
    }
    memset(&its, 0, sizeof its);
    its.it_value.tv_sec = (time_t)timeout;
    its.it_value.tv_nsec = (long)((timeout - (double)its.it_value.tv_sec) * 1e9);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1;    /* zero would disarm it */
    its.it_interval.tv_nsec = AR_REFIRE_NS;
    if (timer_settime(thread_timer.id, 0, &its, NULL) != 0)
        return -errno;
    return 0;
}

/* Disarm it before we return: a signal after the wait would cut short
 * some unrelated blocking call of the host's (no SA_RESTART). */
static void timer_disarm(void)
{
    static const struct itimerspec zero;
    timer_settime(thread_timer.id, 0, &zero, NULL);
}

/* ------------------------------------------------------------ waiting */

static void sleep_ns(long ns)
{
    struct timespec ts = { ns / 1000000000L, ns % 1000000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/*
 * The fallback when no signal can interrupt a blocking wait: every
 * real-time signal is ignored or handled by the host, so none can be
 * claimed (we never replace a host's disposition), or the kernel will not
 * give us a timer.  Without a signal nothing can end a blocked flock(2) at
 * the deadline -- a helper thread cannot either: pthread_kill needs a
 * signal, and flock(2) is no cancellation point -- so we try without
 * blocking and sleep in between, 1 ms at first, backing off to 10 ms.  A
 * hand-off then costs up to 10 ms instead of a kernel wake-up, but the wait
 * ends at its deadline and a lock that is free is taken: never a wrong
 * "busy" (as returning EAGAIN here once did).
 */
static int wait_poll(ar_attempt_fn attempt, void *ctx, double deadline)
{
    long step = 1000000L;                       /* 1 ms */
    for (;;) {
        double left = deadline - ar_now();
        int r;
        if (left <= 0)
            return ATOMRUN_ETIMEOUT;
        sleep_ns(left * 1e9 < (double)step ? (long)(left * 1e9) + 1 : step);
        r = attempt(ctx, 0);
        if (!is_busy(r))
            return r;
        if (step < 10000000L)
            step += step / 2 + 1;
        if (step > 10000000L)
            step = 10000000L;                   /* 10 ms */
    }
}

static int wait_until(ar_attempt_fn attempt, void *ctx, double timeout)
{
    double deadline = ar_now() + timeout;
    sigset_t ours, saved;
    int signo, r;

    signo = timer_signal_get();
    if (signo < 0)
        return wait_poll(attempt, ctx, deadline);
    /* A host may block signals in its worker threads; ours must get
     * through while we wait, or the deadline would never interrupt.  One
     * call both unblocks it and tells us whether it was blocked; only then
     * is there a mask to put back. */
    sigemptyset(&ours);
    sigaddset(&ours, signo);
    pthread_sigmask(SIG_UNBLOCK, &ours, &saved);
    r = timer_arm(signo, timeout);
    if (r == -EAGAIN) {
        r = wait_poll(attempt, ctx, deadline);   /* out of kernel timers */
    } else if (r == 0) {
        for (;;) {
            r = attempt(ctx, 1);
            if (r != -EINTR)
                break;
            if (ar_now() >= deadline) {
                r = ATOMRUN_ETIMEOUT;
                break;
            }
            /* another signal, or ours a hair early: wait on */
        }
        timer_disarm();
    }
    if (sigismember(&saved, signo))
        pthread_sigmask(SIG_SETMASK, &saved, NULL);
    return r;
}

int ar_wait_for(ar_attempt_fn attempt, void *ctx, double timeout)
{
    int r = attempt(ctx, 0);
    if (!is_busy(r))
        return r;
    if (timeout == 0)
        return ATOMRUN_EBUSY;
    if (timeout < 0 || timeout > 1e9)       /* over 30 years: forever */
        r = wait_forever(attempt, ctx);
    else
        r = wait_until(attempt, ctx, timeout);
    /* A blocking request is never "busy"; EAGAIN here would be a kernel
     * resource limit, which we pass on as it is. */
    return r;
}
