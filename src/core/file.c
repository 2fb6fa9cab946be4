/*
 * core/file.c -- exclusive create, atomic replace, read.
 *
 * The protocol (seed 001, done right): write the new contents to a temp
 * file in the SAME directory, fsync it, rename it over the target, fsync the
 * directory.  Never delete the target first: rename(2) replaces it
 * atomically, and a reader holding the old file keeps reading the old inode.
 *
 * Atomic is not durable (seed 004): rename alone makes readers see old or
 * new, but after a power cut the new name may point at a file whose data
 * never reached the disk.  The fsync of the file before the rename and of
 * the directory after it are what make the result survive a crash.
 */
#define _GNU_SOURCE
#include "core/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define AR_FILE_FLAGS (O_CLOEXEC | O_NOFOLLOW | O_NOCTTY)

void atomrun_write_opts_init(atomrun_write_opts *o)
{
    memset(o, 0, sizeof *o);
    o->durable = 1;
    o->mode = -1;
}

/* The umask without changing it: umask(2) can only be read by setting it,
 * which races with other threads, so ask /proc (Linux >= 4.7). */
static mode_t current_umask(void)
{
    char line[128];
    mode_t mask = 022;
    FILE *f = fopen("/proc/self/status", "re");
    if (!f)
        return mask;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Umask:", 6) == 0) {
            mask = (mode_t)strtoul(line + 6, NULL, 8);
            break;
        }
    fclose(f);
    return mask;
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * One write as the steps below see it: the caller's options (inputs) and
 * what a failure reports (stage, found), which the public calls copy into
 * the caller's atomrun_err.  Kept in one struct so that every step takes
 * one pointer, as it did when the options carried the report.
 */
typedef struct write_req {
    int      durable, mode, follow;    /* atomrun_write_opts */
    int      stage;                    /* atomrun_err */
    unsigned found;
    int      used_tmpfile;             /* 1 if an unnamed O_TMPFILE was used */
} write_req;

static void req_init(write_req *q, const atomrun_write_opts *o)
{
    atomrun_write_opts defaults;
    if (!o) {
        atomrun_write_opts_init(&defaults);
        o = &defaults;
    }
    memset(q, 0, sizeof *q);
    q->durable = o->durable;
    q->mode = o->mode;
    q->follow = o->follow;
}

/* The report of q into the caller's err (NULL: not wanted), after a
 * success too: found is what the writer saw at the target, which a caller
 * whose own step fails later (the binding's reader) still needs. */
static int report(const write_req *q, atomrun_err *err, int r)
{
    if (err) {
        memset(err, 0, sizeof *err);
        err->stage = q->stage;
        err->found = q->found;
    }
    return r;
}

static int fail(write_req *o, int stage, int err)
{
    o->stage = stage;
    return err;
}

/* ------------------------------------------------------ path handling */

typedef struct ar_target {
    char  base[NAME_MAX + 1];
    int   dirfd;
} ar_target;

/*
 * The directory the file goes in, by the walk of core/fs.c (follow: through the
 * links at the last component, to the file they lead to), created with
 * its missing parents (mode 0777 & ~umask) if it does not exist: the one
 * rule for lock, create, replace, update and status.  A path whose
 * directory cannot be made fails with stage ATOMRUN_STAGE_DIR, so the
 * message can name the directory instead of blaming the file; a symlink
 * the walk will not follow (a loop, another user's link in /tmp) with
 * ATOMRUN_STAGE_RESOLVE.  Opened O_RDONLY, for its fsync.
 */
