/*
 * etcd/retry.c -- a request whose answer never came, sent again from a
 * thread of its own until a member answers: a release, a give-up's leave,
 * or the revoke of a lease let go (etcd/lock.c).  Not left undone: the key
 * it is about would otherwise hold the name for nobody as long as this
 * process keeps its lease alive.
 */
#define _GNU_SOURCE
#include "etcd/internal.h"
#include "core/shared.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A release (or a give-up's leave) whose answer never came: retry_main
 * sends it again until a member answers (retry_start says why). */
struct ar_retry {
    pthread_mutex_t mu;
    int             refs;       /* the thread's, and the lock's if it asks */
    int             done;       /* a member answered: the key is gone */
    char            why[ATOMRUN_ERRLEN];   /* the last failure */
    atomrun_etcd   *c;
    const char     *path;       /* "/v3/kv/txn" or "/v3/lease/revoke" */
    json_t         *body;
};

void ar_retry_unref(ar_retry *t)
{
    int left;
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    left = --t->refs;
    pthread_mutex_unlock(&t->mu);
    if (left == 0) {
        pthread_mutex_destroy(&t->mu);
        json_decref(t->body);
        free(t);
    }
}

/* Send t's request until a member answers, pausing more each time (a
 * cluster without quorum should not be hammered).  An answer settles it:
 * the release compares the key's token, so "not succeeded" means the key
 * is gone already; and "lease not found" (a revoke's, or a leave's put of
 * its ticket) means the lease is gone, and its keys with it.  A refusal
 * (permissions changed under us) is tried again too: while none is
 * answered, the key stays. */
static void *retry_main(void *ud)
{
    ar_retry *t = ud;
    double nap = 0.25;
    for (;;) {
        char err[ATOMRUN_ERRLEN] = "";
        json_t *ans = NULL;
        int r = ar_etcd_post(t->c, t->path, t->body, 0, NULL, &ans, err, sizeof err);
        json_decref(ans);
        pthread_mutex_lock(&t->mu);
        t->done = r == 0 || r == -ENOENT;
        if (!t->done)
            ar_strlcpy(t->why, err, sizeof t->why);
        pthread_mutex_unlock(&t->mu);
        if (t->done)
            break;
        ar_sleep(nap);
        if ((nap *= 2) > 5.0)
            nap = 5.0;
    }
    ar_retry_unref(t);
    return NULL;
}

/* Retry body (taken over) on path from a detached thread; why: the first
 * failure.  The retry with a reference for the caller, or NULL (no memory,
 * no thread: nothing retries it). */
static ar_retry *retry_start(atomrun_etcd *c, const char *path, json_t *body,
                             const char *why)
{
    ar_retry *t = body ? calloc(1, sizeof *t) : NULL;
    pthread_attr_t attr;
    pthread_t th;
    int started;
    if (!t) {
        json_decref(body);
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    t->refs = 2;
    t->c = c;
    t->path = path;
    t->body = body;
    ar_strlcpy(t->why, why, sizeof t->why);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    started = pthread_create(&th, &attr, retry_main, t) == 0;
    pthread_attr_destroy(&attr);
    if (!started) {
        t->refs = 1;
        ar_retry_unref(t);
        return NULL;
    }
    return t;
}

/*
 * A txn that had to reach the cluster -- a release, a give-up's leave --
 * got no answer (or was refused): the key it is about may still be there,
 * on a lease this process keeps alive, and would hold the name for nobody
 * for as long as the process lives.  Not left so.  If no other lock uses
 * s, the lease is let go (*let_go 1): its keepalives stop, so its keys go
 * within the TTL even if we never reach the cluster again, and it is
 * revoked as soon as a member answers.  Otherwise the txn itself is sent
 * again until a member answers.  txn taken over; the retry, referenced.
 */
ar_retry *ar_not_answered(atomrun_etcd *c, ar_session *s, json_t *txn, const char *err,
                           const char *why, int *let_go)
{
    char id[32];
    int alone = ar_session_users(s) == 1;
    if (let_go)
        *let_go = alone;
    if (!alone)
        return retry_start(c, "/v3/kv/txn", txn, err);
    json_decref(txn);
    ar_session_abandon(s, why);
    snprintf(id, sizeof id, "%lld", (long long)ar_session_lease(s));
    return retry_start(c, "/v3/lease/revoke", json_pack("{s:s}", "ID", id), err);
}

int ar_retry_done(ar_retry *t, char *why, size_t len)
{
    int done;
    pthread_mutex_lock(&t->mu);
    done = t->done;
    ar_strlcpy(why, t->why, len);
    pthread_mutex_unlock(&t->mu);
    return done;
}
