/*
 * etcd/kv.c -- reading and writing etcd keys: the ground the file calls of
 * issue 16 (create, replace, read, update, status on etcd names) stand on.
 *
 * Every write is one txn whose compares carry the caller's conditions, so a
 * condition and the write it guards can never be split by another writer:
 *   create_only   the key's create revision is 0 (it does not exist)
 *   if_mod_rev    the key's mod revision is still the one read (optimistic
 *                 read-modify-write: no lost update without a lock)
 *   fence         the lock's key still exists with the lock's token: a
 *                 holder whose lease ran out (stopped, cut off) cannot
 *                 overwrite the work of the next holder, however late its
 *                 write arrives -- the fencing token checked by etcd itself
 * On failure the same txn reads the key and the lock's key back, so the
 * caller learns which condition failed without a second round trip.
 *
 * A create_only write also puts a creator record, atomrun/creator/KEY (who:
 * host, pid, command, time), in its success branch, and its failure branch
 * reads it back: "exists" then names who created the key and when.  The
 * record is trusted only when its mod revision is the key's create
 * revision -- the same txn wrote both -- so a key deleted and made again by
 * someone else (etcdctl, a replace) is never blamed on the first creator.
 * It shares the key's lease, so a ttl-bound claim takes its record along.
 */
#define _GNU_SOURCE
#include "etcd/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void atomrun_etcd_put_opts_init(atomrun_etcd_put_opts *o)
{
    memset(o, 0, sizeof *o);
}

static void kv_of(const atomrun_etcd_kv *kv, atomrun_etcd_kv_meta *out)
{
    out->create_rev = kv->create_rev;
    out->mod_rev = kv->mod_rev;
    out->version = kv->version;
    out->lease = kv->lease;
}

int atomrun_etcd_get(atomrun_etcd *c, const char *key, char **data,
                     size_t *len, atomrun_etcd_kv_meta *kv, double timeout,
                     atomrun_err *e)
{
    double deadline = ar_deadline_in(timeout);
    atomrun_err own;
    char *err = ar_err_start(e, &own)->msg;
    size_t errlen = sizeof own.msg;
    atomrun_etcd_txn_result *res;
    atomrun_etcd_op get;
    int r;

    *data = NULL;
    *len = 0;
    if (kv)
        memset(kv, 0, sizeof *kv);
    if (!key || !*key) {
        snprintf(err, errlen, "empty etcd key");
        return -EINVAL;
    }
    get = ar_op_get(key);
    if ((r = ar_etcd_range(c, &get, deadline, &res, err, errlen)) < 0)
        return r;
    if (!ar_txn_kv(res, 0)) {
        atomrun_etcd_txn_free(res);
        snprintf(err, errlen, "%s: no such key", key);
        return -ENOENT;
    }
    if (kv)
        kv_of(ar_txn_kv(res, 0), kv);
    /* the value's buffer is taken over: malloc'd and NUL-terminated */
    *data = res->ops[0].kvs[0].value;
    *len = res->ops[0].kvs[0].valuelen;
    res->ops[0].kvs[0].value = NULL;
    atomrun_etcd_txn_free(res);
    return 0;
}

#define AR_CREATOR_PREFIX ATOMRUN_ETCD_CREATOR_PREFIX

/* A put's txn, described for etcd/txn.c: at most three compares (absent,
 * unchanged, the fence's key), the put and the creator record's, and the
 * reads of the failure side (the key, the fence's key, the record). */
typedef struct put_txn {
    atomrun_etcd_cmp cmp[3];
    atomrun_etcd_op  then[2], otherwise[3];
    size_t           ncmp, nthen, nelse;
    char            *ckey, *crec;       /* the creator record's key and text */
} put_txn;

/* The creator record's put (success) and read (failure, last), on the
 * key's lease (0: none). */
static int add_creator_record(put_txn *t, const char *key, int64_t lease)
{
    size_t klen = strlen(key);
    t->ckey = malloc(sizeof AR_CREATOR_PREFIX + klen);
    t->crec = ar_writer_record(NULL, NULL, 0);
    if (!t->ckey || !t->crec)
        return -ENOMEM;
    memcpy(t->ckey, AR_CREATOR_PREFIX, sizeof AR_CREATOR_PREFIX - 1);
    memcpy(t->ckey + sizeof AR_CREATOR_PREFIX - 1, key, klen + 1);
    t->then[t->nthen++] = ar_op_put(t->ckey, t->crec, strlen(t->crec), lease);
    t->otherwise[t->nelse++] = ar_op_get(t->ckey);
    return 0;
}

static void put_txn_free(put_txn *t)
{
    free(t->ckey);
    free(t->crec);
}

/* Who created the existing key, from its creator record's kv (or NULL). */
static void creator_of(const atomrun_etcd_kv *rec_kv, const atomrun_etcd_kv_meta *existing,
                       atomrun_etcd_holder *h)
{
    json_t *rec;

    h->token = existing->create_rev;
    h->lease = existing->lease;
    /* Written by the txn that made this key, or it describes another one. */
    if (!rec_kv || rec_kv->mod_rev != existing->create_rev)
        return;
    rec = json_loadb(rec_kv->value, rec_kv->valuelen, 0, NULL);
    ar_writer_of(rec, h);
    json_decref(rec);
}

