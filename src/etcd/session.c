/*
 * etcd/session.c -- one etcd lease per process, cluster and TTL, kept alive by a
 * background thread, as clientv3/concurrency's Session does.
 *
 * Every lock of the process on that cluster with that TTL hangs its key on
 * the same lease, so a lock+unlock costs two consensus writes (put, delete)
 * instead of four (grant, put, delete, revoke).  The lease is granted
 * before the first wait and revoked at exit; a process that dies without
 * exiting (SIGKILL) loses its keys when the TTL runs out.
 *
 * Lost, decided locally and never undone:
 *   - a keepalive answer without a TTL: the server no longer has the lease;
 *   - the local deadline passes without a confirmation.  The deadline is
 *     the SEND time of the last confirmed keepalive plus the TTL it
 *     returned, on CLOCK_BOOTTIME.  The server starts its TTL when the
 *     request arrives, after we sent it, so ours runs out first: a holder
 *     reports "lost" no later than the cluster could hand the lock to
 *     someone else.  A process stopped (SIGSTOP) or a host suspended past
 *     that deadline sees "lost" the moment it looks, before any keepalive:
 *     CLOCK_BOOTTIME counts the time asleep, which CLOCK_MONOTONIC does not.
 *     The trap no local clock closes: a virtual machine paused by its
 *     hypervisor with its clocks stopped (QEMU/KVM restore the guest's
 *     clock on resume) sees no time pass at all; it learns of the pause
 *     from the next keepalive's answer (no TTL: lost) up to TTL/3 later.
 *     Only the fencing token protects writes made in that window.
 *
 * The deadline and the lost flag also live in a page mapped MAP_SHARED
 * (ar_lease_view), so that a guard's watchdog -- a forked process that a
 * SIGSTOP of this one does not freeze (etcd/guard.c) -- reads them as they are.
 * Every timed wait here is on a CLOCK_MONOTONIC condition variable
 * (ar_cond_init): a wall clock stepped back must not stall the keepalive.
 */
#define _GNU_SOURCE
#include "etcd/internal.h"
#include "core/internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct ar_session {
    ar_session     *next;          /* the client's list (under smu) */
    atomrun_etcd   *c;
    int             ttl;           /* asked for */
    int64_t         lease;
    pid_t           owner;         /* a forked child must not revoke it */
    int             refs;          /* the list's reference + each user */
    int             users;         /* ar_session_get callers not yet put */
    int             pinned;        /* kept for the process's life (one
                                      reference, however many pins) */

    pthread_mutex_t mu;
    pthread_cond_t  cv;
    double          confirmed_until;   /* ar_boot_now() clock */
    int             lost;
    ar_lease_view  *view;          /* both of them again, for watchdogs */
    char            why[ATOMRUN_ERRLEN];
    volatile int    stop;
    int             running;       /* the keepalive thread (detached) */
};

static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

int64_t ar_session_lease(const ar_session *s) { return s->lease; }
int ar_session_ttl(const ar_session *s) { return s->ttl; }
const ar_lease_view *ar_session_view(const ar_session *s) { return s->view; }

/* Under s->mu (or before the session is shared). */
static void set_confirmed(ar_session *s, double until)
{
    s->confirmed_until = until;
    atomic_store(&s->view->until_ns, (int64_t)(until * 1e9));
}

static void mark_lost(ar_session *s, const char *why)
{
    if (!s->lost) {
        s->lost = 1;
        atomic_store(&s->view->lost, 1);
        ar_strlcpy(s->why, why, sizeof s->why);
    }
}

/* Under s->mu. */
static int check_lost(ar_session *s)
{
    if (!s->lost && ar_boot_now() > s->confirmed_until) {
        char why[ATOMRUN_ERRLEN];
        snprintf(why, sizeof why, "lease %llx: no keepalive was confirmed within "
                 "its %d s TTL", (unsigned long long)s->lease, s->ttl);
        mark_lost(s, why);
    }
    return s->lost;
}

int ar_session_lost(ar_session *s, char *why, size_t len)
{
    int lost;
    pthread_mutex_lock(&s->mu);
    lost = check_lost(s);
    if (lost && why)
        ar_strlcpy(why, s->why, len);
    pthread_mutex_unlock(&s->mu);
    return lost ? ATOMRUN_ELOST : 0;
}

static void session_free(ar_session *s)
{
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    if (s->view)
        munmap(s->view, sizeof *s->view);
    free(s);
}

/* References: the client's list, each lock using it, and the keepalive
 * thread; whoever drops the last one frees it. */
