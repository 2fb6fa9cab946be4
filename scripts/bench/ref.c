/*
 * ref.c -- the raw-syscall limit for `make bench`: the same work the atomrun
 * benchmarks do, written directly against the kernel with no library in
 * between.  Each subcommand times its own loop (process start-up is not
 * measured) and prints two numbers: wall-clock seconds per operation
 * (CLOCK_MONOTONIC) and CPU seconds per operation, user + system
 * (CLOCK_PROCESS_CPUTIME_ID), which other processes on the machine do not
 * inflate.
 *
 *   ref lockcycle PATH N           open + flock(LOCK_EX) + flock(LOCK_UN) + close
 *   ref range PATH N               F_OFD_SETLK write lock + unlock, fd kept open
 *   ref create DIR N               open(O_CREAT|O_EXCL) + close
 *   ref create-durable DIR N       the same + open dir, fsync dir, close dir
 *   ref replace PATH SIZE N        temp + write + fsync + rename + dir fsync
 *   ref counter PATH K START_AT    K read-modify-write increments under a flock
 *                                  on PATH.lock; prints "start end K"
 *   ref waiter PATH                hand-off waiter: per "go" line on stdin,
 *                                  blocking flock, print the time it got it
 *   ref stamp                      print CLOCK_MONOTONIC seconds
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void report(double wall, double cpu_s, long n)
{
    printf("%.9e %.9e\n", wall / (double)n, cpu_s / (double)n);
}

static void die(const char *what, const char *path)
{
    fprintf(stderr, "ref: %s %s: %s\n", what, path ? path : "", strerror(errno));
    exit(1);
}

static long arg_long(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 0) {
        fprintf(stderr, "ref: bad number '%s'\n", s);
        exit(2);
    }
    return v;
}

/* Untimed warm-up iterations before each timed loop, the same count the Lua
 * and Python versions use. */
static long warmup_of(long n)
{
    return n / 10 < 1000 ? n / 10 : 1000;
}

/* ------------------------------------------------------------- locks */

static void lock_cycle(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        die("open", path);
    if (flock(fd, LOCK_EX) != 0)
        die("flock", path);
    if (flock(fd, LOCK_UN) != 0)
        die("unlock", path);
    close(fd);
}

static int cmd_lockcycle(const char *path, long n)
{
    double t, c;
    for (long i = 0; i < warmup_of(n); i++)
        lock_cycle(path);
    t = now();
    c = cpu();
    for (long i = 0; i < n; i++)
        lock_cycle(path);
    report(now() - t, cpu() - c, n);
    return 0;
}

static void range_op(int fd, short type)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 100;
    if (fcntl(fd, F_OFD_SETLK, &fl) != 0)
        die("fcntl F_OFD_SETLK", NULL);
}

static int cmd_range(const char *path, long n)
{
    double t, c;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        die("open", path);
    for (long i = 0; i < warmup_of(n); i++) {
        range_op(fd, F_WRLCK);
        range_op(fd, F_UNLCK);
    }
    t = now();
    c = cpu();
    for (long i = 0; i < n; i++) {
        range_op(fd, F_WRLCK);
        range_op(fd, F_UNLCK);
    }
    report(now() - t, cpu() - c, n);
    close(fd);
    return 0;
}

/* ------------------------------------------------------------ create */

static int cmd_create(const char *dir, long n, int durable)
{
    char name[4096];
    double t, c, total = 0, total_cpu = 0;
    for (long i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%s/c.%ld", dir, i);
        t = now();
        c = cpu();
        int fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0)
            die("open O_EXCL", name);
        close(fd);
        if (durable) {
            int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd < 0 || fsync(dfd) != 0)
                die("fsync", dir);
            close(dfd);
        }
        total += now() - t;
        total_cpu += cpu() - c;
    }
    report(total, total_cpu, n);
    for (long i = 0; i < n; i++) {        /* untimed clean-up */
        snprintf(name, sizeof name, "%s/c.%ld", dir, i);
        unlink(name);
    }
    return 0;
}

/* ----------------------------------------------------------- replace */

static void write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("write", NULL);
        p += w;
        len -= (size_t)w;
    }
}