/* put's txn: the put under o's conditions (absent, unchanged, the fence
 * lock's key still of its token); the failure side reads the key and the
 * fence key back, to say which condition failed. */
static int put_txn_init(put_txn *t, const char *key, const void *data, size_t len,
                        const atomrun_etcd_put_opts *o, const char *lkey, int64_t lease)
{
    memset(t, 0, sizeof *t);
    if (o->create_only)
        t->cmp[t->ncmp++] = ar_cmp_equal(key, ATOMRUN_ETCD_CREATE, 0);
    if (o->if_mod_rev > 0)
        t->cmp[t->ncmp++] = ar_cmp_equal(key, ATOMRUN_ETCD_MOD, o->if_mod_rev);
    if (lkey)
        t->cmp[t->ncmp++] = ar_cmp_equal(lkey, ATOMRUN_ETCD_CREATE,
                                         atomrun_etcd_lock_token(o->fence));
    t->then[t->nthen++] = ar_op_put(key, data, len, lease);
    t->otherwise[t->nelse++] = ar_op_get(key);
    if (lkey)
        t->otherwise[t->nelse++] = ar_op_get(lkey);
    return o->create_only ? add_creator_record(t, key, lease) : 0;
}

/* Which condition of a failed put's txn failed?  The fence first: a lost
 * lock is the news. */
static int why_not_put(const atomrun_etcd_txn_result *res, const char *key, const char *lkey,
                       const atomrun_etcd_put_opts *o, atomrun_etcd_put_result *out,
                       char *err, size_t errlen)
{
    const atomrun_etcd_kv *mine = ar_txn_kv(res, 0), *lk = lkey ? ar_txn_kv(res, 1) : NULL;
    if (mine)
        kv_of(mine, &out->existing);
    if (lkey && (!lk || lk->create_rev != atomrun_etcd_lock_token(o->fence))) {
        snprintf(err, errlen, "not written: the lock %s is no longer held with token "
                 "%lld (its lease expired or it was broken)", lkey,
                 (long long)atomrun_etcd_lock_token(o->fence));
        return ATOMRUN_ELOST;
    }
    if (o->create_only && mine) {
        creator_of(ar_txn_kv(res, lkey ? 2 : 1), &out->existing, &out->creator);
        snprintf(err, errlen, "%s exists (created at revision %lld)", key,
                 (long long)out->existing.create_rev);
        return -EEXIST;
    }
    snprintf(err, errlen, "%s changed since revision %lld (now %lld)", key,
             (long long)o->if_mod_rev, (long long)out->existing.mod_rev);
    return -ESTALE;
}

int atomrun_etcd_put(atomrun_etcd *c, const char *key, const void *data,
                     size_t len, const atomrun_etcd_put_opts *o,
                     atomrun_etcd_put_result *out, double timeout, atomrun_err *e)
{
    double deadline = ar_deadline_in(timeout);
    atomrun_etcd_txn_result *res;
    atomrun_etcd_put_result own_out;
    atomrun_err own, why;
    char *err = ar_err_start(e, &own)->msg;
    size_t errlen = sizeof own.msg;
    const char *lkey = NULL;
    ar_session *s = NULL;
    put_txn t;
    int r;

    if (!out)
        out = &own_out;
    memset(out, 0, sizeof *out);
    if (!key || !*key) {
        snprintf(err, errlen, "empty etcd key");
        return -EINVAL;
    }
    if (o->fence) {
        /* Known lost here already: do not even ask. */
        if (atomrun_etcd_lock_lost(o->fence, &why) < 0) {
            ar_seterr(err, errlen, "not written: %s", why.msg);
            return ATOMRUN_ELOST;
        }
        lkey = ar_etcd_lockinfo(o->fence).key;
    }
    if (o->ttl > 0) {
        int min_ttl = 0;
        /* The write's lease is the process's session: kept alive while the
         * process runs, gone a TTL after it dies; pinned for the life of
         * the process, like the key. */
        r = ar_session_get(c, o->ttl, deadline, &s, &min_ttl, err, errlen);
        if (r < 0)
            return r;
        ar_session_pin(s);
    }
    r = put_txn_init(&t, key, data, len, o, lkey, s ? ar_session_lease(s) : 0);
    if (r == 0)
        r = ar_etcd_txn_at(c, t.cmp, t.ncmp, t.then, t.nthen, t.otherwise, t.nelse, deadline,
                           NULL, &res, err, errlen);
    put_txn_free(&t);
    if (r < 0)
        return r;
    if (res->succeeded) {
        out->revision = res->revision;
        atomrun_etcd_txn_free(res);
        return 0;
    }
    r = why_not_put(res, key, lkey, o, out, err, errlen);
    atomrun_etcd_txn_free(res);
    return r;
}
