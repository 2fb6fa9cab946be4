/*
 * timer_reuse.c -- the deadline timer is made once per thread and goes
 * with the thread.
 *
 * Uses only the public header.  The lock is held through one descriptor of
 * this process; every wait is on another descriptor (flock locks belong to
 * the open file description, so the two conflict) and times out.
 *   - 30 timed waits in the main thread leave one kernel timer, not 30
 *     (/proc/self/timers lists them);
 *   - 6 threads that each waited and exited leave no timer behind;
 *   - a fork()ed child, which inherits the variable that names the
 *     parent's timer but not the timer, still times out at its deadline.
 *
 * Exit 0 on success; otherwise print each failure and exit 1.
 */
#define _GNU_SOURCE
#include "atomrun.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NTHREADS 6
#define LATE_OK 1.5         /* generous: a loaded machine under ASan */

#define TEST_NAME "timer_reuse"
#include "check.h"

static char path[64];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* How many POSIX timers this process has; -1 if the kernel cannot say. */
static int timer_count(void)
{
    FILE *f = fopen("/proc/self/timers", "r");
    char line[128];
    int n = 0;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "ID:", 3) == 0)
            n++;
    fclose(f);
    return n;
}

/* One wait on a fresh descriptor that must time out after `timeout`. */
static int timed_out_wait(double timeout, double *took)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    double t0 = now();
    int r;
    if (fd < 0)
        return -1;
    r = atomrun_flock(fd, ATOMRUN_EXCLUSIVE, timeout);
    *took = now() - t0;
    close(fd);
    return r;
}

static void *thread_main(void *arg)
{
    double took;
    int *result = arg;
    *result = timed_out_wait(0.05, &took);
    return NULL;
}

int main(void)
{
    int holder, base, n, status;
    double took;
    pthread_t th[NTHREADS];
    int results[NTHREADS];
    pid_t pid;

    snprintf(path, sizeof path, "/tmp/atomrun-timer-reuse.%ld", (long)getpid());
    holder = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (holder < 0 || flock(holder, LOCK_EX) != 0) {
        perror(path);
        return 1;
    }
    base = timer_count();
    if (base < 0) {
        printf("timer_reuse: skipped (no /proc/self/timers)\n");
        unlink(path);
        return 0;
    }

    for (int i = 0; i < 30; i++) {
        int r = timed_out_wait(0.01, &took);
        CHECK(r == ATOMRUN_ETIMEOUT, "wait %d returned %d", i, r);
        CHECK(took >= 0.01 && took < 0.01 + LATE_OK, "wait %d took %.3f s", i, took);
    }
    n = timer_count();
    CHECK(n == base + 1, "%d timers after 30 waits in one thread (want %d)", n, base + 1);

    for (int i = 0; i < NTHREADS; i++)
        pthread_create(&th[i], NULL, thread_main, &results[i]);
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK(results[i] == ATOMRUN_ETIMEOUT, "thread %d returned %d", i, results[i]);
    }
    n = timer_count();
    CHECK(n == base + 1, "%d timers after %d threads exited (want %d)", n, NTHREADS, base + 1);

    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        int r = timed_out_wait(0.2, &took);
        if (r != ATOMRUN_ETIMEOUT || took < 0.2 || took > 0.2 + LATE_OK) {
            fprintf(stderr, "timer_reuse: FAILED: in a fork child: %d after %.3f s\n", r, took);
            _exit(1);
        }
        _exit(0);
    }
    CHECK(pid > 0, "fork failed");
    if (pid > 0) {
        CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the fork child's timed wait failed (status %d)", status);
    }

    close(holder);
    unlink(path);
    if (failures)
        return 1;
    printf("timer_reuse: ok (one timer for 30 waits, none left by %d threads, fork child timed out)\n",
           NTHREADS);
    return 0;
}
