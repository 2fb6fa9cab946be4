/*
 * harness.c -- the measuring side of `make bench`, shared by every
 * contender so that none of them is timed by its own clock alone.
 *
 * harness handoff LOCKFILE N HOLD_MIN_MS HOLD_MAX_MS SEED [--spawn] -- CMD...
 *     The holder.  N times: take an exclusive flock on LOCKFILE, let a waiter
 *     start waiting for it, hold it for a random time in [HOLD_MIN, HOLD_MAX]
 *     ms (so a polling waiter is caught at a random point of its poll
 *     interval), read CLOCK_MONOTONIC, unlock, and read back the
 *     CLOCK_MONOTONIC the waiter saw right after it got the lock.  Prints
 *     one hand-off latency (seconds) per line, after one unshown warm-up
 *     hand-off (first-touch page faults, cold caches).
 *       default: CMD is one long-lived waiter; it prints "ready" once it has
 *                started, then per "go" line on its stdin it waits for the
 *                lock, prints the time it got it and releases it.
 *       --spawn: CMD is started once per sample (for `flock -w 10 F stamp`)
 *                and prints the time once it has the lock.
 *
 * harness spawn N -- CMD1... [-- CMD2... ...]
 *     Start each command N times, round-robin (CMD1, CMD2, CMD1, ...), with
 *     stdio on /dev/null; per command print
 *         "median_wall min_wall median_cpu median_maxrss_kib"
 *     wall: seconds from posix_spawn to the end of wait4, which includes
 *     waiting for a CPU on a busy machine; cpu: user + system seconds of
 *     the command and the children it waited for (rusage from wait4), which
 *     does not; maxrss: ru_maxrss from wait4.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "harness: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void sleep_for(double s)
{
    struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static uint64_t rng_state;

static double rng_unit(void)             /* xorshift64*, [0, 1) */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

/* Start argv with stdin/stdout on the given descriptors (-1: /dev/null). */
static pid_t start(char **argv, int in, int out)
{
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int r;

    posix_spawn_file_actions_init(&fa);
    if (in >= 0)
        posix_spawn_file_actions_adddup2(&fa, in, 0);
    else
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (out >= 0)
        posix_spawn_file_actions_adddup2(&fa, out, 1);
    else
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0) {
        errno = r;
        die(argv[0]);
    }
    return pid;
}

static double read_stamp(FILE *f)
{
    char line[128];
    char *end;
    if (!fgets(line, sizeof line, f)) {
        fprintf(stderr, "harness: the waiter exited early\n");
        exit(1);
    }
    double v = strtod(line, &end);
    if (end == line) {
        fprintf(stderr, "harness: bad line from the waiter: %s", line);
        exit(1);
    }
    return v;
}

