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

void atomrun_remote_put_opts_init(atomrun_remote_put_opts *o)
{
    memset(o, 0, sizeof *o);
}

static void kv_of(const json_t *kv, atomrun_remote_kv *out)
{
    out->create_rev = ar_json_int64(kv, "create_revision");
    out->mod_rev = ar_json_int64(kv, "mod_revision");
    out->version = ar_json_int64(kv, "version");
    out->lease = ar_json_int64(kv, "lease");
}

int atomrun_remote_get(atomrun_etcd *c, const char *key, char **data,
                       size_t *len, atomrun_remote_kv *kv, double deadline,
                       char *err, size_t errlen)
{
    json_t *req, *ans = NULL, *kvs, *first;
    const char *v64;
    int r;

    *data = NULL;
    *len = 0;
    if (kv)
        memset(kv, 0, sizeof *kv);
    if (!key || !*key) {
        snprintf(err, errlen, "empty etcd key");
        return -EINVAL;
    }
    req = json_pack("{s:o}", "key", ar_json_b64(key, strlen(key)));
    r = ar_etcd_send(c, "/v3/kv/range", req, deadline, NULL, &ans, err, errlen);
    if (r < 0)
        return r;
    kvs = json_object_get(ans, "kvs");
    first = json_array_get(kvs, 0);
    if (!first) {
        json_decref(ans);
        snprintf(err, errlen, "%s: no such key", key);
        return -ENOENT;
    }
    if (kv)
        kv_of(first, kv);
    v64 = json_string_value(json_object_get(first, "value"));
    r = ar_b64_decode(v64 ? v64 : "", data, len);
    json_decref(ans);
    return r;
}

/* The kv of the first response_range of a txn answer's responses[i]. */
static const json_t *range_kv(const json_t *ans, size_t i)
{
    const json_t *rr = json_object_get(json_array_get(json_object_get(ans, "responses"), i),
                                       "response_range");
    return json_array_get(json_object_get(rr, "kvs"), 0);
}

#define AR_CREATOR_PREFIX "atomrun/creator/"

/* {"key": b64, "value": b64[, "lease": "ID"]}: a put, bound to lease when
 * it is not 0 (int64 as a string, as the gateway prints it). */
static json_t *put_request(const char *key, const void *val, size_t vlen, int64_t lease)
{
    json_t *put = json_pack("{s:o, s:o}", "key", ar_json_b64(key, strlen(key)),
                            "value", ar_json_b64(val, vlen));
    char num[32];
    if (put && lease) {
        snprintf(num, sizeof num, "%lld", (long long)lease);
        json_object_set_new(put, "lease", json_string(num));
    }
    return put;
}

/* The creator record's put (success) and range (failure, last) in txn,
 * on the key's lease (0: none). */
static int add_creator_record(json_t *txn, const char *key, int64_t lease)
{
    size_t klen = strlen(key);
    char *ckey = malloc(sizeof AR_CREATOR_PREFIX + klen), *crec = ar_writer_record(NULL, NULL, 0);
    json_t *put = NULL;

    if (ckey && crec) {
        memcpy(ckey, AR_CREATOR_PREFIX, sizeof AR_CREATOR_PREFIX - 1);
        memcpy(ckey + sizeof AR_CREATOR_PREFIX - 1, key, klen + 1);
        put = put_request(ckey, crec, strlen(crec), lease);
    }
    if (put) {
        json_array_append_new(json_object_get(txn, "success"),
                              json_pack("{s:o}", "request_put", put));
        json_array_append_new(json_object_get(txn, "failure"),
                              json_pack("{s:{s:o}}", "request_range", "key",
                                        ar_json_b64(ckey, strlen(ckey))));
    }
    free(ckey);
    free(crec);
    return put ? 0 : -ENOMEM;
}

/* Who created the existing key, from its creator record's kv (or NULL). */
static void creator_of(const json_t *rec_kv, const atomrun_remote_kv *existing,
                       atomrun_remote_holder *h)
{
    const char *v64;
    char *text = NULL;
    size_t len = 0;
    json_t *rec;

    h->token = existing->create_rev;
    h->lease = existing->lease;
    /* Written by the txn that made this key, or it describes another one. */
    if (!rec_kv || ar_json_int64(rec_kv, "mod_revision") != existing->create_rev)
        return;
    v64 = json_string_value(json_object_get(rec_kv, "value"));
    if (!v64 || ar_b64_decode(v64, &text, &len) < 0)
        return;
    rec = json_loadb(text, len, 0, NULL);
    ar_writer_of(rec, h);
    json_decref(rec);
    free(text);
}

