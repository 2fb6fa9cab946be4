/*
 * fs.c -- paths and directories: stat by path, mkdir -p, and the missing
 * parents of a lock file (lock.c).
 */
#define _GNU_SOURCE
#include "ar_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int ar_mkdir_parents(const char *path)
{
    char *copy;
    int r = 0;

    /* Too long for the kernel anyway: fail before creating a single one of
     * the (up to two thousand) directories such a path can name. */
    if (strlen(path) >= PATH_MAX)
        return -ENAMETOOLONG;
    copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    /* copy + 1 skips a leading '/', but "" has no byte to skip. */
    for (char *p = *copy ? copy + 1 : copy; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(copy, 0777) != 0 && errno != EEXIST) {
            r = -errno;
            break;
        }
        *p = '/';
    }
    free(copy);
    return r;
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