void ar_session_unref(ar_session *s)
{
    pthread_mutex_t *smu;
    int left;
    if (!s)
        return;
    smu = ar_etcd_session_mutex(s->c);
    pthread_mutex_lock(smu);
    left = --s->refs;
    pthread_mutex_unlock(smu);
    if (left == 0)
        session_free(s);
}

int ar_session_put(ar_session *s)
{
    pthread_mutex_t *smu;
    int left;
    if (!s)
        return 0;
    smu = ar_etcd_session_mutex(s->c);
    pthread_mutex_lock(smu);
    left = --s->users;
    pthread_mutex_unlock(smu);
    ar_session_unref(s);
    return left;
}

void ar_session_pin(ar_session *s)
{
    pthread_mutex_t *smu = ar_etcd_session_mutex(s->c);
    int again;
    pthread_mutex_lock(smu);
    again = s->pinned;
    s->pinned = 1;
    if (again) {                /* the pin holds one already: this one back */
        s->users--;
        s->refs--;
    }
    pthread_mutex_unlock(smu);
}

int ar_session_users(ar_session *s)
{
    pthread_mutex_t *smu = ar_etcd_session_mutex(s->c);
    int n;
    pthread_mutex_lock(smu);
    n = s->users;
    pthread_mutex_unlock(smu);
    return n;
}

/* Take s off the client's list (a lost session is not handed out again),
 * dropping the list's reference. */
static void unlist(ar_session *s)
{
    pthread_mutex_t *smu = ar_etcd_session_mutex(s->c);
    ar_session **pp;
    int listed = 0;
    pthread_mutex_lock(smu);
    for (pp = ar_etcd_sessions(s->c); *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            listed = 1;
            break;
        }
    }
    pthread_mutex_unlock(smu);
    if (listed)
        ar_session_unref(s);
}

void ar_session_abandon(ar_session *s, const char *why)
{
    pthread_mutex_lock(&s->mu);
    mark_lost(s, why);
    pthread_cond_broadcast(&s->cv);     /* the keepalive thread ends */
    pthread_mutex_unlock(&s->mu);
    unlist(s);
}

/* --------------------------------------------------------- keepalive */

/* {"ID": "<lease>"}: the body of keepalive and revoke (int64 as a string,
 * as the gateway prints it). */
static json_t *lease_body(int64_t lease)
{
    char id[32];
    snprintf(id, sizeof id, "%lld", (long long)lease);
    return json_pack("{s:s}", "ID", id);
}

/* Best effort: a lease we could not revoke goes a TTL later anyway. */
static void revoke_lease(atomrun_etcd *c, int64_t lease, double deadline)
{
    json_t *ans = NULL;
    char err[ATOMRUN_ERRLEN];
    if (ar_etcd_send(c, "/v3/lease/revoke", lease_body(lease), deadline, NULL, &ans,
                     err, sizeof err) == 0)
        json_decref(ans);
}

static int keepalive_once(ar_session *s, double *sent, int64_t *ttl,
                          char *err, size_t errlen)
{
    json_t *ans = NULL;
    ar_post_opts po = { &s->stop, 0, 1 };
    double deadline;
    int r;

    pthread_mutex_lock(&s->mu);
    deadline = s->confirmed_until;
    pthread_mutex_unlock(&s->mu);
    *sent = ar_boot_now();
    /* Worth trying until the lease could have run out; the request's own
     * deadline is on ar_now()'s clock. */
    deadline = ar_now() + (deadline - *sent);
    /* One try per endpoint may take up to a third of the TTL, so that a
     * stopped member is left in time for the others. */
    po.attempt_cap = s->ttl / 3.0 < 2.0 ? s->ttl / 3.0 : 2.0;
    r = ar_etcd_send(s->c, "/v3/lease/keepalive", lease_body(s->lease), deadline, &po,
                     &ans, err, errlen);
    if (r < 0)
        return r;
    *ttl = ar_json_int64(ans, "TTL");
    json_decref(ans);
    return 0;
}

