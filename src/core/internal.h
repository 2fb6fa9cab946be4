/*
 * core/internal.h -- private helpers of the C library: shared by the core's
 * files (src/core/) and used by the etcd client's (src/etcd/); the binding
 * and the programs do not include it.  Nothing here is installed or
 * exported (-fvisibility=hidden); `ar_` names are private.
 */
#ifndef AR_INTERNAL_H
#define AR_INTERNAL_H

#include "atomrun.h"
#include "core/shared.h"

#include <pthread.h>
#include <sys/stat.h>
#include <sys/types.h>

/*
 * One attempt at taking a lock.  block == 0: must not sleep; returns 0,
 * -EWOULDBLOCK/-EAGAIN/-EACCES when held elsewhere, or -errno.  block != 0:
 * may sleep in the kernel; -EINTR when a signal interrupts it.
 */
typedef int (*ar_attempt_fn)(void *ctx, int block);

/*
 * Take a lock with a deadline (see ATOMRUN_FOREVER): one non-blocking try,
 * then a kernel wait interrupted by the per-thread timer signal (or, when
 * no signal can be had, non-blocking tries 1-10 ms apart).  Returns 0,
 * ATOMRUN_EBUSY, ATOMRUN_ETIMEOUT or -errno.
 */
int ar_wait_for(ar_attempt_fn attempt, void *ctx, double timeout);

/*
 * The one walk of a path (core/fs.c), for every call that takes one: lock and
 * open, create, replace, update and status, read, resolve, mkdir.  It
 * goes component by component from a directory descriptor, each name
 * opened O_PATH|O_NOFOLLOW relative to the one before, and follows a
 * symlink only by the protected_symlinks rule (a link in a sticky
 * world-writable directory must belong to the caller or to the
 * directory's owner), whatever the sysctl says, at every component: the
 * kernel never checks a link we read and follow ourselves.  It ends with
 * the directory the last name is in, open, so that the caller's last step
 * is an openat relative to it and nothing swapped in by path meanwhile can
 * be used.
 *
 * flags:
 *   AR_WALK_FOLLOW  follow the links at the last component too (else the
 *                   last name is left as it is, link or not)
 *   AR_WALK_MKDIR   make missing directories (0777 & ~umask) on the way:
 *                   those of the path and of its last link's target, never
 *                   those a middle link points to (as mkdir -p)
 *   AR_WALK_NAMED   the caller needs a name in a directory (to rename
 *                   over, to report): a /proc magic link at the end is
 *                   followed by its text rather than left to the kernel
 *
 * 0 with w->dirfd (O_PATH, the caller closes it) and w->name ("." for the
 * directory itself: "/", "x/", "x/.."), or -errno: -EACCES with w->rule
 * set when it is the rule's refusal (and *w->refused filled, when not
 * NULL), -ELOOP past AR_MAXHOPS links.  With AR_WALK_FOLLOW, w->path is
 * the path the last component's links lead to (atomrun_resolve), kept
 * up to date even when the walk fails further on.
 */
#define AR_WALK_FOLLOW 1
#define AR_WALK_MKDIR  2
#define AR_WALK_NAMED  4
#define AR_MAXHOPS     40

typedef struct ar_walk {
    atomrun_refused *refused;   /* IN: where to say which link, or NULL */
    int   dirfd;
    int   magic;                /* name is a /proc magic link: open it
                                   without O_NOFOLLOW */
    int   rule;                 /* the -EACCES is the symlink rule's */
    char  name[256];            /* NAME_MAX + 1 */
    char  path[4096];           /* PATH_MAX */
} ar_walk;

int ar_walk_path(const char *path, int flags, ar_walk *w);

/*
 * open(2) of path by that walk: flags as for openat (O_NOFOLLOW is added
 * at the last step unless the walk followed a magic link), walk the
 * AR_WALK_ flags.  One openat2 when no component is a link at all.
 * The descriptor or -errno.
 */
int ar_open_walked(const char *path, int flags, int mode, int walk);

/*
 * The kernel's lock table (core/locktab.c).  One line of /proc/locks, or
 * the text after "lock:" in a /proc/PID/fdinfo/FD:
 * "N: [-> ]KIND ADVISORY RW PID MAJ:MIN:INO START END".
 */
typedef struct ar_lockline {
    char    kind[8];         /* FLOCK, OFDLCK, POSIX, ... */
    int     write;           /* WRITE (1) or READ (0) */
    int     waiter;          /* a "->" line: waits, holds nothing */
    long    pid;
    unsigned maj, min;
    unsigned long long ino;
    int64_t start, end;      /* end -1: EOF */
} ar_lockline;

