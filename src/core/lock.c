/*
 * core/lock.c -- whole-file locks (flock) and byte-range locks (OFD fcntl).
 *
 * Both kinds of lock belong to an open file description, not a process:
 * another descriptor of the same file being closed never drops them, and
 * two descriptions in one process exclude each other like two processes.
 */
#define _GNU_SOURCE
#include "core/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------ the lock file */

/*
 * O_NONBLOCK only so that opening a FIFO cannot hang; it changes nothing
 * for flock.  Never O_TRUNC: the lock file may hold a holder record.
 */
#define AR_LOCKFILE_FLAGS (O_CLOEXEC | O_NONBLOCK | O_NOCTTY)

/*
 * Opened by the walk of core/fs.c: a symlink at the last component is followed
 * only with follow, and any link on the way only by the protected-symlink
 * rule.  Missing parent directories are made when creating.
 */
static int open_rw_or_ro(const char *path, int create, int perm, int walk,
                         int *writable)
{
    int fd = ar_open_walked(path, O_RDWR | (create ? O_CREAT : 0) |
                            AR_LOCKFILE_FLAGS, create ? perm : 0,
                            walk | (create ? AR_WALK_MKDIR : 0));
    if (fd >= 0) {
        *writable = 1;
        return fd;
    }
    /* flock needs only read access: a read-only lock file (or a
     * directory, as flock(1) allows) still takes a lock. */
    if (fd == -EACCES || fd == -EISDIR || fd == -EROFS || fd == -ETXTBSY) {
        int err = fd;
        fd = ar_open_walked(path, O_RDONLY | AR_LOCKFILE_FLAGS, 0, walk);
        if (fd >= 0) {
            *writable = 0;
            return fd;
        }
        if (fd == -ENOENT)
            fd = err;
    }
    return fd;
}

int atomrun_lockfile_open(const char *path, int create, int perm,
                          int follow, int *writable)
{
    int w = 0, fd;

    if (!path || !*path)
        return -ENOENT;
    if (follow != ATOMRUN_NOFOLLOW && follow != ATOMRUN_FOLLOW &&
        follow != ATOMRUN_FOLLOW_PROTECTED)
        return -EINVAL;
    fd = open_rw_or_ro(path, create, perm,
                       follow == ATOMRUN_NOFOLLOW ? 0 : AR_WALK_FOLLOW, &w);
    if (writable)
        *writable = w;
    return fd;
}

/* ------------------------------------------------- a caller's descriptor */

int atomrun_fd_lockable(int fd, int mode, int use_fcntl, int *why)
{
    int fl, acc, w = ATOMRUN_FD_OK;

    if (fd < 0 || (fl = fcntl(fd, F_GETFL)) < 0)
        w = ATOMRUN_FD_CLOSED;
    else if (fl & O_PATH)
        w = ATOMRUN_FD_PATH;        /* flock and fcntl locks: EBADF */
    else if (use_fcntl) {
        /* fcntl locks check the descriptor's access mode, flock does not */
        acc = fl & O_ACCMODE;
        if (mode == ATOMRUN_EXCLUSIVE && acc == O_RDONLY)
            w = ATOMRUN_FD_READONLY;
        else if (mode == ATOMRUN_SHARED && acc == O_WRONLY)
            w = ATOMRUN_FD_WRITEONLY;
    }
    if (why)
        *why = w;
    return w == ATOMRUN_FD_OK ? 0 : -EBADF;
}

int ar_file_id(int fd, uint64_t *dev, uint64_t *ino)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -errno;
    *dev = st.st_dev;
    *ino = st.st_ino;
    return 0;
}

int ar_close(int fd)
{
    /* Linux frees the descriptor even when close reports EINTR or EIO:
     * never retry, or we might close a descriptor another thread got. */
    return close(fd) == 0 ? 0 : -errno;
}

/* --------------------------------------------------------------- flock */

typedef struct ar_flock_req {
    int fd;
    int op;
} ar_flock_req;

static int flock_attempt(void *ctx, int block)
{
    ar_flock_req *req = ctx;
    if (flock(req->fd, req->op | (block ? 0 : LOCK_NB)) == 0)
        return 0;
    return -errno;
}

int atomrun_flock(int fd, int mode, double timeout)
{
    ar_flock_req req = { fd, mode == ATOMRUN_SHARED ? LOCK_SH : LOCK_EX };
    return ar_wait_for(flock_attempt, &req, timeout);
}

int atomrun_funlock(int fd)
{
    return flock(fd, LOCK_UN) == 0 ? 0 : -errno;
}

int atomrun_flock_holder(int fd, int mode, atomrun_holder *h)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -errno;
    return ar_find_holder(fd, st.st_dev, st.st_ino, "FLOCK", mode, 0, 0, h);
}