static void *keepalive_main(void *ud)
{
    ar_session *s = ud;
    /* On the lost rule's clock: after a suspend the next keepalive is due
     * at once (and finds the lease lost if it was asleep too long). */
    double next = ar_boot_now() + s->ttl / 3.0;

    for (;;) {
        char err[ATOMRUN_ERRLEN] = "", why[ATOMRUN_ERRLEN];
        double sent = 0;
        int64_t ttl = 0;
        int r;

        pthread_mutex_lock(&s->mu);
        while (!s->stop && ar_boot_now() < next)
            ar_cond_wait_for(&s->cv, &s->mu, next - ar_boot_now());
        if (s->stop || check_lost(s)) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        pthread_mutex_unlock(&s->mu);

        r = keepalive_once(s, &sent, &ttl, err, sizeof err);
        if (r == -ECANCELED)
            break;
        pthread_mutex_lock(&s->mu);
        if (r == 0 && ttl <= 0) {
            snprintf(why, sizeof why, "lease %llx expired: the cluster answered the "
                     "keepalive without a TTL", (unsigned long long)s->lease);
            mark_lost(s, why);
        } else if (r == 0) {
            /* Too late is too late, even if the server was lenient: someone
             * may already have been told the lock is free. */
            if (!check_lost(s))
                set_confirmed(s, sent + (double)ttl);
            next = sent + s->ttl / 3.0;
        } else if (r == ATOMRUN_EUNAVAILABLE || ar_boot_now() >= s->confirmed_until) {
            snprintf(why, sizeof why, "lease %llx: no keepalive was confirmed within "
                     "its %d s TTL (%.150s)", (unsigned long long)s->lease, s->ttl, err);
            mark_lost(s, why);
        } else {
            next = ar_boot_now() + 0.2;   /* an odd answer: try again soon */
        }
        r = s->lost;
        pthread_mutex_unlock(&s->mu);
        if (r)
            break;
    }
    pthread_mutex_lock(&s->mu);
    s->running = 0;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->lost)
        unlist(s);
    ar_session_unref(s);        /* the thread's own */
    return NULL;
}

/* ------------------------------------------------------------ exit */

static void lease_revoke(ar_session *s, double deadline)
{
    revoke_lease(s->c, s->lease, deadline);
}

/*
 * At exit: stop each keepalive thread (a call in progress is abandoned
 * through the abort flag) and revoke the lease, so that the keys of this
 * process go now rather than a TTL later.  Only the process that was
 * granted the lease does this: a forked child calling exit() must not
 * revoke its parent's locks.
 */
static void at_exit(void)
{
    ar_session **mine = NULL, **more;
    size_t n = 0, room = 0, i;
    atomrun_etcd *c;
    pid_t me = getpid();

    /* Collect first (with a reference each), then wait without the list
     * lock: a thread that is just now losing its lease takes it to unlist.
     * Every session, however many (a process holding 200 semaphore slots
     * on as many leases): one the list had no room for would keep its keys
     * a TTL after we are gone.  Out of memory, those collected are revoked
     * and the rest expire with their TTL. */
    for (c = ar_etcd_first(); c; c = ar_etcd_next(c)) {
        pthread_mutex_t *smu = ar_etcd_session_mutex(c);
        ar_session *s;
        pthread_mutex_lock(smu);
        for (s = *ar_etcd_sessions(c); s; s = s->next) {
            if (s->owner != me)
                continue;
            if (n == room) {
                more = realloc(mine, sizeof *mine * (room = room * 2 + 16));
                if (!more)
                    break;
                mine = more;
            }
            s->refs++;
            mine[n++] = s;
        }
        pthread_mutex_unlock(smu);
    }
    for (i = 0; i < n; i++) {
        pthread_mutex_lock(&mine[i]->mu);
        mine[i]->stop = 1;
        pthread_cond_broadcast(&mine[i]->cv);
        pthread_mutex_unlock(&mine[i]->mu);
    }
    /* One deadline for all of them: a cluster that does not answer must
     * not hold the exit up a second per session. */
    double until = ar_now() + 1.5, end = until + 5.0;
    for (i = 0; i < n; i++) {
        ar_session *s = mine[i];
        int lost;
        pthread_mutex_lock(&s->mu);
        while (s->running && ar_now() < until)
            ar_cond_wait_for(&s->cv, &s->mu, until - ar_now());
        lost = s->lost;
        pthread_mutex_unlock(&s->mu);
        if (!lost && ar_now() < end)
            lease_revoke(s, ar_now() + 1.0 < end ? ar_now() + 1.0
                                                      : end);
        /* The reference is not dropped: a thread still running (a stuck
         * call) may use s until the process is gone. */
    }
    free(mine);
}

static void register_exit(void)
{
    Dl_info self;
    /* Loaded as a Lua C module (atomrun/core.so in stock lua5.4), this code
     * is unmapped by lua_close's dlclose -- while a keepalive thread still
     * runs in it, and with at_exit (atexit from a shared object runs at its
     * dlclose) waiting on it.  Pin the object: RTLD_NODELETE keeps it
     * mapped until the process ends.  In the atomrun binary this finds the
     * executable and changes nothing. */
    if (dladdr((void *)at_exit, &self) && self.dli_fname)
        dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    atexit(at_exit);
}

