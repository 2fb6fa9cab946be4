/*
 * atomrun.h -- the public C interface of atomrun.
 *
 * Two halves:
 *   1. The core: file-coordination primitives for C callers.  They know
 *      nothing of Lua, are thread-safe, and return 0 (or a count) on success
 *      and -errno on failure, like libuv.  atomrun_err_name() maps a result to
 *      the short code strings the Lua API uses ("busy", "timeout", "ENOENT").
 *   2. Embedding: the Lua openers luaopen_atomrun_core() and
 *      luaopen_atomrun(), and helpers that give a host exactly what the
 *      `atomrun` command line uses.
 *
 * Build a host with:  cc host.c $(pkg-config --cflags --libs atomrun)
 */
#ifndef ATOMRUN_H
#define ATOMRUN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ATOMRUN_VERSION "0.1.0"

/* Every public declaration carries ATOMRUN_API: the library is built with
 * -fvisibility=hidden, so only these names (atomrun_*, luaopen_atomrun*)
 * are exported from libatomrun.so and atomrun/core.so. */
#if defined(__GNUC__)
#define ATOMRUN_API __attribute__((visibility("default")))
#else
#define ATOMRUN_API
#endif

/* ---------------------------------------------------------------- errors */

/*
 * Results that are not plain errno values.  They are negative like -errno so
 * callers test `r < 0` throughout; the kernel's own numbers stop well below.
 *   busy      the lock is held elsewhere and the caller asked not to wait
 *             (the kernel's EWOULDBLOCK, renamed so it reads well)
 *   timeout   the deadline passed while waiting
 */
#define ATOMRUN_EBUSY     (-20001)
#define ATOMRUN_ETIMEOUT  (-20002)

/* "busy", "timeout", "exists" (EEXIST), "deadlock" (EDEADLK), or the errno
 * name ("ENOENT", "EACCES", ...); "OK" for a result >= 0 (success: 0 or a
 * count); "EUNKNOWN" for a negative result that is none of these (libuv's
 * uv_err_name says "Unknown system error N" in a string it allocates; a
 * fixed code keeps this function allocation-free and the codes a closed
 * set).  The Lua errname() says "EUNKNOWN" for such a number too. */
ATOMRUN_API const char *atomrun_err_name(int result);
/* A human sentence for a result ("lock is busy", strerror otherwise). */
ATOMRUN_API const char *atomrun_strerror(int result);

/*
 * What a failure says besides its result: the last argument of every call
 * that can explain one, on files and etcd alike (NULL: the caller does not
 * want to know).  The result stays the int above; this is the detail a
 * message needs.  The call clears it, and fills what applies:
 *   stage, found  file writes (atomrun_create, _replace, _writer_*): the
 *                 step that failed (enum atomrun_stage; 0 on success) and
 *                 the S_IFMT bits of what was at the target (0: nothing;
 *                 set on success too); 0 elsewhere
 *   msg           a sentence for the failure, naming for etcd calls the
 *                 endpoint and the last error (never a password); "" when
 *                 the result says it all
 * Option structs are inputs only: what a call finds out comes back in
 * this, in its result, or in an out-parameter of its own (the holder in
 * the way, the minimum TTL) -- never in the options.
 */
#define ATOMRUN_ERRLEN 256
typedef struct atomrun_err {
    int      stage;
    unsigned found;
    char     msg[ATOMRUN_ERRLEN];
} atomrun_err;

/* ------------------------------------------------------------ waiting */

/*
 * Timeouts are seconds as a double:
 *   ATOMRUN_FOREVER (any negative value)  wait until granted
 *   0                                     do not wait at all ("busy")
 *   > 0                                   wait in the kernel up to that long
 */
#define ATOMRUN_FOREVER (-1.0)

/*
 * A deadline interrupts the blocking flock(2)/F_OFD_SETLKW with one signal,
 * sent to the waiting thread only by a per-thread POSIX timer; its handler
 * does nothing and is installed without SA_RESTART, so the wait returns
 * EINTR.  By default that is the first real-time signal, counting from
 * SIGRTMIN+2, whose disposition is still SIG_DFL when atomrun first needs
 * one: a handler the host installed is never replaced.  A host that wants a
 * particular signal calls this before any timed wait; -EBUSY if the host
 * already handles it, -EINVAL if it is not a usable signal.
 */
ATOMRUN_API int atomrun_set_timer_signal(int signo);
/* The signal in use, or 0 if none has been chosen yet. */
ATOMRUN_API int atomrun_timer_signal(void);

/* -------------------------------------------------------------- locks */

enum atomrun_mode { ATOMRUN_SHARED = 1, ATOMRUN_EXCLUSIVE = 2 };

/*
 * Who holds a conflicting lock, as far as the kernel and /proc tell: a
 * process alive now that holds the lock now (for flock and OFD locks one
 * that has the open file description, not the possibly dead process that
 * took the lock), or pid 0.  Finding it costs a bounded search of /proc.
 */
typedef struct atomrun_holder {
    pid_t   pid;        /* 0 when unknown (e.g. another user's process) */
    int     mode;       /* ATOMRUN_SHARED or ATOMRUN_EXCLUSIVE */
    int64_t start;      /* byte-range locks; 0 for whole-file locks */
    int64_t length;     /* 0 means "to end of file" */
    char    kind[8];    /* "flock", "ofd" or "posix" */
    char    cmd[128];   /* command line of pid, shortened, one line with
                           control characters escaped; "" if unknown */
    int64_t since;      /* when pid started (epoch seconds); 0 unknown */
} atomrun_holder;

