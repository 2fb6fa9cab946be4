/*
 * core/fs.c -- paths and directories: the one walk every path-taking call goes
 * through (symlinks checked, missing directories made), stat by path,
 * mkdir -p.
 */
#define _GNU_SOURCE
#include "core/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

/* ------------------------------------------------- the kernel's own walk */

/* Set once openat2 turns out to be missing (Linux < 5.6, or a seccomp
 * filter that answers ENOSYS): then every path takes the walk below. */
static atomic_int no_openat2;

/*
 * open(2) of path relative to dirfd, refused (-ELOOP) if ANY component is
 * a symlink: the common case (no link at all) costs one system call, and
 * needs no check of ours.  -ENOSYS when the kernel cannot do it.  mode
 * must be 0 unless flags create (openat2 says EINVAL otherwise).
 */
static int open_nolinks(int dirfd, const char *path, int flags, int mode)
{
    struct open_how how;
    long fd;

    if (atomic_load(&no_openat2))
        return -ENOSYS;
    memset(&how, 0, sizeof how);
    how.flags = (unsigned)flags;
    how.mode = (flags & (O_CREAT | O_TMPFILE)) ? (unsigned)mode : 0;
    how.resolve = RESOLVE_NO_SYMLINKS;
    fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    if (fd >= 0)
        return (int)fd;
    if (errno == ENOSYS)
        atomic_store(&no_openat2, 1);
    return -errno;
}

/* ------------------------------------------------------ the symlink rule */

/* a then b into dst (size bytes), cut to fit: text for messages only. */
static void join_text(char *dst, size_t size, const char *a, const char *b)
{
    size_t la = strnlen(a, size - 1);
    size_t lb = strnlen(b, size - 1 - la);
    memcpy(dst, a, la);
    memcpy(dst + la, b, lb);
    dst[la + lb] = '\0';
}

/*
 * fs.protected_symlinks, decided here because the sysctl is 0 on many
 * hosts (and because we resolve links ourselves, where the kernel's check
 * never runs): in a sticky world-writable directory (/tmp) a symlink is
 * followed only if it belongs to us (euid) or to the directory's owner.
 * Otherwise another user could plant /tmp/job.lock -> /etc/shadow, or
 * /tmp/d -> /etc at a middle component, and have a root job create, lock,
 * read or overwrite the file it points to.  The kernel's may_follow_link
 * word for word.  0, or -EACCES with *refused filled (when not NULL).
 */
static int link_allowed(int dirfd, const struct stat *link, const char *at,
                        const char *name, atomrun_refused *refused)
{
    struct stat dir;
    size_t n;

    if (fstat(dirfd, &dir) != 0)
        return -errno;
    if ((dir.st_mode & (S_ISVTX | S_IWOTH)) != (S_ISVTX | S_IWOTH))
        return 0;
    if (link->st_uid == geteuid() || link->st_uid == dir.st_uid)
        return 0;
    if (refused) {
        join_text(refused->link, sizeof refused->link, at, name);
        /* at is "", "/" or ends in "/": the directory is at without it */
        join_text(refused->dir, sizeof refused->dir, *at ? at : ".", "");
        n = strlen(refused->dir);
        if (n > 1 && refused->dir[n - 1] == '/')
            refused->dir[n - 1] = '\0';
        refused->uid = (unsigned)link->st_uid;
    }
    return -EACCES;
}

/* A link on /proc (fd/N, cwd, exe): a "magic" link whose text need not be
 * a path at all ("pipe:[123]", "/x (deleted)").  The kernel follows it to
 * the object itself, with no further path walk, so no link can hide
 * behind it: it is the one kind we let the kernel follow. */
static int is_magic(int lfd)
{
    struct statfs fs;
    return fstatfs(lfd, &fs) == 0 && fs.f_type == PROC_SUPER_MAGIC;
}

/* ------------------------------------------------------------- the walk */

/* Append s and a "/" to the text at (a directory prefix, "" or ending in
 * "/").  Only messages read it: too long is cut, never an error. */
static void at_add(char *at, const char *s)
{
    size_t len = strlen(at);
    join_text(at + len, PATH_MAX - len, s, "/");
}

/* Put link text target in front of what is left of rest (from p on): the
 * walk goes on through the target, then through the rest.  *mk is the
 * offset in rest from which missing directories may be made: the target
 * of the LAST component's link is the file the call asked for (its
 * directories are made as the path's own), a middle link's target is not
 * (mkdir -p never creates what a link points to). */
static int splice_link(char *rest, char **p, const char *target, int last,
                       size_t *mk)
{
    char tmp[PATH_MAX];
    size_t off = (size_t)(*p - rest);
    size_t tlen = strlen(target);
    size_t keep = !last && *mk > off ? *mk - off : 0;
    int n;

    n = snprintf(tmp, sizeof tmp, "%s%s%s", target, **p ? "/" : "", *p);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return -ENAMETOOLONG;
    memcpy(rest, tmp, (size_t)n + 1);
    *p = rest;
    *mk = last ? 0 : tlen + 1 + keep;
    return 0;
}

