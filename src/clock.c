/*
 * clock.c -- the one clock (CLOCK_MONOTONIC: deadlines must not jump with
 * the wall clock) and a sleep that lasts its full time.
 */
#define _GNU_SOURCE
#include "ar_internal.h"

#include <errno.h>
#include <time.h>

double atomrun_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void atomrun_sleep(double seconds)
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