/*
 * Open (and create, with missing parent directories) a lock file:
 * O_RDWR|O_CREAT|O_CLOEXEC|O_NONBLOCK, never O_TRUNC, permission `perm`
 * (masked by umask).  Falls back to O_RDONLY for a file that is readable
 * but not writable, and for a directory.  Returns the descriptor, or
 * -errno.  *writable tells which, if non-NULL.  follow is the symlink
 * policy for the last component of path:
 *   ATOMRUN_NOFOLLOW          a symlink there is refused (-ELOOP)
 *   ATOMRUN_FOLLOW            followed, as open(2) and flock(1) do, by the
 *                             protected-symlink rule (below): -EACCES for
 *                             another user's link in /tmp
 *   ATOMRUN_FOLLOW_PROTECTED  the same as ATOMRUN_FOLLOW (the name of the
 *                             days when only it applied the rule)
 * Links in the directory part of path are followed by the same rule,
 * whatever follow says.  -EINVAL for another value of follow.
 */
enum atomrun_follow {
    ATOMRUN_NOFOLLOW = 0, ATOMRUN_FOLLOW = 1, ATOMRUN_FOLLOW_PROTECTED = 2
};
ATOMRUN_API int atomrun_lockfile_open(const char *path, int create, int perm,
                                      int follow, int *writable);

/*
 * The protected-symlink rule, applied by every call that takes a path
 * (lock, open, create, replace, read, resolve, mkdir), at every component
 * and whatever fs.protected_symlinks says: a symlink in a sticky
 * world-writable directory (/tmp) is followed only if it belongs to the
 * caller (euid) or to the directory's owner; otherwise the call fails
 * with -EACCES.  Which link that was: atomrun_refused_link walks path as
 * those calls do (follow: the links at its last component too) and
 * returns 1 with *out filled, 0 if no link on it is refused, or -errno if
 * the walk fails for another reason.
 */
typedef struct atomrun_refused {
    char     link[4096];       /* the refused link, as a path */
    char     dir[4096];        /* the sticky directory it is in */
    unsigned uid;              /* the link's owner */
} atomrun_refused;
ATOMRUN_API int atomrun_refused_link(const char *path, int follow,
                                     atomrun_refused *out);

/*
 * Can a caller's descriptor take a lock?  (flock `N`: the descriptor was
 * opened by someone else.)  0, or -EBADF with *why (if non-NULL) saying
 * why not: not open, an O_PATH descriptor (no lock of either kind), or
 * for an fcntl lock (use_fcntl) a read-only descriptor asked for an
 * exclusive lock or a write-only one for a shared lock.  mode 0: any.
 */
enum atomrun_fd_problem {
    ATOMRUN_FD_OK = 0, ATOMRUN_FD_CLOSED, ATOMRUN_FD_PATH,
    ATOMRUN_FD_READONLY, ATOMRUN_FD_WRITEONLY
};
ATOMRUN_API int atomrun_fd_lockable(int fd, int mode, int use_fcntl, int *why);


/* flock(2) with a deadline.  0, ATOMRUN_EBUSY, ATOMRUN_ETIMEOUT or -errno. */
ATOMRUN_API int atomrun_flock(int fd, int mode, double timeout);
/* Release fd's flock lock (of its open file description: every
 * descriptor sharing it, in any process, loses it). */
ATOMRUN_API int atomrun_funlock(int fd);
/* A process holding a flock lock on fd's file that conflicts with `mode`:
 * 1 and *h filled, 0 when none is known, -errno. */
ATOMRUN_API int atomrun_flock_holder(int fd, int mode, atomrun_holder *h);

/*
 * Byte-range locks: Linux open-file-description locks (F_OFD_*), which
 * conflict with lockf/fcntl/SQLite locks on the same bytes, belong to the
 * open file description (not the process), and are not lost when some other
 * descriptor of the file is closed.  length 0 = from start to end of file,
 * however far it grows.  Where the kernel lacks OFD locks the classic
 * process-owned F_SETLK is used (see atomrun_range_mechanism()).
 */
ATOMRUN_API int atomrun_range_lock(int fd, int mode, int64_t start, int64_t length,
                       double timeout);
ATOMRUN_API int atomrun_range_unlock(int fd, int64_t start, int64_t length);
/* 0 when the range could be locked in `mode` now; 1 and *h filled when not. */
ATOMRUN_API int atomrun_range_test(int fd, int mode, int64_t start, int64_t length,
                       atomrun_holder *h);
/* "ofd" or "posix" (the fallback) */
ATOMRUN_API const char *atomrun_range_mechanism(void);


/*
 * Every lock on a file, held or waited for (`atomrun who`): flock, OFD and
 * POSIX, in /proc/locks order, each with its live holder (or waiter) as
 * in atomrun_holder.  Held flock and OFD locks are read from their
 * holders' /proc/PID/fdinfo (written under the inode's lock, so a read
 * under lock churn never skips or repeats one; those a torn read of
 * /proc/locks missed come last); waiters and POSIX locks from /proc/locks; a waiter's mode and range are what it asks for.  An
 * OFD waiter is named only when /proc/PID/task/TID/syscall shows it
 * blocked in F_OFD_SETLKW (ptrace access: own processes, or root).
 * Returns the count (0: no lock) with *list malloc'd (free() it), or
 * -errno.  atomrun_who stats path (following symlinks) first.
 */
typedef struct atomrun_lockinfo {
    atomrun_holder h;
    int            waiting;    /* 1: waits for the lock, holds nothing */
} atomrun_lockinfo;
ATOMRUN_API int atomrun_locks_on(uint64_t dev, uint64_t ino, atomrun_lockinfo **list);
ATOMRUN_API int atomrun_who(const char *path, atomrun_lockinfo **list);
/* 1 if process pid holds a lock (of any kind, held not waited for) on the
 * file (dev, ino) now, through any of its descriptors; 0 if not (also when
 * pid is not ours to look at); -EINVAL for pid <= 0. */
ATOMRUN_API int atomrun_pid_holds(pid_t pid, uint64_t dev, uint64_t ino);

/* ------------------------------------------------------------ files */

