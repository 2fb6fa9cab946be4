/*
 * core/error.c -- the names and sentences for atomrun's results (-errno or one
 * of ATOMRUN_EBUSY/ETIMEOUT/ELOST/EUNAVAILABLE), both ways.
 */
#define _GNU_SOURCE
#include "core/internal.h"

#include <errno.h>
#include <string.h>

/* The errno table ends well below 4096 (glibc's is about 134 long). */
#define AR_ERRNO_MAX 4096

const char *atomrun_err_name(int result)
{
    const char *name;
    switch (result) {
    case ATOMRUN_EBUSY:    return "busy";
    case ATOMRUN_ETIMEOUT: return "timeout";
    case ATOMRUN_ELOST:    return "lost";
    case ATOMRUN_EUNAVAILABLE: return "unavailable";
    case -EEXIST:          return "exists";
    case -EDEADLK:         return "deadlock";
    default:               break;
    }
    if (result >= 0)
        return "OK";                      /* success: 0, or a count */
    if (result <= -AR_ERRNO_MAX)          /* and -INT_MIN would overflow */
        return "EUNKNOWN";
    name = strerrorname_np(-result);      /* "ENOENT" (glibc >= 2.32) */
    return name ? name : "EUNKNOWN";
}

int ar_err_from_name(const char *name)
{
    static const struct { const char *name; int result; } ours[] = {
        { "busy", ATOMRUN_EBUSY }, { "timeout", ATOMRUN_ETIMEOUT },
        { "exists", -EEXIST },     { "deadlock", -EDEADLK },
        { "lost", ATOMRUN_ELOST }, { "unavailable", ATOMRUN_EUNAVAILABLE },
    };
    for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++)
        if (strcmp(name, ours[i].name) == 0)
            return ours[i].result;
    for (int e = 1; e < AR_ERRNO_MAX; e++) {
        const char *n = strerrorname_np(e);
        if (n && strcmp(n, name) == 0)
            return -e;
    }
    return 0;
}

const char *atomrun_strerror(int result)
{
    switch (result) {
    case ATOMRUN_EBUSY:    return "lock is busy";
    case ATOMRUN_ETIMEOUT: return "timed out";
    case ATOMRUN_ELOST:    return "lock lost (its lease could have expired)";
    case ATOMRUN_EUNAVAILABLE: return "no etcd endpoint answered";
    default:               break;
    }
    return strerror(result < 0 ? -result : result);
}