/* A compare of key's target (CREATE, MOD) with a revision. */
static json_t *compare_rev(const char *key, const char *target, const char *field,
                           int64_t rev)
{
    char num[32];
    snprintf(num, sizeof num, "%lld", (long long)rev);
    return json_pack("{s:o, s:s, s:s, s:s}", "key", ar_json_b64(key, strlen(key)),
                     "target", target, "result", "EQUAL", field, num);
}

/* put's txn: the put under o's conditions (absent, unchanged, the fence
 * lock's key still of its token); the failure side reads the key and the
 * fence key back, to say which condition failed. */
static json_t *put_txn(const char *key, const void *data, size_t len,
                       const atomrun_remote_put_opts *o, const char *lkey, int64_t lease)
{
    json_t *cmp = json_array(), *put, *failure, *txn;
    if (o->create_only)
        json_array_append_new(cmp, compare_rev(key, "CREATE", "create_revision", 0));
    if (o->if_mod_rev > 0)
        json_array_append_new(cmp, compare_rev(key, "MOD", "mod_revision", o->if_mod_rev));
    if (lkey)
        json_array_append_new(cmp, compare_rev(lkey, "CREATE", "create_revision",
                                               atomrun_remote_lock_token(o->fence)));
    put = put_request(key, data, len, lease);
    failure = json_pack("[{s:{s:o}}]", "request_range", "key", ar_json_b64(key, strlen(key)));
    if (failure && lkey)
        json_array_append_new(failure, json_pack("{s:{s:o}}", "request_range", "key",
                                                 ar_json_b64(lkey, strlen(lkey))));
    txn = json_pack("{s:o, s:[{s:o}], s:o}", "compare", cmp, "success", "request_put",
                    put, "failure", failure);
    if (txn && o->create_only && add_creator_record(txn, key, lease) < 0) {
        json_decref(txn);
        return NULL;
    }
    return txn;
}

/* Which condition of a failed put's txn failed?  The fence first: a lost
 * lock is the news. */
static int why_not_put(const json_t *ans, const char *key, const char *lkey,
                       atomrun_remote_put_opts *o, char *err, size_t errlen)
{
    const json_t *mine = range_kv(ans, 0), *lk = lkey ? range_kv(ans, 1) : NULL;
    if (mine)
        kv_of(mine, &o->existing);
    if (lkey && (!lk || ar_json_int64(lk, "create_revision") !=
                 atomrun_remote_lock_token(o->fence))) {
        snprintf(err, errlen, "not written: the lock %s is no longer held with token "
                 "%lld (its lease expired or it was broken)", lkey,
                 (long long)atomrun_remote_lock_token(o->fence));
        return ATOMRUN_ELOST;
    }
    if (o->create_only && mine) {
        creator_of(range_kv(ans, lkey ? 2 : 1), &o->existing, &o->creator);
        snprintf(err, errlen, "%s exists (created at revision %lld)", key,
                 (long long)o->existing.create_rev);
        return -EEXIST;
    }
    snprintf(err, errlen, "%s changed since revision %lld (now %lld)", key,
             (long long)o->if_mod_rev, (long long)o->existing.mod_rev);
    return -ESTALE;
}

int atomrun_remote_put(atomrun_etcd *c, const char *key, const void *data,
                       size_t len, atomrun_remote_put_opts *o, double deadline,
                       char *err, size_t errlen)
{
    json_t *txn, *ans = NULL;
    const char *lkey = NULL;
    char why[ATOMRUN_ETCD_ERRLEN];
    ar_session *s = NULL;
    int r;

    o->revision = 0;
    memset(&o->existing, 0, sizeof o->existing);
    memset(&o->creator, 0, sizeof o->creator);
    if (!key || !*key) {
        snprintf(err, errlen, "empty etcd key");
        return -EINVAL;
    }
    if (o->fence) {
        /* Known lost here already: do not even ask. */
        if (atomrun_remote_lock_lost(o->fence, why, sizeof why) < 0) {
            snprintf(err, errlen, "not written: %s", why);
            return ATOMRUN_ELOST;
        }
        lkey = atomrun_remote_lock_key(o->fence);
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
    if (!(txn = put_txn(key, data, len, o, lkey, s ? ar_session_lease(s) : 0)))
        return -ENOMEM;
    r = ar_etcd_send(c, "/v3/kv/txn", txn, deadline, NULL, &ans, err, errlen);
    if (r < 0)
        return r;
    if (json_is_true(json_object_get(ans, "succeeded"))) {
        o->revision = ar_json_int64(json_object_get(ans, "header"), "revision");
        json_decref(ans);
        return 0;
    }
    r = why_not_put(ans, key, lkey, o, err, errlen);
    json_decref(ans);
    return r;
}