/* Which step of a create/replace failed, for messages. */
enum atomrun_stage {
    ATOMRUN_STAGE_NONE = 0,
    ATOMRUN_STAGE_RESOLVE,   /* following a symlink (opts.follow) */
    ATOMRUN_STAGE_OPEN,      /* the target itself: what is at path (found
                                says what, when it is not a regular file) */
    ATOMRUN_STAGE_WRITE,
    ATOMRUN_STAGE_SYNC,      /* fsync of the new contents */
    ATOMRUN_STAGE_LINK,      /* linking/renaming into place */
    ATOMRUN_STAGE_DIRSYNC,   /* fsync of the directory: the new contents ARE
                                in place, but may not survive a crash */
    ATOMRUN_STAGE_DIR,       /* the directory: missing and not creatable, or
                                not a directory, or not searchable */
    ATOMRUN_STAGE_TEMP       /* creating the new file in the directory
                                (not writable, read-only fs, full) */
};

typedef struct atomrun_write_opts {
    int durable;     /* fsync data before, directory after (default 1) */
    int mode;        /* permission bits; -1: keep the old file's (replace),
                        0666 & ~umask for a new file */
    int follow;      /* replace: 1 = write through a symlink at path */
} atomrun_write_opts;

/* Fill *o with the defaults (durable, keep mode, do not follow). */
ATOMRUN_API void atomrun_write_opts_init(atomrun_write_opts *o);

/*
 * The rules for every call below (o NULL: the defaults):
 *  - a failure's err->stage is the step that failed, err->found the S_IFMT
 *    bits of what was at the target (after follow), 0 if nothing: S_IFREG
 *    means there were old contents, and they are intact after a failure
 *    (except at ATOMRUN_STAGE_DIRSYNC, when the new contents are in);
 *  - regular files only: a directory (-EISDIR), device node, FIFO or socket
 *    (-EINVAL, err->found says which) at the target, or with follow at the
 *    end of the symlink, is refused and left exactly as it was;
 *  - a missing directory is created, with its parents (mode 0777 & ~umask),
 *    as atomrun_lockfile_open does; stage ATOMRUN_STAGE_DIR if it cannot be.
 */

/*
 * Exclusive create.  data == NULL: create an empty file with
 * O_CREAT|O_EXCL|O_NOFOLLOW.  Otherwise the file appears complete or not at
 * all.  -EEXIST ("exists") if anything is already at path.
 */
ATOMRUN_API int atomrun_create(const char *path, const void *data, size_t len,
                               const atomrun_write_opts *o, atomrun_err *err);
/*
 * Atomic replace: readers see the old contents or the new, never a mix,
 * never nothing.  On failure before the rename the old file is untouched and
 * no temp file remains.  A failure of the final directory fsync returns
 * -errno with err->stage == ATOMRUN_STAGE_DIRSYNC: the replace happened.
 */
ATOMRUN_API int atomrun_replace(const char *path, const void *data, size_t len,
                                const atomrun_write_opts *o, atomrun_err *err);

/*
 * The same, streamed: contents of any size written in pieces into the temp
 * file, with the same all-or-nothing guarantee.  open -> write... -> commit
 * (or abort).  Both commit and abort free the writer; after a failed write
 * only abort makes sense (commit refuses).  o is read at open (the writer
 * keeps a copy); each call reports into its own err, the writer
 * remembering for commit what open found at the target.  An aborted
 * writer leaves no temp file and the target as it was.
 */
typedef struct atomrun_writer atomrun_writer;
enum { ATOMRUN_WRITE_CREATE = 0, ATOMRUN_WRITE_REPLACE = 1 };
ATOMRUN_API int  atomrun_writer_open(atomrun_writer **w, const char *path,
                                     int how, const atomrun_write_opts *o,
                                     atomrun_err *err);
ATOMRUN_API int  atomrun_writer_write(atomrun_writer *w, const void *data,
                                      size_t len, atomrun_err *err);
ATOMRUN_API int  atomrun_writer_commit(atomrun_writer *w, atomrun_err *err);
ATOMRUN_API void atomrun_writer_abort(atomrun_writer *w);

/* The path a chain of symlinks at path ends at (which need not exist):
 * what follow writes to.  0, -ELOOP after 40 links, -ENAMETOOLONG. */
ATOMRUN_API int atomrun_resolve(const char *path, char *out, size_t size);

/* Whole file into a malloc'd buffer (NUL-terminated for convenience). */
ATOMRUN_API int atomrun_read(const char *path, char **data, size_t *len);

/* ------------------------------------------------------------ processes */

/*
 * Descriptors: the command gets every descriptor the caller has that is
 * not close-on-exec (a shell's `5>file`, make's jobserver), as flock(1)
 * and system(3) pass them; every descriptor atomrun opens itself is
 * O_CLOEXEC and stays out.  keep_fds are close-on-exec descriptors the
 * command inherits on purpose (held locks): inheritable in the child only.
 *
 * Signals while atomrun_run waits: SIGINT and SIGQUIT reach the command
 * first (a command in the caller's group from the terminal itself, one in
 * its own group forwarded by us) and the caller only once the command is
 * reaped: when the command died of the signal and it was an interrupt (we
 * received it too, or the command's group had the terminal), the caller
 * gets the same signal then (raise), as a shell's job would.  A command
 * that handles Ctrl-C and exits normally interrupts nothing.
 */