/* w->path after following the last component's link: the link's
 * directory (as written) and the target, as atomrun_resolve reports. */
static int follow_text(ar_walk *w, const char *target)
{
    char tmp[PATH_MAX];
    const char *slash = strrchr(w->path, '/');
    int n;

    if (target[0] == '/' || !slash)
        n = snprintf(tmp, sizeof tmp, "%s", target);
    else
        n = snprintf(tmp, sizeof tmp, "%.*s/%s", (int)(slash - w->path),
                     w->path, target);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return -ENAMETOOLONG;
    memcpy(w->path, tmp, (size_t)n + 1);
    return 0;
}

static int replace_fd(int *dirfd, int fd)
{
    if (fd < 0)
        return -errno;
    close(*dirfd);
    *dirfd = fd;
    return 0;
}

/*
 * Try the directory part of p (all but its last component) in one
 * openat2 with no symlink allowed: when it has no link, the walk is done
 * there in one call.  0 and *p moved on, or nonzero: walk it by hand.
 */
static int fast_dirs(int *dirfd, char **p, char *at)
{
    char dirs[PATH_MAX];
    size_t len = strlen(*p);
    const char *slash;
    int fd;

    while (len > 0 && (*p)[len - 1] == '/')
        len--;
    slash = memrchr(*p, '/', len);
    if (!slash || slash == *p)
        return -1;
    memcpy(dirs, *p, (size_t)(slash - *p));
    dirs[slash - *p] = '\0';
    fd = open_nolinks(*dirfd, dirs, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0)
        return fd;
    replace_fd(dirfd, fd);
    at_add(at, dirs);
    *p += slash - *p + 1;
    return 0;
}

/* One walk's state. */
typedef struct walker {
    ar_walk *w;
    int      flags;
    char     rest[PATH_MAX];   /* what is left to walk, links' text spliced in */
    char    *p;                /* where we are in rest */
    char     at[PATH_MAX];     /* the directory walked into so far (messages) */
    size_t   mk;               /* rest up to here is a link's text: not made */
    int      dirfd;            /* the directory we are in */
    int      hops;             /* links followed */
    int      fast;             /* try fast_dirs at the next name */
} walker;

enum { WALK_ON = 0, WALK_DONE = 1 };

/* Open name (O_PATH, not followed) in the directory we are in; with
 * AR_WALK_MKDIR a missing directory on the way is made first, but never
 * one a link's text names.  The descriptor or -errno. */
