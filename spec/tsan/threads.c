/*
 * spec/tsan/threads.c -- the core and the binding from eight threads at
 * once, built with -fsanitize=thread (make check-tsan).
 *
 * The main thread holds an exclusive flock on F for the whole run.  Eight
 * threads -- four calling the core directly, four each running its own
 * lua_State (atomrun_newstate + luaL_dostring) -- concurrently:
 *   - wait for F with a deadline of their own, which must fire in that
 *     thread: the wait ends with "timeout", never before its deadline, and
 *     does end (a timer signal sent to another thread would leave it
 *     waiting for a lock the main thread never releases);
 *   - take and release a lock G they all contend for, with a generous
 *     deadline; an atomic counter checks that the flock really excludes
 *     (ThreadSanitizer cannot see flock, so nothing else is shared);
 *   - take byte ranges (their own byte, and one byte they all contend for);
 *   - replace and create files.
 * One thread blocks every signal first, as host worker threads often do.
 * ThreadSanitizer reports any data race in atomrun (timer-signal choice,
 * OFD fallback flag, per-state registries); this program reports wrong
 * results.  Exit 0 on success.
 */
#define _GNU_SOURCE
#include "atomrun.h"

#include <time.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

/* CLOCK_MONOTONIC seconds, the clock atomrun's own deadlines run on. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

#define NTHREADS 8
#define NLUA 4
#define ITER 15
/* A hang detector, not a speed limit: far beyond any scheduling delay. */
#define HANG_S 20.0

static atomic_int failures;
static atomic_int g_inside, g_entries;
static atomic_int shared_inside, shared_entries, shared_busy;
static atomic_int timeouts;
static char dir[64], path_f[128], path_g[128], path_r[128];

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            flockfile(stderr);                                             \
            fprintf(stderr, "tsan_threads: FAILED (line %d): ", __LINE__); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
            funlockfile(stderr);                                           \
            atomic_fetch_add(&failures, 1);                                \
        }                                                                  \
    } while (0)

static double timeout_of(int id)
{
    return 0.004 * (id + 1);
}

/* ------------------------------------------------------------ core threads */

static void core_thread(int id)
{
    char mine[160];
    atomrun_write_opts wo;
    int rfd = atomrun_lockfile_open(path_r, 1, 0666, ATOMRUN_NOFOLLOW, NULL);

    CHECK(rfd >= 0, "thread %d: open %s: %d", id, path_r, rfd);
    snprintf(mine, sizeof mine, "%s/core%d", dir, id);
    for (int i = 0; i < ITER; i++) {
        /* 1. a deadline of our own on F, which main holds */
        double t = timeout_of(id), t0, dt;
        int fd = atomrun_lockfile_open(path_f, 1, 0666, ATOMRUN_NOFOLLOW, NULL), r;
        CHECK(fd >= 0, "thread %d: open F: %d", id, fd);
        t0 = now_s();
        r = atomrun_flock(fd, ATOMRUN_EXCLUSIVE, t);
        dt = now_s() - t0;
        CHECK(r == ATOMRUN_ETIMEOUT, "thread %d: flock(F, %.3f) = %d (%s)", id, t, r,
              atomrun_err_name(r));
        CHECK(dt >= t, "thread %d: timed out after %.4f s, before its %.4f s", id, dt, t);
        CHECK(dt < t + HANG_S, "thread %d: waited %.1f s for a %.3f s deadline", id, dt, t);
        if (r == ATOMRUN_ETIMEOUT)
            atomic_fetch_add(&timeouts, 1);
        close(fd);

        /* 2. G, contended by everybody: the flock must exclude */
        fd = atomrun_lockfile_open(path_g, 1, 0666, ATOMRUN_NOFOLLOW, NULL);
        r = atomrun_flock(fd, ATOMRUN_EXCLUSIVE, HANG_S);
        CHECK(r == 0, "thread %d: flock(G) = %d (%s)", id, r, atomrun_err_name(r));
        if (r == 0) {
            int in = atomic_fetch_add(&g_inside, 1);
            CHECK(in == 0, "thread %d: %d others inside G with us", id, in);
            atomic_fetch_add(&g_entries, 1);
            usleep(200);
            atomic_fetch_sub(&g_inside, 1);
            CHECK(atomrun_funlock(fd) == 0, "thread %d: funlock", id);
        }
        close(fd);

        /* 3. ranges: our own byte never conflicts; byte 100 is shared */
        r = atomrun_range_lock(rfd, ATOMRUN_EXCLUSIVE, id, 1, 0);
        CHECK(r == 0, "thread %d: own byte: %d (%s)", id, r, atomrun_err_name(r));
        if (r == 0)
            atomrun_range_unlock(rfd, id, 1);
        /* All core threads share rfd's description and so the OFD lock owner:
         * each opens its own description for the contended byte. */
        fd = atomrun_lockfile_open(path_r, 1, 0666, ATOMRUN_NOFOLLOW, NULL);
        r = atomrun_range_lock(fd, ATOMRUN_EXCLUSIVE, 100, 1, 0.0005);
        if (r == 0) {
            int in = atomic_fetch_add(&shared_inside, 1);
            CHECK(in == 0, "thread %d: %d others inside byte 100", id, in);
            atomic_fetch_add(&shared_entries, 1);
            usleep(1000);
            atomic_fetch_sub(&shared_inside, 1);
            atomrun_range_unlock(fd, 100, 1);
        } else {
            CHECK(r == ATOMRUN_ETIMEOUT || r == ATOMRUN_EBUSY, "thread %d: byte 100: %d (%s)", id, r,
                  atomrun_err_name(r));
            atomic_fetch_add(&shared_busy, 1);
        }
        close(fd);

        /* 4. files */
        atomrun_write_opts_init(&wo);
        wo.durable = i % 4 == 0;
        r = atomrun_replace(mine, "abc", 3, &wo, NULL);
        CHECK(r == 0, "thread %d: replace: %s", id, atomrun_err_name(r));
        atomrun_write_opts_init(&wo);
        r = atomrun_create(mine, "x", 1, &wo, NULL);
        CHECK(r == -EEXIST, "thread %d: create over an existing file: %s", id,
              atomrun_err_name(r));
    }
    close(rfd);
}