static int cmd_handoff(int argc, char **argv)
{
    const char *path;
    long n;
    double hold_min, hold_max;
    int spawn_each = 0, i = 7, fd;

    if (argc < 9)
        return 2;
    path = argv[2];
    n = strtol(argv[3], NULL, 10);
    hold_min = strtod(argv[4], NULL) / 1000.0;
    hold_max = strtod(argv[5], NULL) / 1000.0;
    rng_state = strtoull(argv[6], NULL, 10) * 2654435761ULL + 88172645463325252ULL;
    if (strcmp(argv[i], "--spawn") == 0) {
        spawn_each = 1;
        i++;
    }
    if (i >= argc || strcmp(argv[i], "--") != 0 || i + 1 >= argc)
        return 2;
    char **cmd = argv + i + 1;

    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        die(path);

    if (spawn_each) {
        for (long k = -1; k < n; k++) {   /* k = -1: a warm-up, not shown */
            int p[2];
            if (flock(fd, LOCK_EX) != 0)
                die("flock");
            if (pipe2(p, O_CLOEXEC) != 0)
                die("pipe");
            pid_t pid = start(cmd, -1, p[1]);
            close(p[1]);
            FILE *from = fdopen(p[0], "r");
            sleep_for(hold_min + (hold_max - hold_min) * rng_unit());
            double t0 = now();
            flock(fd, LOCK_UN);
            double t1 = read_stamp(from);
            if (k >= 0)
                printf("%.9f\n", t1 - t0);
            fclose(from);
            waitpid(pid, NULL, 0);
        }
        return 0;
    }

    int to[2], back[2];
    if (pipe2(to, O_CLOEXEC) != 0 || pipe2(back, O_CLOEXEC) != 0)
        die("pipe");
    pid_t pid = start(cmd, to[0], back[1]);
    close(to[0]);
    close(back[1]);
    FILE *from = fdopen(back[0], "r");
    char line[64];
    if (!fgets(line, sizeof line, from) || strncmp(line, "ready", 5) != 0) {
        fprintf(stderr, "harness: the waiter did not start\n");
        return 1;
    }
    for (long k = -1; k < n; k++) {       /* k = -1: a warm-up, not shown */
        if (flock(fd, LOCK_EX) != 0)     /* also waits for the last release */
            die("flock");
        if (write(to[1], "go\n", 3) != 3)
            die("write");
        sleep_for(hold_min + (hold_max - hold_min) * rng_unit());
        double t0 = now();
        flock(fd, LOCK_UN);
        double t1 = read_stamp(from);
        if (k >= 0)
            printf("%.9f\n", t1 - t0);
    }
    close(to[1]);
    fclose(from);
    waitpid(pid, NULL, 0);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, long n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int cmd_spawn(int argc, char **argv)
{
    enum { MAXCMD = 8 };
    char **cmds[MAXCMD];
    int ncmd = 0;
    long n;

    if (argc < 5)
        return 2;
    n = strtol(argv[2], NULL, 10);
    if (n < 1)
        return 2;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--") != 0)
            continue;
        argv[i] = NULL;                    /* ends the previous command */
        if (i + 1 < argc && ncmd < MAXCMD)
            cmds[ncmd++] = argv + i + 1;
    }
    double *secs = calloc((size_t)(n * ncmd), sizeof *secs);
    double *cpus = calloc((size_t)(n * ncmd), sizeof *cpus);
    double *rss = calloc((size_t)(n * ncmd), sizeof *rss);
    if (!secs || !cpus || !rss)
        die("calloc");
    for (long k = 0; k < n; k++)
        for (int c = 0; c < ncmd; c++) {
            struct rusage ru;
            int status;
            double t = now();
            pid_t pid = start(cmds[c], -1, -1);
            if (wait4(pid, &status, 0, &ru) != pid)
                die("wait4");
            secs[c * n + k] = now() - t;
            cpus[c * n + k] = (double)ru.ru_utime.tv_sec +
                              (double)ru.ru_utime.tv_usec / 1e6 +
                              (double)ru.ru_stime.tv_sec +
                              (double)ru.ru_stime.tv_usec / 1e6;
            rss[c * n + k] = (double)ru.ru_maxrss;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "harness: %s failed (status %d)\n",
                        cmds[c][0], status);
                return 1;
            }
        }
    for (int c = 0; c < ncmd; c++) {
        double *s = secs + c * n;
        double med = median(s, n);        /* sorts s: s[0] is the min */
        printf("%.9e %.9e %.9e %.0f\n", med, s[0], median(cpus + c * n, n),
               median(rss + c * n, n));
    }
    return 0;
}

int main(int argc, char **argv)
{
    int r = 2;
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1 && strcmp(argv[1], "handoff") == 0)
        r = cmd_handoff(argc, argv);
    else if (argc > 1 && strcmp(argv[1], "spawn") == 0)
        r = cmd_spawn(argc, argv);
    if (r == 2)
        fprintf(stderr, "usage: harness handoff LOCKFILE N HOLD_MIN_MS "
                "HOLD_MAX_MS SEED [--spawn] -- CMD...\n"
                "       harness spawn N -- CMD1... [-- CMD2...]\n");
    return r;
}
