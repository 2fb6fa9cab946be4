/*
 * core/clock.c -- the clocks and a sleep that lasts its full time.
 *
 *   CLOCK_MONOTONIC  ar_now(): deadlines of calls, which must not jump
 *                    with the wall clock.
 *   CLOCK_BOOTTIME   ar_boot_now(): the monotonic clock plus the time the
 *                    machine was suspended.  The etcd lost rule counts on
 *                    it: a lease runs out on the cluster while this host
 *                    sleeps, and CLOCK_MONOTONIC does not see that time.
 *   condition variables  ar_cond_init() binds them to CLOCK_MONOTONIC.  The
 *                    default (CLOCK_REALTIME) is the trap: a wall clock
 *                    stepped back 20 s stretches a 3 s wait to 23 s, long
 *                    enough for a lease to expire under a keepalive thread
 *                    that believes it is sleeping for 3 s.
 */
#define _GNU_SOURCE
#include "core/internal.h"

#include <errno.h>
#include <time.h>

static double seconds_of(const struct timespec *ts)
{
    return (double)ts->tv_sec + (double)ts->tv_nsec / 1e9;
}

double ar_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return seconds_of(&ts);
}

double ar_boot_now(void)
{
    struct timespec ts;
    /* Linux >= 2.6.39 has it; before that, the monotonic clock is the best
     * there is (and suspends go unnoticed, as they did then). */
    if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0)
        clock_gettime(CLOCK_MONOTONIC, &ts);
    return seconds_of(&ts);
}

void ar_sleep(double seconds)
{
    struct timespec ts;
    if (!(seconds > 0))
        return;
    if (seconds > 1e9)
        seconds = 1e9;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    /* A signal cuts nanosleep short; it writes the time left back into ts,
     * so resuming sleeps exactly the rest. */
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int ar_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    int r = pthread_condattr_init(&attr);
    if (r != 0)
        return -r;
    r = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (r == 0)
        r = pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
    return -r;
}

void ar_cond_wait_for(pthread_cond_t *cv, pthread_mutex_t *mu, double seconds)
{
    struct timespec ts;
    if (!(seconds > 0))
        return;
    if (seconds > 1e6)
        seconds = 1e6;
    clock_gettime(CLOCK_MONOTONIC, &ts);   /* the clock ar_cond_init chose */
    ts.tv_sec += (time_t)seconds;
    ts.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(cv, mu, &ts);
}
