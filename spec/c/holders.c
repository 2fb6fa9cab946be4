/*
 * holders.c -- the C API of the live holder, who, descriptors and run.
 *
 * Uses only the public header, as a host would:
 *   - a process takes a flock lock, forks a child that keeps the
 *     description, and exits: atomrun_flock_holder and atomrun_who name
 *     the child (alive, holding it), never the dead taker;
 *     atomrun_pid_holds agrees;
 *   - atomrun_fd_lockable: a closed, an O_PATH and a read-only descriptor;
 *   - atomrun_lockfile_open: no-follow, follow;
 *   - atomrun_run: an inheritable descriptor of the caller reaches the
 *     command (`echo >&N`), a close-on-exec one does not, and on_start
 *     returning non-zero kills and reaps the command (-ECANCELED).
 *
 * Exit 0 on success; otherwise print each failure and exit 1.
 */
#define _GNU_SOURCE
#include "atomrun.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TEST_NAME "holders"
#include "check.h"

static char dir[64];

static void path_in(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", dir, name);
}

/* Take the lock, fork a child that keeps it (its pid on the pipe), exit. */
static pid_t orphaned_holder(const char *path, pid_t *taker)
{
    int p[2];
    pid_t child = 0;
    *taker = -1;                /* said in test_live_holder's messages */
    if (pipe(p) != 0)
        return -1;
    *taker = fork();
    if (*taker == 0) {
        int fd = open(path, O_RDWR | O_CREAT, 0600);
        if (fd < 0 || flock(fd, LOCK_EX) != 0)
            _exit(1);
        pid_t c = fork();
        if (c == 0) {
            pause();
            _exit(0);
        }
        if (write(p[1], &c, sizeof c) != sizeof c)
            _exit(1);
        _exit(0);
    }
    close(p[1]);
    if (read(p[0], &child, sizeof child) != sizeof child)
        child = -1;
    close(p[0]);
    waitpid(*taker, NULL, 0);              /* the taker is dead and reaped */
    return child;
}

static void test_live_holder(void)
{
    char path[128];
    atomrun_holder h;
    atomrun_lockinfo *list = NULL;
    pid_t taker, child;
    int fd, r, n;
    struct stat st;

    path_in(path, sizeof path, "orphan.lock");
    child = orphaned_holder(path, &taker);
    CHECK(child > 0, "no holder child");
    fd = atomrun_lockfile_open(path, 1, 0600, ATOMRUN_NOFOLLOW, NULL);
    CHECK(fd >= 0, "open: %d", fd);
    r = atomrun_flock(fd, ATOMRUN_EXCLUSIVE, 0);
    CHECK(r == ATOMRUN_EBUSY, "flock: %d, not busy", r);
    r = atomrun_flock_holder(fd, ATOMRUN_EXCLUSIVE, &h);
    CHECK(r == 1, "flock_holder: %d", r);
    CHECK(h.pid == child, "holder %d, want the live child %d (taker %d)",
          (int)h.pid, (int)child, (int)taker);
    CHECK(strcmp(h.kind, "flock") == 0, "kind %s", h.kind);
    CHECK(h.since > 0, "since %lld", (long long)h.since);
    n = atomrun_who(path, &list);
    CHECK(n == 1, "who: %d entries", n);
    if (n >= 1) {
        CHECK(list[0].h.pid == child, "who: pid %d", (int)list[0].h.pid);
        CHECK(!list[0].waiting, "who: waiting");
    }
    free(list);
    stat(path, &st);
    CHECK(atomrun_pid_holds(child, st.st_dev, st.st_ino) == 1, "child holds");
    CHECK(atomrun_pid_holds(getpid(), st.st_dev, st.st_ino) == 0, "we hold");
    CHECK(atomrun_pid_holds(0, st.st_dev, st.st_ino) == -EINVAL, "pid 0");
    kill(child, SIGKILL);
    /* the child is not ours to reap (its parent died): wait for the lock */
    r = atomrun_flock(fd, ATOMRUN_EXCLUSIVE, 10);
    CHECK(r == 0, "lock after the holder died: %d", r);
    n = atomrun_who(path, &list);
    CHECK(n == 1 && list[0].h.pid == getpid(), "who names us now: %d", n);
    free(list);
    close(fd);
    n = atomrun_who(path, &list);
    CHECK(n == 0 && list == NULL, "free file: %d", n);
}