/* The textbook durable replace: a temp file in the same directory, written
 * and fsynced, renamed over the target, then the directory fsynced. */
static void replace(const char *path, const char *data, size_t len)
{
    char tmp[4200], dir[4096];
    const char *slash = strrchr(path, '/');
    int fd, dfd;

    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        die("open", tmp);
    write_all(fd, data, len);
    if (fsync(fd) != 0)
        die("fsync", tmp);
    close(fd);
    if (rename(tmp, path) != 0)
        die("rename", path);
    if (slash) {
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    } else {
        strcpy(dir, ".");
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0)
        die("fsync", dir);
    close(dfd);
}

static int cmd_replace(const char *path, long size, long n)
{
    char *data = malloc((size_t)size + 1);
    double t, c;
    if (!data)
        die("malloc", NULL);
    for (long i = 0; i < size; i++)
        data[i] = (char)('a' + i % 26);
    replace(path, data, (size_t)size);    /* warm-up: the file exists */
    t = now();
    c = cpu();
    for (long i = 0; i < n; i++)
        replace(path, data, (size_t)size);
    report(now() - t, cpu() - c, n);
    free(data);
    return 0;
}

/* ----------------------------------------------------------- counter */

static void sleep_until(double when)
{
    double d = when - now();
    if (d > 0) {
        struct timespec ts = { (time_t)d, (long)((d - (double)(time_t)d) * 1e9) };
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
}

static int cmd_counter(const char *path, long k, double start_at)
{
    char lockpath[4200], buf[64];
    double t0, t1;
    snprintf(lockpath, sizeof lockpath, "%s.lock", path);
    sleep_until(start_at);
    t0 = now();
    for (long i = 0; i < k; i++) {
        long value = 0;
        int lfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        if (lfd < 0)
            die("open", lockpath);
        if (flock(lfd, LOCK_EX) != 0)
            die("flock", lockpath);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t got = read(fd, buf, sizeof buf - 1);
            if (got < 0)
                die("read", path);
            buf[got] = '\0';
            value = strtol(buf, NULL, 10);
            close(fd);
        } else if (errno != ENOENT) {
            die("open", path);
        }
        int len = snprintf(buf, sizeof buf, "%ld", value + 1);
        replace(path, buf, (size_t)len);
        close(lfd);                       /* releases the lock */
    }
    t1 = now();
    printf("%.9f %.9f %ld\n", t0, t1, k);
    return 0;
}

/* ----------------------------------------------------------- hand-off */

static int cmd_waiter(const char *path)
{
    char line[64];
    printf("ready\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        if (fd < 0)
            die("open", path);
        if (flock(fd, LOCK_EX) != 0)      /* blocks in the kernel */
            die("flock", path);
        double t = now();
        printf("%.9f\n", t);
        fflush(stdout);
        close(fd);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";
    if (strcmp(cmd, "stamp") == 0) {
        printf("%.9f\n", now());
        return 0;
    }
    if (strcmp(cmd, "lockcycle") == 0 && argc == 4)
        return cmd_lockcycle(argv[2], arg_long(argv[3]));
    if (strcmp(cmd, "range") == 0 && argc == 4)
        return cmd_range(argv[2], arg_long(argv[3]));
    if (strcmp(cmd, "create") == 0 && argc == 4)
        return cmd_create(argv[2], arg_long(argv[3]), 0);
    if (strcmp(cmd, "create-durable") == 0 && argc == 4)
        return cmd_create(argv[2], arg_long(argv[3]), 1);
    if (strcmp(cmd, "replace") == 0 && argc == 5)
        return cmd_replace(argv[2], arg_long(argv[3]), arg_long(argv[4]));
    if (strcmp(cmd, "counter") == 0 && argc == 5)
        return cmd_counter(argv[2], arg_long(argv[3]), strtod(argv[4], NULL));
    if (strcmp(cmd, "waiter") == 0 && argc == 3)
        return cmd_waiter(argv[2]);
    fprintf(stderr, "usage: ref lockcycle|range|create|create-durable|replace|"
                    "counter|waiter|stamp ARGS...\n");
    return 2;
}