static int open_component(walker *k, const char *name, int last)
{
    int lfd = openat(k->dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (lfd < 0 && errno == ENOENT && !last && (k->flags & AR_WALK_MKDIR) &&
        (size_t)(k->p - k->rest) > k->mk) {
        if (mkdirat(k->dirfd, name, 0777) != 0 && errno != EEXIST)
            return -errno;
        lfd = openat(k->dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    }
    return lfd < 0 ? -errno : lfd;
}

/* The symlink lfd (st) at name on the way: the rule first, then through
 * it -- its text spliced into what is left to walk, read through the very
 * link whose owner was checked.  WALK_ON, WALK_DONE or -errno. */
static int through_link(walker *k, const char *name, int lfd, const struct stat *st,
                        int last)
{
    char target[PATH_MAX];
    ssize_t n;
    int r;

    if (++k->hops > AR_MAXHOPS)
        return -ELOOP;
    r = link_allowed(k->dirfd, st, k->at, name, k->w->refused);
    k->w->rule = r == -EACCES;
    if (r < 0)
        return r;
    if (is_magic(lfd) && !(last && (k->flags & AR_WALK_NAMED))) {
        if (last) {                     /* the caller's open follows it */
            k->w->magic = 1;
            strcpy(k->w->name, name);
            return WALK_DONE;
        }
        r = replace_fd(&k->dirfd, openat(k->dirfd, name, O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (r < 0)
            return r;
        at_add(k->at, name);
        return WALK_ON;
    }
    n = readlinkat(lfd, "", target, sizeof target - 1);
    if (n <= 0)
        return n < 0 ? -errno : -ENOENT;        /* "": the kernel's ENOENT */
    target[n] = '\0';
    if (last && (r = follow_text(k->w, target)) < 0)
        return r;
    if ((r = splice_link(k->rest, &k->p, target, last, &k->mk)) < 0)
        return r;
    if (k->rest[0] == '/') {
        r = replace_fd(&k->dirfd, open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (r < 0)
            return r;
        strcpy(k->at, "/");
    }
    k->fast = 1;
    return WALK_ON;
}

/* One name of the path: into the directory, through the link, or, the
 * last name, the end.  WALK_ON, WALK_DONE or -errno. */
static int walk_name(walker *k, const char *name, int last)
{
    struct stat st;
    int lfd, r;

    if (last && !(k->flags & AR_WALK_FOLLOW)) {
        strcpy(k->w->name, name);
        return WALK_DONE;
    }
    lfd = open_component(k, name, last);
    if (lfd == -ENOENT && last) {               /* need not exist yet */
        strcpy(k->w->name, name);
        return WALK_DONE;
    }
    if (lfd < 0)
        return lfd;
    if (fstat(lfd, &st) != 0) {
        r = -errno;
        close(lfd);
        return r;
    }
    if (S_ISLNK(st.st_mode)) {
        r = through_link(k, name, lfd, &st, last);
        close(lfd);
        return r;
    }
    if (last) {
        close(lfd);
        strcpy(k->w->name, name);
        return WALK_DONE;
    }
    if (!S_ISDIR(st.st_mode)) {
        close(lfd);
        return -ENOTDIR;
    }
    replace_fd(&k->dirfd, lfd);
    at_add(k->at, name);
    return WALK_ON;
}

/*
 * The one walk of a path (see core/internal.h): component by component from
 * a directory descriptor, each name opened O_PATH|O_NOFOLLOW relative to
 * the directory before it.  So the directory we end in is the one we
 * checked our way into: nothing swapped in by path meanwhile is used, and
 * the caller's last step is an openat relative to it.
 */
int ar_walk_path(const char *path, int flags, ar_walk *w)
{
    walker k;
    int r = 0;

    w->dirfd = -1;
    w->magic = 0;
    w->rule = 0;
    w->name[0] = '\0';
    if (!*path)
        return -ENOENT;
    if (strlen(path) >= sizeof k.rest)
        return -ENAMETOOLONG;
    memset(&k, 0, sizeof k);
    k.w = w;
    k.flags = flags;
    k.fast = 1;
    k.p = k.rest;
    strcpy(k.rest, path);
    strcpy(w->path, path);
    strcpy(k.at, path[0] == '/' ? "/" : "");
    k.dirfd = open(path[0] == '/' ? "/" : ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (k.dirfd < 0)
        return -errno;
    for (;;) {
        char name[NAME_MAX + 1];
        const char *end;
        size_t len;

        while (*k.p == '/')
            k.p++;
        if (!*k.p) {                    /* "/", or a trailing slash */
            strcpy(w->name, ".");
            break;
        }
        if (k.fast) {
            k.fast = 0;
            if (fast_dirs(&k.dirfd, &k.p, k.at) == 0)
                continue;
        }
        end = strchr(k.p, '/');
        len = end ? (size_t)(end - k.p) : strlen(k.p);
        if (len > NAME_MAX) {
            r = -ENAMETOOLONG;
            break;
        }
        memcpy(name, k.p, len);
        name[len] = '\0';
        k.p += len;
        if (strcmp(name, ".") == 0)
            continue;
        /* the last name, unless "x/" (which must be a directory, and is
         * followed) or ".." (the directory above) */
        if ((r = walk_name(&k, name, !end && strcmp(name, "..") != 0)) != WALK_ON)
            break;
    }
    if (r < 0) {
        close(k.dirfd);
        return r;
    }
    w->dirfd = k.dirfd;
    return 0;
}

int ar_open_walked(const char *path, int flags, int mode, int walk)
{
    ar_walk w;
    int fd;

    /* No link anywhere (the usual case): the kernel's walk alone. */
    fd = open_nolinks(AT_FDCWD, path, flags | O_NOFOLLOW, mode);
    if (fd >= 0 || (fd != -ELOOP && fd != -ENOSYS &&
                    !(fd == -ENOENT && (walk & AR_WALK_MKDIR))))
        return fd;
    w.refused = NULL;
    for (int tries = 0; tries < AR_MAXHOPS; tries++) {
        int r = ar_walk_path(path, walk, &w);
        if (r < 0)
            return r;
        fd = openat(w.dirfd, w.name, flags | (w.magic ? 0 : O_NOFOLLOW), mode);
        fd = fd < 0 ? -errno : fd;
        close(w.dirfd);
        /* A link made at the name since we looked: look again (it must
         * pass the rule like any other). */
        if (fd != -ELOOP || !(walk & AR_WALK_FOLLOW) || w.magic)
            return fd;
    }
    return -ELOOP;
}

int atomrun_refused_link(const char *path, int follow, atomrun_refused *out)
{
    ar_walk w;
    int r;

    if (!path || !out)
        return -EINVAL;
    w.refused = out;
    r = ar_walk_path(path, follow ? AR_WALK_FOLLOW : 0, &w);
    if (r == 0)
        close(w.dirfd);
    if (w.rule)
        return 1;
    return r < 0 ? r : 0;
}

/* -------------------------------------------------------------- by path */

static const char *type_name(mode_t m)
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

int ar_stat_path(const char *path, int follow, ar_stat *out)
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
    strcpy(out->type, type_name(st.st_mode));
    return 0;
}

int ar_mkdir(const char *path, int mode)
{
    struct stat st;
    ar_walk w;
    int r;

    w.refused = NULL;
    r = ar_walk_path(path, AR_WALK_MKDIR, &w);
    if (r < 0)
        return r;
    r = mkdirat(w.dirfd, w.name, (mode_t)mode) == 0 ? 0 : -errno;
    if (r == -EEXIST) {
        /* "exists" is success only for a directory (or a link to one). */
        if (fstatat(w.dirfd, w.name, &st, 0) != 0)
            r = -errno;
        else
            r = S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
    }
    close(w.dirfd);
    return r;
}