typedef struct atomrun_spawn_opts {
    const char  *cwd;          /* NULL: inherit */
    char *const *envp;         /* NULL: inherit */
    const int   *keep_fds;     /* close-on-exec descriptors the child */
    int          nkeep;        /* inherits on purpose (held locks) */
    const int   *hide_fds;     /* atomrun_run only: inheritable descriptors */
    int          nhide;        /* of the caller's the command must not get
                                  (`lock --fd N -o`): close-on-exec in the
                                  child alone, so the caller's stay open */
    int          new_group;    /* own process group (needed by timeout); if
                                  the caller is in the foreground of its
                                  terminal (stdin's, else /dev/tty), the
                                  group gets the foreground while it runs
                                  (no SIGTTIN on a read), and Ctrl-Z stops
                                  the caller with it */
    double       timeout;      /* < 0: none; then TERM to the group... */
    double       kill_after;   /* ...and KILL this long after */
    int          forward;      /* pass SIGTERM/SIGHUP on to the child;
                                  with new_group always, to the whole group */
    /* OUT: the timeout killed it.  The one output an options struct still
     * carries (see atomrun_err): it qualifies *code, which atomrun_run
     * reports beside it, and is left here until atomrun_run's status gets
     * a struct of its own. */
    int          timed_out;
    /* > 0: the signal the command gets when the calling THREAD ends
     * (PR_SET_PDEATHSIG; the Lua binding uses SIGKILL).  The kernel drops
     * it when the command execs a set-user-ID program. */
    int          die_with_parent;
    /* Called once the command runs, before waiting (not after a failed
     * exec).  Nonzero: the command is killed (SIGKILL, its group with
     * new_group) and reaped, and atomrun_run returns that value if
     * negative, else -ECANCELED. */
    int        (*on_start)(void *ctx, pid_t pid);
    void        *on_start_ctx;
} atomrun_spawn_opts;

ATOMRUN_API void atomrun_spawn_opts_init(atomrun_spawn_opts *o);
/*
 * Run argv (PATH search, no shell) and wait.  0 with *is_signal and *code
 * set (exit status, or signal number); -errno when it could not be started
 * (-ENOENT, -EACCES: reported by the child before exec, never a crash).
 */
ATOMRUN_API int atomrun_run(char *const argv[], atomrun_spawn_opts *o, int *is_signal,
                int *code);
/* Replace this process with argv; the new program gets the inheritable
 * descriptors and o->keep_fds.  Returns only on failure, with -errno, the
 * keep_fds close-on-exec again and the directory restored. */
ATOMRUN_API int atomrun_exec(char *const argv[], const atomrun_spawn_opts *o);

/* --------------------------------------------------------------- misc */


/*
 * What the filesystem under dir supports, each tested for real:
 * 1 works, 0 accepted but ineffective (a lock that does not exclude),
 * -errno refused (or, see scratch, not run).  -errno only when dir itself
 * cannot be opened.
 */
typedef struct atomrun_fsinfo {
    char fstype[32];       /* "ext4", "nfs", ... or the magic number */
    int  remote;           /* NFS, FUSE, CIFS, 9p, Ceph */
    int  volatile_;        /* tmpfs, ramfs: nothing survives a reboot */
    int  flock, ofd, tmpfile, noreplace, dirsync;
    int  scratch;          /* 0, or -errno: no scratch file could be made
                              in dir (read-only, not writable, /proc), so
                              flock, ofd and noreplace were NOT run (they
                              hold this error too) */
} atomrun_fsinfo;
ATOMRUN_API int atomrun_probe(const char *dir, atomrun_fsinfo *fi);

/* ----------------------------------------------------------- embedding */

typedef struct lua_State lua_State;

/*
 * The two Lua openers (the socket.core convention):
 *   luaopen_atomrun_core  the C primitives alone, module "atomrun.core"
 *                         (lock, open, create, run, ...): what
 *                         atomrun/core.so gives stock lua5.4, and what
 *                         the recipes in lua/ build on;
 *   luaopen_atomrun       for C hosts: puts the Lua sources bundled from
 *                         lua/ (and atomrun.core) in package.preload and
 *                         returns require("atomrun"), the full module:
 *                         lua/atomrun/init.lua, i.e. the core functions
 *                         plus the recipes (loaded on first use).
 * Use luaL_requiref(L, "atomrun", luaopen_atomrun, 1) or
 * atomrun_newstate().  Stock lua5.4 needs neither: after `make install`
 * `require "atomrun"` finds atomrun/init.lua and atomrun/core.so on its
 * default paths.
 */
ATOMRUN_API int luaopen_atomrun_core(lua_State *L);
ATOMRUN_API int luaopen_atomrun(lua_State *L);

/* A new state with the standard libraries, `atomrun` loadable by require and
 * set as a global.  NULL when out of memory. */
ATOMRUN_API lua_State *atomrun_newstate(void);

/* What atomrun_runscript() runs. */
enum atomrun_source {
    ATOMRUN_RUN_FILE = 0,    /* a script path; "-" reads standard input */
    ATOMRUN_RUN_CODE,        /* source text, like lua -e */
    ATOMRUN_RUN_COMMAND      /* a bundled subcommand ("lock", "once") */
};

/*
 * Run a script the way `atomrun SCRIPT ARGS...` does: `arg` and `...` as
 * lua(1) builds them (arg[-1] = progname), under a traceback handler.
 * Errors are printed as "<basename of progname>: message".  Returns the exit status
 * the command line uses: 0, or 1 after printing "<progname>: message" and a
 * traceback to stderr.  os.exit() leaves the process directly, as in lua(1).
 */
ATOMRUN_API int atomrun_runscript(lua_State *L, const char *progname, int source,
                      const char *script, int argc, char **argv);
/* 1 if `name` is a bundled subcommand (lua/atomrun/cmd/NAME.lua). */
ATOMRUN_API int atomrun_has_command(const char *name);
/* The i-th bundled subcommand (from 0), with its one-line summary in
 * *summary when summary is not NULL; NULL past the last one. */
ATOMRUN_API const char *atomrun_command(int i, const char **summary);
/* The state atomrun_runscript runs `source` in, as the command line makes
 * it: for ATOMRUN_RUN_COMMAND a lighter one (the standard libraries a
 * subcommand rarely needs are opened on first use); atomrun_newstate()
 * otherwise.  NULL when out of memory. */
ATOMRUN_API lua_State *atomrun_newstate_for(int source);

/* ------------------------------------------------ across machines: etcd */

