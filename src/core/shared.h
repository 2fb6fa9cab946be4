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

/* CLOCK_MONOTONIC seconds: every internal deadline's clock (core/clock.c).
 * Not public: no public call takes a deadline, only relative timeouts. */
double ar_now(void);

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
 * *out (malloc'd).  deadline: ar_now()-based absolute time, or <= 0
 * for now + op_timeout.  0, ATOMRUN_EUNAVAILABLE, -EACCES (auth), -EPROTO
 * (not an etcd endpoint), -EINVAL (the server rejected the request: err
 * has its message), -ENOMEM (etcd/http.c).  A C host has atomrun_etcd_txn.
 */
int ar_etcd_call(atomrun_etcd *c, const char *path, const char *json,
                 double deadline, char **out, char *err, size_t errlen);

/* Identity of an open file, for comparing locks (core/lock.c): 0 or
 * -errno. */
int ar_file_id(int fd, uint64_t *dev, uint64_t *ino);

/*
 * (etcd/guard.c) The SIGTERM-to-SIGKILL time of a guarded command for a lock of ttl
 * seconds: asked (< 0: the default, ttl/4 and at most 5 s), or -ERANGE
 * when it does not fit: TERM plus kill_after must end the command
 * ATOMRUN_ETCD_GUARD_MARGIN before the lease can expire while leaving the
 * keepalive half the TTL to be confirmed, so kill_after <= ttl/2 - margin.
 */
int ar_etcd_kill_after(int ttl, double asked, double *out);

/* One field of atomrun_etcd_lock_info, for the binding's and kv.c's
 * one-field questions. */
static inline atomrun_etcd_lockinfo ar_etcd_lockinfo(const atomrun_etcd_lock *l)
{
    atomrun_etcd_lockinfo info;
    atomrun_etcd_lock_info(l, &info);
    return info;
}

/* -------------------------------------------------- the held-lock set
 * (core/held.c).  Hidden: an intrusive list with prev/next is no ABI to
 * publish, and a C host that wants "deadlock" for its own locks keeps its
 * own list; the binding keeps one per Lua state. */

/*
 * The locks one owner (a Lua state, a C host's thread) holds, so that a
 * request only a release of its own could satisfy fails at once with
 * -EDEADLK instead of hanging (the kernel does not see that flock locks on
 * two descriptions of one file, or two OFD locks, belong to one program;
 * etcd sees two sessions of one process as strangers), and so that a child
 * started by atomrun_run() inherits exactly the descriptors of its file
 * locks (atomrun_spawn_opts.keep_fds).
 *
 * An intrusive list: the caller embeds an ar_held in whatever owns the
 * lock and keeps it in place while it is in the set (nothing is allocated
 * here).  A set is not locked: one thread uses it at a time.
 */
enum ar_held_kind {
    AR_HELD_FLOCK = 1,
    AR_HELD_RANGE = 2,
    AR_HELD_ETCD = 3               /* a lock on an etcd name */
};

typedef struct ar_held {
    struct ar_held *prev, *next;   /* NULL while not in a set */
    int         kind;                   /* ar_held_kind */
    int         mode;                   /* ATOMRUN_SHARED/EXCLUSIVE */
    int         fd;                     /* files; -1 for etcd names */
    uint64_t    dev, ino;               /* files: ar_file_id() */
    const void *owner;                  /* ranges: the open file (its
                                           locks merge, see _conflict) */
    int64_t     start, length;          /* ranges; length 0 = to EOF */
    /* etcd names: one cluster is one id whatever endpoints reached it
     * (atomrun_etcd_lock_info, atomrun_etcd_cluster_id); the name
     * is compared byte for byte, never by a hash (a collision would be a
     * false "deadlock"), and is not copied: the caller keeps it alive. */
    uint64_t    cluster;
    const char *name;
    size_t      namelen;
    int         slots;                  /* > 1: one slot of a semaphore of
                                           that many */
} ar_held;

typedef struct ar_heldset {
    ar_held head;                  /* sentinel; do not move the set
                                           once initialised */
} ar_heldset;

void ar_heldset_init(ar_heldset *s);
/* Add h, filled in by the caller with prev/next NULL (a zeroed struct);
 * a no-op if it is already in a set. */
void ar_heldset_add(ar_heldset *s, ar_held *h);
/* Take h out of its set; a no-op if it is in none.  No set argument: a
 * release (the hot path) need not find its owner's set. */
void ar_heldset_remove(ar_held *h);
/* A lock in s that the request `req` (kind, mode and the lock's identity:
 * dev, ino and for ranges start/length; for etcd names cluster, name,
 * namelen and slots) conflicts with, ignoring locks held through
 * req->owner when that is not NULL; NULL if none.  Etcd names follow the
 * queue's rule (etcd/lock.c): the kinds exclude each other, shared locks
 * share, and a semaphore's slots conflict only when s holds as many of
 * them as the request's semaphore has (the one returned is then one of
 * them). */
const ar_held *ar_heldset_conflict(
    const ar_heldset *s, const ar_held *req);
/* Call fn on every lock in s until it returns non-zero (which is then
 * returned); fn may remove the lock it is given. */
int ar_heldset_foreach(ar_heldset *s,
    int (*fn)(ar_held *h, void *ctx), void *ctx);
/* The descriptors of the file locks in s, at most max of them, into fds
 * (NULL when max is 0); returns how many file locks s holds (which may
 * exceed max).  Etcd names have no descriptor and are not counted. */
size_t ar_heldset_fds(const ar_heldset *s, int *fds,
                                       size_t max);
/* How many locks s holds, of every kind. */
size_t ar_heldset_count(const ar_heldset *s);

#endif