/* ------------------------------------------------------------- Lua threads */

static const char lua_job[] =
    "local F, G, R, D, id, t = ...\n"
    "for i = 1, 15 do\n"
    "  local t0 = atomrun.now()\n"
    "  local lk, err, code = atomrun.lock(F, { timeout = t })\n"
    "  local dt = atomrun.now() - t0\n"
    "  assert(not lk and code == 'timeout', 'F: ' .. tostring(code))\n"
    "  assert(dt >= t, ('timed out after %.4f s, before %.4f s'):format(dt, t))\n"
    "  local g <close> = assert(atomrun.lock(G, { timeout = 20 }))\n"
    "  g:unlock()\n"
    "  local f <close> = assert(atomrun.open(R))\n"
    "  local r = assert(f:lock(50 + id, 1))\n"
    "  r:unlock()\n"
    "  assert(atomrun.replace(D .. '/lua' .. id, 'v' .. i, { durable = false }))\n"
    "  assert(atomrun.update(D .. '/lua-counter', function(o)\n"
    "    return tostring((tonumber(o) or 0) + 1) end, { durable = false }))\n"
    "end\n"
    "return true\n";

static void lua_thread(int id)
{
    lua_State *L = atomrun_newstate();
    CHECK(L != NULL, "thread %d: atomrun_newstate", id);
    if (!L)
        return;
    if (luaL_loadbuffer(L, lua_job, sizeof lua_job - 1, "=tsan_job") != LUA_OK) {
        CHECK(0, "thread %d: %s", id, lua_tostring(L, -1));
    } else {
        lua_pushstring(L, path_f);
        lua_pushstring(L, path_g);
        lua_pushstring(L, path_r);
        lua_pushstring(L, dir);
        lua_pushinteger(L, id);
        lua_pushnumber(L, timeout_of(id));
        if (lua_pcall(L, 6, 1, 0) != LUA_OK)
            CHECK(0, "thread %d: %s", id, lua_tostring(L, -1));
        else
            atomic_fetch_add(&timeouts, ITER);
    }
    lua_close(L);
}

static void *thread_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    if (id == NTHREADS - 1) {
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);   /* a host worker thread */
    }
    if (id < NLUA)
        lua_thread(id);
    else
        core_thread(id);
    return NULL;
}

int main(void)
{
    pthread_t th[NTHREADS];
    int fd, r;
    char cmd[200];

    snprintf(dir, sizeof dir, "/tmp/atomrun-tsan.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path_f, sizeof path_f, "%s/F", dir);
    snprintf(path_g, sizeof path_g, "%s/G", dir);
    snprintf(path_r, sizeof path_r, "%s/R", dir);

    fd = atomrun_lockfile_open(path_f, 1, 0666, ATOMRUN_NOFOLLOW, NULL);
    r = fd < 0 ? fd : atomrun_flock(fd, ATOMRUN_EXCLUSIVE, 0);
    CHECK(r == 0, "main: lock F: %s", atomrun_err_name(r));

    for (int i = 0; i < NTHREADS; i++)
        if (pthread_create(&th[i], NULL, thread_main, (void *)(intptr_t)i) != 0) {
            fprintf(stderr, "tsan_threads: pthread_create failed\n");
            return 1;
        }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    close(fd);

    CHECK(atomic_load(&timeouts) == NTHREADS * ITER, "%d deadlines fired, expected %d",
          atomic_load(&timeouts), NTHREADS * ITER);
    CHECK(atomic_load(&g_entries) == (NTHREADS - NLUA) * ITER, "G taken %d times",
          atomic_load(&g_entries));
    {
        char *data = NULL;
        size_t len = 0;
        r = atomrun_read(path_g, &data, &len);   /* G exists, empty */
        CHECK(r == 0 && len == 0, "read G: %s", atomrun_err_name(r));
        free(data);
        snprintf(cmd, sizeof cmd, "%s/lua-counter", dir);
        r = atomrun_read(cmd, &data, &len);
        CHECK(r == 0 && data && atoi(data) == NLUA * ITER,
              "the Lua threads' update counter is %s, expected %d", data ? data : "?",
              NLUA * ITER);
        free(data);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "tsan_threads: could not remove %s\n", dir);
    if (atomic_load(&failures)) {
        fprintf(stderr, "tsan_threads: %d failures\n", atomic_load(&failures));
        return 1;
    }
    printf("tsan_threads: ok (%d threads, %d deadlines each in its own thread, "
           "G taken %d times exclusively, byte 100 %d taken / %d timed out; "
           "timer signal %d)\n", NTHREADS, atomic_load(&timeouts),
           atomic_load(&g_entries), atomic_load(&shared_entries),
           atomic_load(&shared_busy), atomrun_timer_signal());
    return 0;
}
