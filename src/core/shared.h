/*
 * core/shared.h -- helpers of the C library that the Lua binding (src/bind/)
 * and the etcd client (src/etcd/) use too, but that a C host has no need
 * of: libc does the same (close, nanosleep, stat, mkdir -p) or they serve
 * one message or one tool of the binding's.  They were public in ABI 0's
 * drafts; here they are hidden (no ATOMRUN_API, -fvisibility=hidden), which
 * is enough: the binding and the core are linked into the same
 * libatomrun.so, libatomrun.a, atomrun/core.so and atomrun binary, so the
 * names resolve inside each and are exported from none.  Nothing here is
 * installed; the C tests (spec/) use only atomrun.h.
 */
#ifndef AR_SHARED_H
#define AR_SHARED_H

#include "atomrun.h"

/* close(2) as -errno (core/lock.c says why it never retries). */
int ar_close(int fd);

/* Sleep the full time, despite signals (core/clock.c). */
void ar_sleep(double seconds);

/* stat(2) (follow) or lstat(2) of path, for the binding's status and
 * messages (core/fs.c). */
typedef struct ar_stat {
    uint64_t dev, ino, size;
    unsigned uid, gid, mode;         /* mode: permission bits */
    char     type[12];               /* "file", "directory", "link", ... */
    double   mtime;
} ar_stat;
int ar_stat_path(const char *path, int follow, ar_stat *st);
/* mkdir -p by the protected-symlink walk: 0 also if a directory exists
 * there; -ENOTDIR if a file does (core/fs.c). */
int ar_mkdir(const char *path, int mode);

/* 1 if the ranges [s1, s1+l1) and [s2, s2+l2) overlap (length 0: to EOF)
 * (core/held.c). */
int ar_ranges_overlap(int64_t s1, int64_t l1, int64_t s2, int64_t l2);

/* The result named by one of atomrun_err_name's codes ("ENOENT", "busy"),
 * or 0 for a name that is none of them: the binding's errcode()
 * (core/error.c). */
int ar_err_from_name(const char *name);

/*
 * One raw gateway call, for the binding's _etcd_call (`atomrun doctor`):
 * POST json to path ("/v3/kv/range") and return the answer's JSON text in
 * *out (malloc'd).  deadline: atomrun_now()-based absolute time, or <= 0
 * for now + op_timeout.  0, ATOMRUN_EUNAVAILABLE, -EACCES (auth), -EPROTO
 * (not an etcd endpoint), -EINVAL (the server rejected the request: err
 * has its message), -ENOMEM (etcd/http.c).  A C host has atomrun_etcd_txn.
 */
int ar_etcd_call(atomrun_etcd *c, const char *path, const char *json,
                 double deadline, char **out, char *err, size_t errlen);

#endif