/* ---------------------------------------------------------- byte ranges */

/*
 * The kernel decides once whether it has OFD locks (Linux >= 3.15).
 * Without them we fall back to classic F_SETLK, and say so: those locks
 * belong to the process, are dropped when it closes ANY descriptor of the
 * file, and do not exclude other threads or handles of the same process.
 */
static atomic_int ofd_missing;

static void fill_flock(struct flock *fl, short type, int64_t start,
                       int64_t length)
{
    memset(fl, 0, sizeof *fl);
    fl->l_type = type;
    fl->l_whence = SEEK_SET;
    fl->l_start = (off_t)start;
    fl->l_len = (off_t)length;
}

static int fcntl_lock(int fd, int block, struct flock *fl)
{
    int cmd;
    if (!atomic_load(&ofd_missing)) {
        cmd = block ? F_OFD_SETLKW : F_OFD_SETLK;
        if (fcntl(fd, cmd, fl) == 0)
            return 0;
        if (errno != EINVAL)
            return -errno;
        /* EINVAL with a valid request: this kernel has no OFD locks. */
        if (fcntl(fd, F_OFD_GETLK, &(struct flock){ .l_type = F_RDLCK,
                  .l_whence = SEEK_SET }) == 0 || errno != EINVAL)
            return -EINVAL;
        atomic_store(&ofd_missing, 1);
    }
    cmd = block ? F_SETLKW : F_SETLK;
    return fcntl(fd, cmd, fl) == 0 ? 0 : -errno;
}

const char *atomrun_range_mechanism(void)
{
    return atomic_load(&ofd_missing) ? "posix" : "ofd";
}

typedef struct ar_range_req {
    int fd;
    struct flock fl;
} ar_range_req;

static int range_attempt(void *ctx, int block)
{
    ar_range_req *req = ctx;
    struct flock fl = req->fl;          /* the kernel may write into it */
    return fcntl_lock(req->fd, block, &fl);
}

static int range_valid(int64_t start, int64_t length)
{
    return start >= 0 && length >= 0 &&
           (length == 0 || start <= INT64_MAX - length);
}

int atomrun_range_lock(int fd, int mode, int64_t start, int64_t length,
                       double timeout)
{
    ar_range_req req;
    if (!range_valid(start, length))
        return -EINVAL;
    req.fd = fd;
    fill_flock(&req.fl, mode == ATOMRUN_SHARED ? F_RDLCK : F_WRLCK,
               start, length);
    return ar_wait_for(range_attempt, &req, timeout);
}

int atomrun_range_unlock(int fd, int64_t start, int64_t length)
{
    struct flock fl;
    if (!range_valid(start, length))
        return -EINVAL;
    fill_flock(&fl, F_UNLCK, start, length);
    return fcntl_lock(fd, 0, &fl);
}

int atomrun_range_test(int fd, int mode, int64_t start, int64_t length,
                       atomrun_holder *h)
{
    struct flock fl;
    struct stat st;
    int cmd = atomic_load(&ofd_missing) ? F_GETLK : F_OFD_GETLK;

    if (!range_valid(start, length))
        return -EINVAL;
    fill_flock(&fl, mode == ATOMRUN_SHARED ? F_RDLCK : F_WRLCK, start,
               length);
    if (fcntl(fd, cmd, &fl) != 0)
        return -errno;
    if (fl.l_type == F_UNLCK)
        return 0;
    memset(h, 0, sizeof *h);
    h->mode = fl.l_type == F_WRLCK ? ATOMRUN_EXCLUSIVE : ATOMRUN_SHARED;
    h->start = fl.l_start;
    h->length = fl.l_len;
    if (fl.l_pid != -1) {
        /* A classic POSIX lock (lockf, fcntl, SQLite): the kernel knows the
         * pid, or says 0 for a process outside our pid namespace.  Only
         * OFD locks are -1. */
        h->pid = fl.l_pid > 0 ? fl.l_pid : 0;
        snprintf(h->kind, sizeof h->kind, "posix");
        if (h->pid) {
            ar_holder_cmd(h->pid, h->cmd, sizeof h->cmd);
            h->since = ar_start_time(h->pid);
        }
        return 1;
    }
    /* An OFD lock: pid -1 from the kernel; ask /proc (see core/holder.c) which
     * descriptor holds exactly that lock, fd itself excluded. */
    if (fstat(fd, &st) == 0) {
        atomrun_holder found;
        if (ar_find_ofd_holder(fd, st.st_dev, st.st_ino, h->mode, h->start,
                               h->length, &found) == 1) {
            *h = found;
            return 1;
        }
    }
    snprintf(h->kind, sizeof h->kind, "ofd");
    return 1;
}