static void test_fd_lockable(void)
{
    char path[128];
    int why = -1, fd;

    path_in(path, sizeof path, "fd.lock");
    CHECK(atomrun_fd_lockable(987, ATOMRUN_EXCLUSIVE, 0, &why) == -EBADF &&
          why == ATOMRUN_FD_CLOSED, "closed: why %d", why);
    fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
    CHECK(atomrun_fd_lockable(fd, ATOMRUN_EXCLUSIVE, 0, &why) == 0,
          "read-only flock: why %d", why);
    CHECK(atomrun_fd_lockable(fd, ATOMRUN_EXCLUSIVE, 1, &why) == -EBADF &&
          why == ATOMRUN_FD_READONLY, "read-only fcntl: why %d", why);
    CHECK(atomrun_fd_lockable(fd, ATOMRUN_SHARED, 1, &why) == 0,
          "read-only shared fcntl: why %d", why);
    close(fd);
    fd = open(path, O_PATH | O_CLOEXEC);
    CHECK(atomrun_fd_lockable(fd, 0, 0, &why) == -EBADF &&
          why == ATOMRUN_FD_PATH, "O_PATH: why %d", why);
    close(fd);
}

static void test_follow(void)
{
    char target[128], link[128];
    int fd;

    path_in(target, sizeof target, "target");
    path_in(link, sizeof link, "link");
    CHECK(symlink("target", link) == 0, "symlink");
    fd = atomrun_lockfile_open(link, 1, 0600, ATOMRUN_NOFOLLOW, NULL);
    CHECK(fd == -ELOOP, "no-follow: %d", fd);
    fd = atomrun_lockfile_open(link, 1, 0600, ATOMRUN_FOLLOW, NULL);
    CHECK(fd >= 0 && access(target, F_OK) == 0, "follow: %d", fd);
    if (fd >= 0)
        close(fd);
    fd = atomrun_lockfile_open(link, 1, 0600, ATOMRUN_FOLLOW_PROTECTED,
                                      NULL);
    CHECK(fd >= 0, "protected, our own link: %d", fd);
    if (fd >= 0)
        close(fd);
    CHECK(atomrun_lockfile_open(link, 1, 0600, 7, NULL) == -EINVAL,
          "bad follow value");
}

static int refuse(void *ctx, pid_t pid)
{
    *(pid_t *)ctx = pid;
    return 1;
}

static void test_run(void)
{
    char out[128], cmd[256], buf[64] = "";
    char *argv[] = { "sh", "-c", cmd, NULL };
    atomrun_spawn_opts o;
    int is_signal = -1, code = -1, r, fd, cloexec, n;
    pid_t started = 0;

    path_in(out, sizeof out, "out");
    fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);     /* inheritable */
    cloexec = open("/dev/null", O_RDONLY | O_CLOEXEC);
    snprintf(cmd, sizeof cmd, "echo via$0 >&%d; [ ! -e /proc/self/fd/%d ]",
             fd, cloexec);
    atomrun_spawn_opts_init(&o);
    r = atomrun_run(argv, &o, &is_signal, &code);
    CHECK(r == 0 && !is_signal && code == 0, "run: %d %d %d", r, is_signal,
          code);
    close(fd);
    close(cloexec);
    fd = open(out, O_RDONLY);
    n = (int)read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    CHECK(strcmp(buf, "viash\n") == 0, "the command wrote '%s'", buf);

    snprintf(cmd, sizeof cmd, "sleep 60");
    atomrun_spawn_opts_init(&o);
    o.on_start = refuse;
    o.on_start_ctx = &started;
    r = atomrun_run(argv, &o, &is_signal, &code);
    CHECK(r == -ECANCELED, "refused in on_start: %d", r);
    CHECK(started > 0 && kill(started, 0) != 0, "the command %d is still there",
          (int)started);
}

int main(void)
{
    if (check_mkdtemp(dir, sizeof dir) < 0)
        return 1;
    test_live_holder();
    test_fd_lockable();
    test_follow();
    test_run();
    if (check_rmtree(dir) < 0)
        failures++;
    if (failures)
        return 1;
    printf("holders: ok\n");
    return 0;
}