/* ------------------------------------------------------------ grant */

static int grant(atomrun_etcd *c, int ttl, double deadline, int64_t *lease,
                 double *confirmed_until, int *min_ttl, char *err, size_t errlen)
{
    json_t *body = json_pack("{s:I}", "TTL", (json_int_t)ttl), *ans = NULL;
    double sent = ar_boot_now();
    int64_t got;
    int r;
    r = ar_etcd_send(c, "/v3/lease/grant", body, deadline, NULL, &ans, err, errlen);
    if (r < 0)
        return r;
    *lease = ar_json_int64(ans, "ID");
    got = ar_json_int64(ans, "TTL");
    json_decref(ans);
    if (*lease == 0 || got <= 0) {
        snprintf(err, errlen, "lease grant on %s answered without an ID or TTL",
                 atomrun_etcd_endpoints(c));
        return -EPROTO;
    }
    /* etcd silently raises a TTL below its minimum (1.5 election timeouts,
     * rounded up to seconds): the caller asked for something else. */
    if (got > ttl) {
        revoke_lease(c, *lease, deadline);
        *min_ttl = (int)got;
        snprintf(err, errlen, "ttl %d is below the cluster's minimum lease TTL "
                 "of %d s", ttl, (int)got);
        return -ERANGE;
    }
    *confirmed_until = sent + (double)got;
    return 0;
}

int ar_session_get(atomrun_etcd *c, int ttl, double deadline,
                   ar_session **out, int *min_ttl, char *err, size_t errlen)
{
    pthread_mutex_t *smu = ar_etcd_session_mutex(c);
    ar_session *s;
    pthread_attr_t attr;
    pthread_t th;
    int r, started;

    *out = NULL;
    pthread_mutex_lock(smu);
    for (s = *ar_etcd_sessions(c); s; s = s->next) {
        if (s->ttl == ttl && s->owner == getpid() && ar_session_lost(s, NULL, 0) == 0) {
            s->refs++;
            s->users++;
            pthread_mutex_unlock(smu);
            *out = s;
            return 0;
        }
    }
    pthread_mutex_unlock(smu);

    s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->c = c;
    s->ttl = ttl;
    s->owner = getpid();
    pthread_mutex_init(&s->mu, NULL);
    if ((r = ar_cond_init(&s->cv)) < 0) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return r;
    }
    s->view = mmap(NULL, sizeof *s->view, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s->view == MAP_FAILED) {
        s->view = NULL;
        session_free(s);
        return -ENOMEM;
    }
    r = grant(c, ttl, deadline, &s->lease, &s->confirmed_until, min_ttl, err, errlen);
    if (r < 0) {
        session_free(s);
        return r;
    }
    set_confirmed(s, s->confirmed_until);
    pthread_once(&exit_once, register_exit);
    s->refs = 3;                /* the list's, the caller's, the thread's */
    s->users = 1;
    s->running = 1;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(smu);
    s->next = *ar_etcd_sessions(c);
    *ar_etcd_sessions(c) = s;
    started = pthread_create(&th, &attr, keepalive_main, s) == 0;
    pthread_mutex_unlock(smu);
    pthread_attr_destroy(&attr);
    if (!started) {
        s->running = 0;
        unlist(s);
        lease_revoke(s, deadline);
        ar_session_unref(s);    /* the thread's, never started */
        ar_session_unref(s);
        snprintf(err, errlen, "could not start the keepalive thread");
        return -EAGAIN;
    }
    *out = s;
    return 0;
}

int atomrun_etcd_session_lease(atomrun_etcd *c, int ttl, double timeout,
                               int64_t *lease, int *min_ttl, atomrun_err *e)
{
    double deadline = ar_deadline_in(timeout);
    atomrun_err own;
    char *err = ar_err_start(e, &own)->msg;
    ar_session *s;
    int r, least = 0;
    *lease = 0;
    r = ar_session_get(c, ttl, deadline, &s, &least, err, sizeof own.msg);
    if (min_ttl)
        *min_ttl = least;
    if (r < 0)
        return r;
    /* Kept for the life of the process, as a ttl-bound put's session is:
     * its keys must live as long as the process. */
    ar_session_pin(s);
    *lease = ar_session_lease(s);
    return 0;
}
