/*
 * clockshim.c -- LD_PRELOAD'ed by etcd_guard_spec.lua to make two clock
 * faults for real in one process tree, through clock_gettime:
 *
 *   AR_SHIM_REALTIME_OFFSET=S   CLOCK_REALTIME reads S seconds ahead.  A
 *       timed wait armed on the wall clock (pthread_cond_timedwait with the
 *       default clock) then lasts S seconds longer: what a wall clock
 *       stepped back by S seconds right after the wait was armed does.
 *   AR_SHIM_BOOTTIME_JUMP=S, AR_SHIM_BOOTTIME_AFTER=T   from T seconds
 *       after the first call on, CLOCK_BOOTTIME reads S seconds ahead: a
 *       suspend of S seconds that CLOCK_MONOTONIC does not see.
 *
 * Built by `make test` into build/clockshim.so; never installed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

typedef int (*clock_fn)(clockid_t, struct timespec *);

static clock_fn real_clock;
static double realtime_offset, boot_jump, boot_after, started;

static double env_seconds(const char *name)
{
    const char *v = getenv(name);
    return v ? strtod(v, NULL) : 0;
}

static double seconds(const struct timespec *ts)
{
    return (double)ts->tv_sec + (double)ts->tv_nsec / 1e9;
}

static void shift(struct timespec *ts, double by)
{
    double t = seconds(ts) + by;
    ts->tv_sec = (time_t)t;
    ts->tv_nsec = (long)((t - (double)ts->tv_sec) * 1e9);
}

/* Racing first calls from two threads compute the same values. */
static void load(void)
{
    struct timespec now;
    clock_fn f = (clock_fn)dlsym(RTLD_NEXT, "clock_gettime");
    realtime_offset = env_seconds("AR_SHIM_REALTIME_OFFSET");
    boot_jump = env_seconds("AR_SHIM_BOOTTIME_JUMP");
    boot_after = env_seconds("AR_SHIM_BOOTTIME_AFTER");
    f(CLOCK_MONOTONIC, &now);
    started = seconds(&now);
    real_clock = f;
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    int r;
    if (!real_clock)
        load();
    r = real_clock(id, ts);
    if (r != 0)
        return r;
    if (id == CLOCK_REALTIME && realtime_offset != 0) {
        shift(ts, realtime_offset);
    } else if (id == CLOCK_BOOTTIME && boot_jump != 0) {
        struct timespec now;
        real_clock(CLOCK_MONOTONIC, &now);
        if (seconds(&now) - started >= boot_after)
            shift(ts, boot_jump);
    }
    return 0;
}
