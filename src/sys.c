/*
 * sys.c -- error names, clocks, sleeping, stat: the small pieces of the core.
 */
#define _GNU_SOURCE
#include "ar_internal.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

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
        return "OK";
    name = strerrorname_np(-result);      /* "ENOENT" (glibc >= 2.32) */
    return name ? name : "EUNKNOWN";
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

double atomrun_now(void)
{
    return ar_now();
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

static const char *ar_type_name(mode_t m)
{
    if (S_ISREG(m))  return "file";
    if (S_ISDIR(m))  return "directory";
    if (S_ISLNK(m))  return "link";
    if (S_ISFIFO(m)) return "fifo";
    if (S_ISSOCK(m)) return "socket";
    if (S_ISCHR(m))  return "char";
    if (S_ISBLK(m))  return "block";
    return "unknown";
}

int atomrun_stat_path(const char *path, int follow, atomrun_stat *out)
{
    struct stat st;
    if ((follow ? stat(path, &st) : lstat(path, &st)) != 0)
        return -errno;
    memset(out, 0, sizeof *out);
    out->dev = st.st_dev;
    out->ino = st.st_ino;
    out->size = (uint64_t)st.st_size;
    out->uid = st.st_uid;
    out->gid = st.st_gid;
    out->mode = st.st_mode & 07777;
    out->mtime = (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec / 1e9;
    strcpy(out->type, ar_type_name(st.st_mode));
    return 0;
}

int atomrun_mkdir(const char *path, int mode)
{
    int r = ar_mkdir_parents(path);
    if (r < 0)
        return r;
    if (mkdir(path, (mode_t)mode) != 0) {
        struct stat st;
        if (errno != EEXIST)
            return -errno;
        /* "exists" is success only for a directory (or a link to one). */
        if (stat(path, &st) != 0)
            return -errno;
        if (!S_ISDIR(st.st_mode))
            return -ENOTDIR;
    }
    return 0;
}