/*
 * Coordination across hosts on an etcd 3.4+ cluster, spoken through its JSON
 * gateway (/v3/...) with libcurl and jansson.  Three layers, each usable on
 * its own:
 *   client   endpoints, TLS, user/password; one POST that rotates to the
 *            next endpoint on a transport error or timeout and rides out a
 *            leader election, all within the caller's timeout
 *   session  one lease per process, cluster and TTL, granted before the
 *            first wait and kept alive every TTL/3 by a background thread,
 *            revoked at exit
 *   lock     etcd's client-side queue (clientv3/concurrency's mutex), on
 *            etcd's own keys: one per contender, NAME "/" <lease hex>, as
 *            clientv3 and `etcdctl lock NAME` make them (so they and atomrun
 *            exclude each other), bound to the session's lease; the holder
 *            has the lowest create revision among all keys directly under
 *            NAME "/" (the fencing token); each waiter watches only its
 *            predecessor.
 *            n > 1 slots: a semaphore; shared mode: readers-writer.
 * Results are 0 / -errno like the rest of the core, plus:
 *   lost         the lease could have expired: the lock may be someone else's
 *   unavailable  no endpoint answered in time
 * Every call that talks to the cluster takes an atomrun_err (last, NULL
 * allowed) whose msg a failure fills with a sentence naming the endpoint
 * and the last error (never a password).
 *
 * Time is relative, as for the file locks: a `double timeout` in seconds
 * that the call may take, rotating endpoints within it --
 *   > 0              that long
 *   0                the client's op_timeout (atomrun_etcd_config)
 *   ATOMRUN_FOREVER  (any negative value) until a member answers
 * -- and for a lock, atomrun_etcd_lock_opts.timeout, the time to wait for
 * the turn (0: do not wait, "busy").  atomrun_etcd_watch alone has no
 * forever (see there).
 */
#define ATOMRUN_ELOST         (-20003)
#define ATOMRUN_EUNAVAILABLE  (-20004)

/* A lock's keys are the name's own (etcd's layout: ATOMRUN_ETCD_LOCK_PREFIX
 * NAME "/" <lease hex>), so the lock prefix is empty.  A key there whose
 * value is not an atomrun record (etcdctl writes an empty one) is another
 * client's exclusive holder: its atomrun_etcd_holder has pid 0 and host "". */
#define ATOMRUN_ETCD_LOCK_PREFIX ""
/* atomrun's bookkeeping, out of the users' names (a lock name equal to
 * "atomrun" or under it is refused): create's creator records (CREATOR
 * KEY), update's nonces (NONCE KEY "/" HOST.PID.LEASE.STATE), the
 * sentinels of their leases (ALIVE LEASE, in hex) and the locks' tickets
 * (etcd/lock.c).  The one spelling; the Lua recipes read it as
 * core.etcd.PREFIX. */
#define ATOMRUN_ETCD_PREFIX         "atomrun/"
#define ATOMRUN_ETCD_CREATOR_PREFIX ATOMRUN_ETCD_PREFIX "creator/"
#define ATOMRUN_ETCD_NONCE_PREFIX   ATOMRUN_ETCD_PREFIX "nonce/"
#define ATOMRUN_ETCD_ALIVE_PREFIX   ATOMRUN_ETCD_PREFIX "alive/"
/* A guarded command is dead this many seconds before its lock's lease can
 * expire (atomrun_etcd_lock_guard). */
#define ATOMRUN_ETCD_GUARD_MARGIN 0.25


typedef struct atomrun_etcd atomrun_etcd;

typedef struct atomrun_etcd_config {
    const char *endpoints;   /* "host:port[,host:port...]" (required) */
    int         tls;         /* 1: https */
    const char *ca_file;     /* TLS: CA bundle (NULL: the system's) */
    const char *cert_file;   /* TLS: client certificate and key (optional) */
    const char *key_file;
    const char *user;        /* etcd auth (NULL: none) */
    const char *password;
    double      op_timeout;  /* seconds an operation may take when the caller
                                gives a timeout of 0 (default 5) */
} atomrun_etcd_config;

ATOMRUN_API void atomrun_etcd_config_init(atomrun_etcd_config *cfg);
/*
 * A client for the cluster.  Opens with the same configuration return the
 * same handle, which shares one connection state and one lease per TTL;
 * it is thread-safe and lives as long as the process (its leases'
 * keepalive threads and the revoke at exit use it), so there is nothing
 * to close.  No network traffic happens here: -EINVAL for a malformed
 * endpoint list or configuration (err says which), -ELIBACC when libcurl
 * cannot be loaded (err names the package), -ENOMEM.
 */
ATOMRUN_API int  atomrun_etcd_open(const atomrun_etcd_config *cfg, atomrun_etcd **out,
                                   atomrun_err *err);
/* The endpoints, "h1:p1,h2:p2" (for messages). */
ATOMRUN_API const char *atomrun_etcd_endpoints(const atomrun_etcd *c);

/*
 * Who holds (or waits for) an etcd lock, or created a key.  Not one struct
 * with atomrun_holder: a file holder's range and kind mean nothing on etcd,
 * nor an etcd holder's token, lease, host and key on a file, and a caller
 * meets one backend at a time -- but what they share has the same name
 * and type in both (pid, mode, cmd, since: epoch seconds, parsed from the
 * record where the key is read), so code that shows a holder reads alike.
 */
typedef struct atomrun_etcd_holder {
    int64_t token;          /* create revision of the holder's key */
    int64_t lease;          /* its lease id */
    pid_t   pid;            /* 0 when unknown */
    int     mode;           /* ATOMRUN_SHARED or ATOMRUN_EXCLUSIVE */
    char    host[64];
    char    cmd[128];       /* credentials already stripped, control
                               characters escaped */
    int64_t since;          /* when it took the key (epoch seconds); 0 unknown */
    char    key[320];       /* the etcd key */
    int     slots;          /* a semaphore's slot: its count n; 0 a lock */
    int     waiting;        /* atomrun_etcd_queue: 1 waits, 0 holds */
} atomrun_etcd_holder;