static int open_dir(const char *path, int follow, ar_target *t,
                    write_req *o)
{
    ar_walk w;
    int r;

    t->dirfd = -1;
    w.refused = NULL;
    r = ar_walk_path(path, AR_WALK_MKDIR | (follow ? AR_WALK_FOLLOW | AR_WALK_NAMED
                                              : 0), &w);
    if (r < 0)
        return fail(o, w.rule || (follow && r == -ELOOP)
                           ? ATOMRUN_STAGE_RESOLVE : ATOMRUN_STAGE_DIR, r);
    if (strcmp(w.name, ".") == 0 || strcmp(w.name, "..") == 0) {
        close(w.dirfd);
        return fail(o, ATOMRUN_STAGE_OPEN, -EISDIR);
    }
    strcpy(t->base, w.name);
    t->dirfd = openat(w.dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    r = t->dirfd < 0 ? -errno : 0;
    close(w.dirfd);
    return r < 0 ? fail(o, ATOMRUN_STAGE_DIR, r) : 0;
}

/* opts.follow: the path of the file a chain of symlinks ends at (which
 * need not exist yet), by the same walk: a link the rule refuses on the
 * way is -EACCES.  A missing directory (or a file where one should be)
 * ends the chain: nothing there can be a link. */
int atomrun_resolve(const char *path, char *out, size_t size)
{
    ar_walk w;
    int r;

    w.refused = NULL;
    r = ar_walk_path(path, AR_WALK_FOLLOW | AR_WALK_NAMED, &w);
    if (r == 0)
        close(w.dirfd);
    else if (*path && (r == -ENOENT || r == -ENOTDIR))
        r = 0;
    if (r < 0)
        return r;
    if (strlen(w.path) >= size)
        return -ENAMETOOLONG;
    strcpy(out, w.path);
    return 0;
}

/* ---------------------------------------------------------- temp files */

typedef struct ar_temp {
    int  fd;
    int  named;                 /* a name exists in the directory */
    char name[NAME_MAX + 1];    /* ".base.XXXXXXXX" while named */
} ar_temp;

static void temp_name(const ar_target *t, char *out)
{
    static const char digits[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    unsigned char rnd[8];
    char suffix[9];

    if (getrandom(rnd, sizeof rnd, GRND_NONBLOCK) != sizeof rnd) {
        unsigned long v = (unsigned long)getpid() ^ (unsigned long)rand();
        memcpy(rnd, &v, sizeof rnd);
    }
    for (int i = 0; i < 8; i++)
        suffix[i] = digits[rnd[i] % (sizeof digits - 1)];
    suffix[8] = '\0';
    /* Hidden, in the same directory (a rename never crosses filesystems),
     * and short enough for NAME_MAX whatever the base. */
    snprintf(out, NAME_MAX + 1, ".%.200s.%s", t->base, suffix);
}

/* Give an unnamed temp file a hidden name (needed before a rename). */
static int temp_link(const ar_target *t, ar_temp *tmp, const char *name)
{
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", tmp->fd);
    if (linkat(AT_FDCWD, proc, t->dirfd, name, AT_SYMLINK_FOLLOW) == 0)
        return 0;
    if (errno != ENOENT)
        return -errno;
    /* No /proc mounted: AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH). */
    return linkat(tmp->fd, "", t->dirfd, name, AT_EMPTY_PATH) == 0 ? 0
                                                                   : -errno;
}

/*
 * Replacing needs a name for the finished temp file: Linux can link an
 * unnamed O_TMPFILE only to a free name, and rename(2) needs a source
 * name, so even where O_TMPFILE exists (tmpfs, ext4, xfs, btrfs) the
 * complete copy gets a name just before the rename.  A writer SIGKILLed
 * between that link and the rename leaves it behind, a full copy.  That
 * window is wider than it looks: a kill during linkat() lets the link
 * finish first, and linkat() waits for the directory lock while other
 * writers rename (measured: half of all kills with three writers in one
 * directory).  So the names are a few fixed slots, ".NAME.~0" to
 * ".NAME.~15", cleaned by the next writer.
 *
 * Which slot files are provably a dead writer's (reclaim_slot): a
 * regular file at a slot name of the target, on which we get LOCK_EX
 * without waiting, and which the name still refers to once we hold the
 * lock.  Every writer takes an flock on its O_TMPFILE descriptor before
 * the file has any name, and holds that descriptor until the name is gone
 * again (renamed over the target, or unlinked by the discard); the lock
 * belongs to the open file description, which dies only with the
 * writer's last descriptor.  So a lock we can take is a lock no live
 * writer holds: the file's writer is dead, and nobody will ever rename
 * it.  The second look at the name closes the one race: between our open
 * and our lock the stale file may have been removed by another cleaner
 * and a live writer's new file linked at the name.  What the scheme
 * assumes, said plainly: that a file named ".NAME.~N" beside NAME is ours
 * (a user's own file of that exact name would be taken for a leftover).
 *
 * Every replace removes the stale slots before it writes a byte
 * (reclaim_slots): on a nearly full filesystem the leftover's space is
 * the space the new copy needs, and a stale slot above the first free one
 * would otherwise stay forever.  Leftovers are then bounded by the number
 * of writers killed at once, and gone at the next replace.
 *
 * Without O_TMPFILE (some network and FUSE filesystems) the temp file is
 * made under a random name (which no cleaner touches), locked, and moved
 * into a slot before a byte is written (move_to_slot): a writer killed
 * while writing leaves a slot file like any other.  What remains possible
 * there: an EMPTY file at the random name, from a kill in the microseconds
 * between its creation and that move.
 */
#define AR_TEMP_SLOTS 16

/* 1 if the slot's file was a dead writer's and is now removed (or gone). */
static int reclaim_slot(const ar_target *t, const char *name)
{
    struct stat held, named;
    int fd, freed = 0;

    fd = openat(t->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &held) == 0 &&
        fstatat(t->dirfd, name, &named, AT_SYMLINK_NOFOLLOW) == 0 &&
        held.st_dev == named.st_dev && held.st_ino == named.st_ino &&
        S_ISREG(named.st_mode))
        freed = unlinkat(t->dirfd, name, 0) == 0;
    close(fd);
    return freed;
}

static void slot_name(const ar_target *t, int i, char *out)
{
    snprintf(out, NAME_MAX + 1, ".%.200s.~%d", t->base, i);
}

/* Before a replace writes: every slot a dead writer left, removed. */
static void reclaim_slots(const ar_target *t)
{
    char name[NAME_MAX + 1];
    for (int i = 0; i < AR_TEMP_SLOTS; i++) {
        slot_name(t, i, name);
        reclaim_slot(t, name);
    }
}

static int link_slot(const ar_target *t, ar_temp *tmp)
{
    int r = -EEXIST;
    for (int i = 0; i < AR_TEMP_SLOTS && r == -EEXIST; i++) {
        slot_name(t, i, tmp->name);
        r = temp_link(t, tmp, tmp->name);
        if (r == -EEXIST && reclaim_slot(t, tmp->name))
            r = temp_link(t, tmp, tmp->name);
    }
    /* More live writers than slots: random names, as a last resort. */
    for (int tries = 0; r == -EEXIST && tries < 100; tries++) {
        temp_name(t, tmp->name);
        r = temp_link(t, tmp, tmp->name);
    }
    return r;
}

/*
 * Without O_TMPFILE: move a named temp file (random name, locked) into a
 * free slot, so that a writer killed while writing leaves a slot file the
 * next replace can prove dead, not a random name no one can.  The move is
 * one renameat2(RENAME_NOREPLACE), or link + unlink where the filesystem
 * has no RENAME_NOREPLACE (NFS).  0, or -errno with the file still at its
 * random name (then it stays there: a failure to move is no failure to
 * write).
 */
static int move_to_slot(const ar_target *t, ar_temp *tmp)
{
    char slot[NAME_MAX + 1];
    int r = -EEXIST;

    for (int i = 0; i < AR_TEMP_SLOTS && r == -EEXIST; i++) {
        slot_name(t, i, slot);
        for (int again = 0; again < 2 && r == -EEXIST; again++) {
            if (again && !reclaim_slot(t, slot))
                break;
            if (renameat2(t->dirfd, tmp->name, t->dirfd, slot,
                          RENAME_NOREPLACE) == 0)
                r = 0;
            else if (errno != EINVAL && errno != ENOSYS)
                r = -errno;
            else if (linkat(t->dirfd, tmp->name, t->dirfd, slot, 0) != 0)
                r = -errno;
            else {
                unlinkat(t->dirfd, tmp->name, 0);
                r = 0;
            }
        }
    }
    if (r == 0)
        strcpy(tmp->name, slot);
    return r;
}

/*
 * An unnamed O_TMPFILE where the filesystem has it: a writer killed at any
 * moment before the link leaves nothing behind, not even a name.  Mode 0600
 * until the final mode is set, so a file replacing a secret never shows
 * its contents to others while it is being written.  Either way the file
 * is locked before it has a slot name, and stays locked while it has one
 * (see AR_TEMP_SLOTS).
 */
static int temp_open(const ar_target *t, ar_temp *tmp, int *used_tmpfile)
{
    tmp->named = 0;
    tmp->fd = openat(t->dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (tmp->fd >= 0) {
        if (flock(tmp->fd, LOCK_EX | LOCK_NB) != 0) {
            int err = -errno;
            close(tmp->fd);
            tmp->fd = -1;
            return err;
        }
        *used_tmpfile = 1;
        return 0;
    }
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL &&
        errno != ENOENT)
        return -errno;
    *used_tmpfile = 0;
    for (int tries = 0; tries < 100; tries++) {
        temp_name(t, tmp->name);
        tmp->fd = openat(t->dirfd, tmp->name,
                         O_WRONLY | O_CREAT | O_EXCL | AR_FILE_FLAGS, 0600);
        if (tmp->fd >= 0) {
            tmp->named = 1;
            /* Nobody touches a random name: locked at leisure.  A
             * filesystem without flock keeps the random name. */
            if (flock(tmp->fd, LOCK_EX | LOCK_NB) == 0)
                move_to_slot(t, tmp);
            return 0;
        }
        if (errno != EEXIST)
            return -errno;
    }
    return -EEXIST;
}

static void temp_discard(const ar_target *t, ar_temp *tmp)
{
    if (tmp->named)
        unlinkat(t->dirfd, tmp->name, 0);
    tmp->named = 0;
    if (tmp->fd >= 0)
        close(tmp->fd);
    tmp->fd = -1;
}

/* The temp file is written: its owner, mode and (durable) its data. */
static int temp_finish(ar_temp *tmp, const struct stat *old, int mode,
                       write_req *o)
{
    /* Owner first: chown clears set-id bits that fchmod then restores. */
    if (old && geteuid() == 0 &&
        fchown(tmp->fd, old->st_uid, old->st_gid) != 0)
        return fail(o, ATOMRUN_STAGE_WRITE, -errno);
    if (fchmod(tmp->fd, (mode_t)mode) != 0)
        return fail(o, ATOMRUN_STAGE_WRITE, -errno);
    if (o->durable && fsync(tmp->fd) != 0)
        return fail(o, ATOMRUN_STAGE_SYNC, -errno);
    return 0;
}

static int dir_sync(const ar_target *t, write_req *o)
{
    if (o->durable && fsync(t->dirfd) != 0)
        return fail(o, ATOMRUN_STAGE_DIRSYNC, -errno);
    return 0;
}

static int final_mode(const write_req *o, const struct stat *old)
{
    if (o->mode >= 0)
        return o->mode & 07777;
    if (old)
        return (int)(old->st_mode & 07777);
    return (int)(0666 & ~current_umask());
}

/* ------------------------------------------------------ regular files */

/*
 * create/replace/update/status work on regular files only.  rename(2) over
 * a device node, a FIFO or a socket "works" and silently turns the
 * system's /dev/null into a plain file; writing through one (follow) would
 * feed our data to the device.  So whatever is at the target must be a
 * regular file or nothing (a symlink itself, without follow, is replaced
 * as documented).  Checked when the write starts and again just before
 * the rename, so a stream that takes minutes cannot be fooled by a node
 * made meanwhile; a node made in the microseconds between that second
 * check and the rename cannot be excluded by any path-based call.
 */
static int check_target(const ar_target *t, struct stat *st, int *exists,
                        write_req *o)
{
    *exists = 0;
    o->found = 0;
    if (fstatat(t->dirfd, t->base, st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT)
            return 0;
        return fail(o, ATOMRUN_STAGE_OPEN, -errno);
    }
    o->found = (unsigned)(st->st_mode & S_IFMT);
    if (S_ISDIR(st->st_mode))
        return fail(o, ATOMRUN_STAGE_OPEN, -EISDIR);
    if (!S_ISREG(st->st_mode) && !S_ISLNK(st->st_mode))
        return fail(o, ATOMRUN_STAGE_OPEN, -EINVAL);
    *exists = S_ISREG(st->st_mode);
    return 0;
}

/* Put a complete temp file at t->base, failing with -EEXIST if taken. */
static int link_noreplace(const ar_target *t, ar_temp *tmp)
{
    if (!tmp->named)
        return temp_link(t, tmp, t->base);     /* linkat never replaces */
    if (renameat2(t->dirfd, tmp->name, t->dirfd, t->base,
                  RENAME_NOREPLACE) == 0) {
        tmp->named = 0;
        return 0;
    }
    if (errno != EINVAL && errno != ENOSYS)
        return -errno;
    /* No RENAME_NOREPLACE here: link(2) also refuses an existing name. */
    if (linkat(t->dirfd, tmp->name, t->dirfd, t->base, 0) != 0)
        return -errno;
    return 0;               /* the temp name is removed by the discard */
}

/* ---------------------------------------------------------------- writer */

struct atomrun_writer {
    write_req           q;      /* the options, and the failure's report
                                   (found at open, stage at commit) */
    write_req          *o;      /* &q */
    ar_target           t;
    ar_temp             tmp;
    struct stat         old;    /* the file replaced, when has_old */
    int                 has_old;
    int                 how;    /* ATOMRUN_WRITE_CREATE / _REPLACE */
    int                 failed; /* a write failed: commit must not link */
};

static void writer_free(atomrun_writer *w)
{
    temp_discard(&w->t, &w->tmp);
    if (w->t.dirfd >= 0)
        close(w->t.dirfd);
    free(w);
}

/* Open a writer for the request *in; its report (what is at the target, a
 * failure's stage) is left there. */
static int writer_start(atomrun_writer **wp, const char *path, int how,
                        write_req *in)
{
    atomrun_writer *w;
    write_req *o;
    int r;

    *wp = NULL;
    if (how != ATOMRUN_WRITE_CREATE && how != ATOMRUN_WRITE_REPLACE)
        return -EINVAL;
    w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->q = *in;
    o = w->o = &w->q;
    w->how = how;
    w->t.dirfd = -1;
    w->tmp.fd = -1;
    o->stage = ATOMRUN_STAGE_NONE;
    o->found = 0;
    r = open_dir(path, o->follow && how == ATOMRUN_WRITE_REPLACE, &w->t, o);
    if (r == 0 && how == ATOMRUN_WRITE_REPLACE) {
        r = check_target(&w->t, &w->old, &w->has_old, o);
        if (r == 0)
            reclaim_slots(&w->t);
    } else if (r == 0) {
        /* Fail early (and cheaply) when the name is plainly taken; the
         * link at commit is what decides a race. */
        struct stat st;
        if (fstatat(w->t.dirfd, w->t.base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            o->found = (unsigned)(st.st_mode & S_IFMT);
            r = fail(o, ATOMRUN_STAGE_LINK, -EEXIST);
        } else if (errno != ENOENT) {
            r = fail(o, ATOMRUN_STAGE_OPEN, -errno);
        }
    }
    if (r == 0) {
        r = temp_open(&w->t, &w->tmp, &o->used_tmpfile);
        if (r < 0)
            fail(o, ATOMRUN_STAGE_TEMP, r);
    }
    *in = w->q;
    if (r < 0) {
        writer_free(w);
        return r;
    }
    *wp = w;
    return 0;
}

int atomrun_writer_open(atomrun_writer **wp, const char *path, int how,
                        const atomrun_write_opts *o, atomrun_err *err)
{
    write_req q;
    req_init(&q, o);
    return report(&q, err, writer_start(wp, path, how, &q));
}

static int writer_put(atomrun_writer *w, const void *data, size_t len)
{
    int r;
    if (w->failed)
        return -EIO;
    r = write_all(w->tmp.fd, data, len);
    if (r < 0) {
        w->failed = 1;
        return fail(w->o, ATOMRUN_STAGE_WRITE, r);
    }
    return 0;
}

static int commit_create(atomrun_writer *w)
{
    int r = temp_finish(&w->tmp, NULL, final_mode(w->o, NULL), w->o);
    if (r == 0) {
        r = link_noreplace(&w->t, &w->tmp);
        if (r < 0)
            fail(w->o, ATOMRUN_STAGE_LINK, r);
    }
    return r;
}

static int commit_replace(atomrun_writer *w)
{
    struct stat now;
    int exists, r;
    const struct stat *old = w->has_old ? &w->old : NULL;

    r = temp_finish(&w->tmp, old, final_mode(w->o, old), w->o);
    if (r == 0)
        r = check_target(&w->t, &now, &exists, w->o);
    if (r == 0 && !w->tmp.named) {
        /* A name, so that it can be renamed over the target. */
        r = link_slot(&w->t, &w->tmp);
        if (r == 0)
            w->tmp.named = 1;
        else
            fail(w->o, ATOMRUN_STAGE_LINK, r);
    }
    if (r == 0) {
        if (renameat(w->t.dirfd, w->tmp.name, w->t.dirfd, w->t.base) == 0)
            w->tmp.named = 0;
        else
            r = fail(w->o, ATOMRUN_STAGE_LINK, -errno);
    }
    return r;
}

int atomrun_writer_write(atomrun_writer *w, const void *data, size_t len,
                         atomrun_err *err)
{
    return report(&w->q, err, writer_put(w, data, len));
}

/* Commit and free w, its report into *out. */
static int writer_end(atomrun_writer *w, write_req *out)
{
    int r;
    if (w->failed) {
        r = -EIO;               /* the write's own error was returned then */
    } else {
        r = w->how == ATOMRUN_WRITE_CREATE ? commit_create(w)
                                           : commit_replace(w);
        temp_discard(&w->t, &w->tmp);
        if (r == 0)
            r = dir_sync(&w->t, w->o);
    }
    *out = w->q;
    writer_free(w);
    return r;
}

int atomrun_writer_commit(atomrun_writer *w, atomrun_err *err)
{
    write_req q;
    int r = writer_end(w, &q);
    return report(&q, err, r);
}

void atomrun_writer_abort(atomrun_writer *w)
{
    if (w)
        writer_free(w);
}

/* ---------------------------------------------------------------- create */

static int create_empty(const char *path, write_req *o)
{
    int mode = o->mode >= 0 ? o->mode : 0666;
    ar_target t;
    int fd, r = open_dir(path, 0, &t, o);

    if (r < 0)
        return r;
    fd = openat(t.dirfd, t.base, O_WRONLY | O_CREAT | O_EXCL | AR_FILE_FLAGS,
                mode);
    if (fd < 0) {   /* EEXIST here is the O_EXCL "link" losing: "exists" */
        struct stat st;
        r = -errno;
        if (r == -EEXIST &&
            fstatat(t.dirfd, t.base, &st, AT_SYMLINK_NOFOLLOW) == 0)
            o->found = (unsigned)(st.st_mode & S_IFMT);
        close(t.dirfd);
        return fail(o, r == -EEXIST ? ATOMRUN_STAGE_LINK
                       : r == -ENOENT || r == -ENOTDIR ? ATOMRUN_STAGE_DIR
                       : ATOMRUN_STAGE_TEMP, r);
    }
    if (o->mode >= 0 && fchmod(fd, (mode_t)o->mode) != 0) {
        r = fail(o, ATOMRUN_STAGE_WRITE, -errno);
        unlinkat(t.dirfd, t.base, 0);
    }
    close(fd);
    /* The file exists now: a failed fsync of its directory is reported
     * as such (stage DIRSYNC), not skipped. */
    if (r == 0)
        r = dir_sync(&t, o);
    close(t.dirfd);
    return r;
}

/* The string forms: one write of the whole buffer through the writer. */
static int write_whole(const char *path, int how, const void *data,
                       size_t len, write_req *o)
{
    atomrun_writer *w;
    int r = writer_start(&w, path, how, o);
    if (r < 0)
        return r;
    r = writer_put(w, data, len);
    if (r < 0) {
        *o = w->q;
        atomrun_writer_abort(w);
        return r;
    }
    return writer_end(w, o);
}

int atomrun_create(const char *path, const void *data, size_t len,
                   const atomrun_write_opts *o, atomrun_err *err)
{
    write_req q;
    int r;

    req_init(&q, o);
    if (!data)
        r = create_empty(path, &q);
    else
        r = write_whole(path, ATOMRUN_WRITE_CREATE, data, len, &q);
    return report(&q, err, r);
}

/* --------------------------------------------------------------- replace */

int atomrun_replace(const char *path, const void *data, size_t len,
                    const atomrun_write_opts *o, atomrun_err *err)
{
    write_req q;

    req_init(&q, o);
    return report(&q, err, write_whole(path, ATOMRUN_WRITE_REPLACE,
                                       data ? data : "", data ? len : 0, &q));
}

/* ------------------------------------------------------------------ read */

static int read_fd(int fd, char **data, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    struct stat st;

    if (!buf)
        return -ENOMEM;
    if (fstat(fd, &st) == 0 && st.st_size > 0 && (size_t)st.st_size >= cap) {
        cap = (size_t)st.st_size + 1;      /* +1: see EOF in one read */
        char *bigger = realloc(buf, cap + 1);
        if (!bigger) {
            free(buf);
            return -ENOMEM;
        }
        buf = bigger;
    }
    for (;;) {
        ssize_t got;
        if (n == cap) {
            char *bigger = realloc(buf, cap * 2 + 1);
            if (!bigger) {
                free(buf);
                return -ENOMEM;
            }
            buf = bigger;
            cap *= 2;
        }
        got = read(fd, buf + n, cap - n);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            int err = -errno;
            free(buf);
            return err;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

int atomrun_read(const char *path, char **data, size_t *len)
{
    struct stat st;
    int fd, r;

    /* O_NONBLOCK so that a FIFO at path cannot hang the open.  Links are
     * followed by the rule: root reading through another user's link in
     * /tmp would hand its contents to whoever planted it. */
    fd = ar_open_walked(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
                        0, AR_WALK_FOLLOW);
    if (fd < 0)
        return fd;
    if (fstat(fd, &st) != 0) {
        r = -errno;
        close(fd);
        return r;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return -EISDIR;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return -EINVAL;                /* FIFO, socket, device */
    }
    r = read_fd(fd, data, len);
    close(fd);
    return r;
}