/* 1 and *l filled when line parses, else 0. */
int ar_parse_lockline(const char *line, ar_lockline *l);
/* Is l a lock on the file (dev, ino)? */
int ar_line_is_file(const ar_lockline *l, dev_t dev, ino_t ino);
/* Does held line l conflict with a request of kind ("FLOCK", "OFDLCK",
 * "POSIX"), mode and [start, start+length) (length 0: to EOF)? */
int ar_line_conflicts(const ar_lockline *l, const char *kind, int mode,
                      int64_t start, int64_t length);
/* The same lock (as fdinfo prints a line of /proc/locks)?  The waiter
 * flag is not compared. */
int ar_line_same(const ar_lockline *a, const ar_lockline *b);
/* Every line of /proc/locks about (dev, ino), holders and waiters, in the
 * kernel's order, into *out (malloc'd, the caller frees it): the count, or
 * -errno.  Repairs a torn read; see core/locktab.c. */
int ar_read_locks(dev_t dev, ino_t ino, ar_lockline **out);
/* The same, when only the lines `matters` says 1 of must be right: the
 * read is repaired for those (matters NULL: for every line). */
int ar_read_locks_where(dev_t dev, ino_t ino,
                        int (*matters)(const ar_lockline *), ar_lockline **out);

/*
 * The live holder of a lock of `kind` ("FLOCK", "OFDLCK", "POSIX") on the
 * file (dev, ino) that conflicts with `mode` over [start, start+length)
 * (length 0: to EOF): 1 and *h filled -- h->pid 0 when the lock is there
 * but no live process could be seen holding it (another user's, or the
 * search budget ran out) -- or 0 when /proc/locks shows no such lock.
 * self_fd: the asking descriptor of this process, skipped with every
 * descriptor of its open file description; -1 for none.  See core/holder.c.
 */
int ar_find_holder(int self_fd, dev_t dev, ino_t ino, const char *kind,
                   int mode, int64_t start, int64_t length, atomrun_holder *h);
/* The process holding exactly the OFD lock (mode, start, length) that
 * F_OFD_GETLK reported on (dev, ino), skipping the asking descriptor
 * self_fd: 1 and *h filled, 0 when not found. */
int ar_find_ofd_holder(int self_fd, dev_t dev, ino_t ino, int mode,
                       int64_t start, int64_t length, atomrun_holder *h);

/*
 * Process facts (core/procinfo.c); each answers "unknown" (0, "") for a
 * process that is gone or hidden.
 */
/* The small file `name` under dirfd (a /proc file; AT_FDCWD and a path
 * too) into buf, NUL-terminated: its length, or -1. */
ssize_t ar_read_at(int dirfd, const char *name, char *buf, size_t size);
/* The whole of the file `name` under dirfd, however long, of one moment
 * (read through one open file): in buf (size bytes) when it fits, else in
 * a malloc'd copy the caller frees (when the result is not buf); NUL-
 * terminated.  NULL when it cannot be opened. */
char *ar_read_whole_at(int dirfd, const char *name, char *buf, size_t size);
/* Is pid alive?  A zombie counts as dead: it holds nothing. */
int ar_pid_alive(pid_t pid);
/* When pid started, in seconds since the epoch; 0 when unknown. */
int64_t ar_start_time(pid_t pid);
/* pid's command line (pid 0: this process's), not escaped: argv[0] by its
 * basename, then the arguments, space-separated.  The length. */
size_t ar_cmdline(pid_t pid, char *buf, size_t size);
/* h->cmd: pid's command line, escaped for a terminal, cut to one short
 * line (72 bytes and "..."). */
void ar_holder_cmd(pid_t pid, char *buf, size_t size);
/* s[0..n) into out (size), escaped for a terminal as holder text is: the
 * controls as \n \t \r \e \xHH, bytes that are not UTF-8 as \xHH.  The
 * length written. */
size_t ar_escape(char *out, size_t size, const unsigned char *s, size_t n);

/*
 * Clocks (core/clock.c).  ar_boot_now: CLOCK_BOOTTIME seconds, which go on
 * counting while the machine is suspended (the etcd lost rule's clock).
 * ar_cond_init: a condition variable whose timed waits run on
 * CLOCK_MONOTONIC, never on the wall clock; ar_cond_wait_for waits on one
 * for at most `seconds` (under mu, as pthread_cond_timedwait).
 */
double ar_boot_now(void);
int    ar_cond_init(pthread_cond_t *cv);
void   ar_cond_wait_for(pthread_cond_t *cv, pthread_mutex_t *mu, double seconds);

#endif