typedef struct atomrun_etcd_lock_opts {
    int         mode;       /* ATOMRUN_EXCLUSIVE (default) or ATOMRUN_SHARED */
    int         slots;      /* 1 (default): a mutex; n: a semaphore of n */
    double      timeout;    /* ATOMRUN_FOREVER (default), 0, > 0 seconds */
    int         ttl;        /* lease seconds (default 10); the cluster's
                               minimum is found by asking: below it is
                               -ERANGE with acquire's *min_ttl set */
    const char *cmd;        /* command recorded for others to see; NULL: this
                               process's command line, credentials stripped */
} atomrun_etcd_lock_opts;

ATOMRUN_API void atomrun_etcd_lock_opts_init(atomrun_etcd_lock_opts *o);

typedef struct atomrun_etcd_lock atomrun_etcd_lock;

/*
 * Take the lock NAME on the cluster: any bytes but NUL, at most 200, not
 * empty, and none of: a leading or trailing '/', an empty segment ("a//b"),
 * "atomrun" or a name under "atomrun/" (atomrun's own keys) -- -EINVAL.
 * The contender key is NAME "/" <lease hex>, as etcdctl lock and clientv3's
 * Mutex make theirs, so they exclude each other.  0 and *out; ATOMRUN_EBUSY (timeout 0), ATOMRUN_ETIMEOUT,
 * ATOMRUN_EUNAVAILABLE, ATOMRUN_ELOST (the lease expired while waiting and
 * no time was left to queue again), -ERANGE (ttl), -EINVAL, -EACCES, -EPROTO.
 * A waiter that gives up leaves no key behind.  Two out-parameters besides
 * err (each NULL allowed), because what they carry is no sentence: *holder,
 * on busy/timeout (and -EINVAL for a semaphore of another count), the
 * holder in the way (token 0: unknown); *min_ttl, on -ERANGE, the
 * cluster's minimum TTL (0: ttl < 1 was refused here) -- as
 * atomrun_etcd_session_lease reports it.
 */
ATOMRUN_API int atomrun_etcd_lock_acquire(atomrun_etcd *c, const char *name,
                                          const atomrun_etcd_lock_opts *o,
                                          atomrun_etcd_lock **out,
                                          atomrun_etcd_holder *holder, int *min_ttl,
                                          atomrun_err *err);
/* The fencing token: strictly increasing from one holder of NAME to the
 * next (the key's create revision). */
ATOMRUN_API int64_t atomrun_etcd_lock_token(const atomrun_etcd_lock *l);
/* What else a held lock is, for messages and for a caller's own txns. */
typedef struct atomrun_etcd_lockinfo {
    int64_t     token;      /* atomrun_etcd_lock_token's */
    int         index;      /* rank among the holders when granted (1-based;
                               semaphores) */
    const char *key;        /* its contender key (valid while l lives) */
    int64_t     lease;      /* the lease the key is bound to */
    int         ttl;        /* that lease's TTL, seconds */
    /* The id of the cluster that granted the lock (from its answer; 0 if
     * it gave none).  atomrun_etcd_cluster_id asks c's cluster for its own
     * (one read): two endpoint lists name one cluster when the ids are
     * equal. */
    uint64_t    cluster;
} atomrun_etcd_lockinfo;
ATOMRUN_API void atomrun_etcd_lock_info(const atomrun_etcd_lock *l,
                                        atomrun_etcd_lockinfo *info);
ATOMRUN_API int atomrun_etcd_cluster_id(atomrun_etcd *c, double timeout, uint64_t *id,
                                        atomrun_err *err);
/*
 * 0 while the lock is certainly held; ATOMRUN_ELOST, with err->msg (if err
 * is not NULL) saying why, as soon as the lease could have expired: a
 * keepalive answered without a TTL, or the deadline counted from the last
 * confirmed keepalive's SEND time passed (on CLOCK_BOOTTIME: time
 * suspended counts).
 * Cheap (no network); sticky.
 */
ATOMRUN_API int atomrun_etcd_lock_lost(const atomrun_etcd_lock *l, atomrun_err *err);
/*
 * Guard a command: a watchdog PROCESS (forked now; it runs in a process
 * group of its own, so a SIGSTOP or SIGKILL of this process does not stop
 * it) that ends process group pgid -- the command's, its leader's pid --
 * and the command's descendants before the lease can expire: SIGTERM at
 * the lease's deadline minus ATOMRUN_ETCD_GUARD_MARGIN minus kill_after,
 * SIGKILL at the deadline minus the margin, SIGKILL at once when the
 * cluster says the lease is gone or this process dies.  The deadline is the
 * one lk:lost() counts on (CLOCK_BOOTTIME): while this process is stopped
 * it stands still and the watchdog acts on it; while it runs, keepalives
 * move it on.  kill_after < 0: the default, TTL/4 and at most 5 s; it must be at most
 * TTL/2 - ATOMRUN_ETCD_GUARD_MARGIN (-ERANGE otherwise).
 * While a guard runs this process is a child subreaper (PR_SET_CHILD_
 * SUBREAPER), so the command's orphans are swept with it.  pgid 0: every
 * child of this process, for a caller that starts the command only after
 * the guard (those children are not ended if this process is killed:
 * start them with PR_SET_PDEATHSIG).  -ERANGE: kill_after does not fit.
 * unguard stops it (release does too) and returns what it sent: 0
 * nothing, or the bits 1 (SIGTERM) and 2 (SIGKILL).  Stop it right after
 * waiting for the command: its pid may be reused once it has been waited
 * for.
 */
ATOMRUN_API int atomrun_etcd_lock_guard(atomrun_etcd_lock *l, pid_t pgid,
                                        double kill_after);
ATOMRUN_API int atomrun_etcd_lock_unguard(atomrun_etcd_lock *l);
/*
 * Release: delete the key only if it still has this lock's token.  0 or
 * ATOMRUN_ELOST (someone else's now, or the lease was lost): l is freed.
 * ATOMRUN_EUNAVAILABLE: no answer came (or the delete was refused), so the
 * key may still be there; it is not left so -- the lease is let go if no
 * other lock uses it (the key goes within twice the TTL at the latest),
 * and the release (or the lease's revoke) is retried in the background
 * until a member answers; err says which and what happens next.  l then
 * stays, released as far as the caller goes (never a fence, never
 * guarded): atomrun_etcd_lock_release(l) again says how it went -- 0 once a
 * member answered (l freed), ATOMRUN_EUNAVAILABLE while pending -- and
 * atomrun_etcd_lock_free(l) drops it without asking (the retry goes on).
 */
ATOMRUN_API int atomrun_etcd_lock_release(atomrun_etcd_lock *l, atomrun_err *err);
/* Free l: a held lock is released first (its result dropped), a pending
 * release is left to its retry. */
ATOMRUN_API void atomrun_etcd_lock_free(atomrun_etcd_lock *l);
/*
 * The holders and waiters of NAME in queue order (holders first): up to max
 * entries into h, the total count in *count.
 */
ATOMRUN_API int atomrun_etcd_queue(atomrun_etcd *c, const char *name,
                                   atomrun_etcd_holder *h, int max, int *count,
                                   atomrun_err *err);
/*
 * Keys (the ground of create/replace/read/update on etcd names): raw etcd
 * keys, values of any bytes.  get: 0 with *data (malloc'd, NUL-terminated),
 * *len and *kv; -ENOENT for a missing key.  put: one txn with the
 * conditions of o -- create_only (-EEXIST, out->existing and out->creator
 * filled), if_mod_rev (-ESTALE: changed since read), fence (ATOMRUN_ELOST:
 * that lock's key no longer has its token, so nothing was written), ttl
 * (the key is bound to this process's lease of that TTL: it goes a TTL
 * after the process dies).  What the put found out is in *out (NULL
 * allowed), the options being inputs only.
 */
typedef struct atomrun_etcd_kv_meta {     /* atomrun_etcd_kv without the bytes */
    int64_t create_rev, mod_rev, version, lease;
} atomrun_etcd_kv_meta;

typedef struct atomrun_etcd_put_opts {
    int                      create_only;
    int64_t                  if_mod_rev;  /* > 0: only if unchanged */
    const atomrun_etcd_lock *fence;       /* only while this lock holds */
    int                      ttl;         /* > 0: bound to the session */
} atomrun_etcd_put_opts;

typedef struct atomrun_etcd_put_result {
    int64_t              revision;        /* the write's revision (0: failed) */
    atomrun_etcd_kv_meta existing;        /* on failure: the key now */
    /* on -EEXIST: who created the key, from the creator record a
     * create_only write leaves beside it (atomrun/creator/KEY, written in
     * the same txn): token = its create revision; pid 0 and host "" when
     * the key was made by another writer (etcdctl, a replace). */
    atomrun_etcd_holder  creator;
} atomrun_etcd_put_result;

ATOMRUN_API void atomrun_etcd_put_opts_init(atomrun_etcd_put_opts *o);
/*
 * The process's session lease for ttl seconds on c (the one ttl-bound puts
 * and locks of that ttl share): granted now if there is none or the last
 * was lost, then kept alive while the process runs and revoked at its exit
 * (gone a TTL after a crash).  For a caller that binds keys of its own
 * txns to the process.  -ERANGE with *min_ttl (NULL allowed): the
 * cluster's minimum TTL is above ttl.
 */
ATOMRUN_API int atomrun_etcd_session_lease(atomrun_etcd *c, int ttl, double timeout,
                                           int64_t *lease, int *min_ttl,
                                           atomrun_err *err);
ATOMRUN_API int atomrun_etcd_get(atomrun_etcd *c, const char *key, char **data,
                                 size_t *len, atomrun_etcd_kv_meta *kv,
                                 double timeout, atomrun_err *err);
ATOMRUN_API int atomrun_etcd_put(atomrun_etcd *c, const char *key, const void *data,
                                 size_t len, const atomrun_etcd_put_opts *o,
                                 atomrun_etcd_put_result *out, double timeout,
                                 atomrun_err *err);

/*
 * Transactions: one /v3/kv/txn, in the style of clientv3's
 * Txn().If(cmp...).Then(op...).Else(op...): if every compare holds, the
 * `then` ops run, otherwise the `otherwise` ops, all at one revision.  Keys
 * and values are byte strings (any bytes, NUL included, with their
 * lengths); the base64 and the JSON of the gateway stay inside.  The
 * enumerations start at 1, so a target, result or op type left zero is
 * refused (-EINVAL), never a guess.  The library's own locks and keys
 * ((atomrun_etcd_lock_*, atomrun_etcd_get/put)) are txns of this kind.
 */
enum atomrun_etcd_target {          /* what of the key a compare looks at */
    ATOMRUN_ETCD_VERSION = 1,       /* number: writes since created (0: absent) */
    ATOMRUN_ETCD_CREATE,            /* number: create revision (0: absent) */
    ATOMRUN_ETCD_MOD,               /* number: mod revision (0: absent) */
    ATOMRUN_ETCD_VALUE,             /* value, valuelen: the bytes */
    ATOMRUN_ETCD_LEASE              /* number: its lease id (0: none) */
};
enum atomrun_etcd_result {          /* the key's side OP the compare's side */
    ATOMRUN_ETCD_EQUAL = 1,
    ATOMRUN_ETCD_NOT_EQUAL,
    ATOMRUN_ETCD_GREATER,
    ATOMRUN_ETCD_LESS
};
typedef struct atomrun_etcd_cmp {
    const void *key;
    size_t      keylen;             /* > 0 */
    int         target;             /* ATOMRUN_ETCD_VERSION ... _LEASE */
    int         result;             /* ATOMRUN_ETCD_EQUAL ... _LESS */
    int64_t     number;             /* VERSION, CREATE, MOD, LEASE */
    const void *value;              /* VALUE (NULL with valuelen 0: empty) */
    size_t      valuelen;
} atomrun_etcd_cmp;

enum atomrun_etcd_optype { ATOMRUN_ETCD_PUT = 1, ATOMRUN_ETCD_RANGE, ATOMRUN_ETCD_DELETE };
enum atomrun_etcd_sort {            /* a RANGE's order (0: etcd's, by key) */
    ATOMRUN_ETCD_SORT_KEY = 1,
    ATOMRUN_ETCD_SORT_VERSION,
    ATOMRUN_ETCD_SORT_CREATE,
    ATOMRUN_ETCD_SORT_MOD,
    ATOMRUN_ETCD_SORT_VALUE
};
/*
 * One op.  RANGE and DELETE act on key alone, on [key, range_end) when
 * range_end is given (one NUL byte: every key from key on), or on every key
 * that starts with key when prefix is 1 (not both).  Zero is the default
 * of every field but type and key.
 */
typedef struct atomrun_etcd_op {
    int         type;               /* ATOMRUN_ETCD_PUT, _RANGE, _DELETE */
    const void *key;
    size_t      keylen;             /* > 0 */
    const void *range_end;          /* RANGE, DELETE */
    size_t      range_end_len;
    int         prefix;             /* RANGE, DELETE: the keys under key */
    const void *value;              /* PUT (NULL with valuelen 0: empty) */
    size_t      valuelen;
    int64_t     lease;              /* PUT: bound to this lease (0: none) */
    int         prev_kv;            /* PUT, DELETE: answer the kvs before */
    int64_t     limit;              /* RANGE: at most that many kvs (0: all) */
    int         keys_only;          /* RANGE: no values */
    int         count_only;         /* RANGE: the count, no kvs */
    int         sort;               /* RANGE: ATOMRUN_ETCD_SORT_* or 0 */
    int         descend;            /* RANGE: sorted, in descending order */
    int64_t     revision;           /* RANGE: the keys as of this revision (0:
                                       now); a compacted one is refused */
} atomrun_etcd_op;

/* A key as the cluster holds it.  key and value are malloc'd, each with a
 * NUL after its bytes (not counted); a caller may take one over by setting
 * it to NULL before atomrun_etcd_txn_free. */
typedef struct atomrun_etcd_kv {
    char   *key;
    size_t  keylen;
    char   *value;                  /* "" under keys_only */
    size_t  valuelen;
    int64_t create_rev, mod_rev, version, lease;
} atomrun_etcd_kv;

/* What one op of the branch taken answered (the others stay 0). */
typedef struct atomrun_etcd_op_result {
    int              type;          /* ATOMRUN_ETCD_PUT, _RANGE, _DELETE */
    atomrun_etcd_kv *kvs;           /* RANGE: in the op's order */
    size_t           nkvs;
    int64_t          count;         /* RANGE: the keys in the range, all of
                                       them (limit or not) */
    int              more;          /* RANGE: limit left some out */
    int64_t          deleted;       /* DELETE: how many keys went */
    atomrun_etcd_kv *prev_kvs;      /* prev_kv: PUT the one it replaced (none
                                       for a new key), DELETE those it deleted */
    size_t           nprev;
} atomrun_etcd_op_result;

typedef struct atomrun_etcd_txn_result {
    int                     succeeded;  /* 1: the compares held, `then` ran */
    int64_t                 revision;   /* the store's revision after it */
    uint64_t                cluster;    /* the answering cluster's id (0: none) */
    atomrun_etcd_op_result *ops;        /* one per op of the branch taken */
    size_t                  nops;
} atomrun_etcd_txn_result;

/*
 * Send one txn: 0 and *out (free it with atomrun_etcd_txn_free) whichever
 * branch ran; -EINVAL before sending (a NULL or empty key, an unknown
 * target, result, op type or sort, range_end with prefix: err says which);
 * or what any call of the cluster may return: ATOMRUN_EUNAVAILABLE, -EACCES,
 * -EPROTO, -EINVAL (the server refused it -- too many ops, one key written
 * twice -- and err has its words), -E2BIG (over the cluster's
 * --max-request-bytes), -ENOENT (a put's lease is gone), and -ENOMEM.
 * timeout: seconds the call may take, rotating endpoints within it; 0 the
 * client's op_timeout; ATOMRUN_FOREVER until a member answers.
 * A txn that got no answer may still have been applied: make it one whose
 * second copy does no harm (a compare on what it writes).
 */
ATOMRUN_API int  atomrun_etcd_txn(atomrun_etcd *c, const atomrun_etcd_cmp *cmp, size_t ncmp,
                                  const atomrun_etcd_op *then, size_t nthen,
                                  const atomrun_etcd_op *otherwise, size_t nelse,
                                  atomrun_etcd_txn_result **out, double timeout,
                                  atomrun_err *err);
ATOMRUN_API void atomrun_etcd_txn_free(atomrun_etcd_txn_result *res);

/*
 * Watch key (every key under it when it ends in '/') from start_rev for
 * timeout seconds: fn(ud, ev, n) with the n events of each result of
 * etcd's watch stream, in revision order (keys and values as bytes, as a
 * txn gives them; a deleted key has its key and mod_rev, the revision of
 * the delete); a nonzero return stops.  The events are freed when fn
 * returns (copy what you keep).
 * 1: fn stopped it; 0: time up, the stream broke or the server cancelled
 * the watch (a compaction): look again; < 0 an error.  timeout <= 0
 * returns 0 at once: no ATOMRUN_FOREVER here, because the stream is one
 * transfer that needs a finite time, and a watch ends at any break anyway,
 * so a caller that watches for long loops.
 */
typedef struct atomrun_etcd_event {
    int             deleted;        /* 1: a delete; 0: a put */
    atomrun_etcd_kv kv;
} atomrun_etcd_event;
typedef int (*atomrun_etcd_watch_fn)(void *ud, const atomrun_etcd_event *ev, size_t n);
ATOMRUN_API int atomrun_etcd_watch(atomrun_etcd *c, const char *key, int64_t start_rev,
                                   double timeout, atomrun_etcd_watch_fn fn, void *ud,
                                   atomrun_err *err);

#ifdef __cplusplus
}
#endif
#endif /* ATOMRUN_H */
