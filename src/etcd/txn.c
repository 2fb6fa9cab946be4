/*
 * etcd/txn.c -- the one place a kv request is written and its answer read.
 *
 * etcd's recipes (clientv3/concurrency's mutex, stm) stand on a typed
 * Txn().If().Then().Else(); so do atomrun's: the lock queue (etcd/lock.c)
 * and the keys of create/replace/update (etcd/kv.c) describe their txns as
 * arrays of atomrun_etcd_cmp and atomrun_etcd_op, and only this file knows
 * how the JSON gateway spells them.  Keys and values are bytes here and
 * base64 on the wire (a JSON string cannot carry every byte); an int64
 * goes as a decimal string, as the gateway prints it.
 *
 * The answer is read back here too: responses[] in the order of the
 * branch taken, each one of response_range, response_put or
 * response_delete_range.  The gateway leaves a field at its zero value
 * out: no "succeeded" is false, no "kvs" is none, no "count" is 0 -- so a
 * missing field is never an error.
 */
#define _GNU_SOURCE
#include "etcd/internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ names */

static const char *const target_names[] = { NULL, "VERSION", "CREATE", "MOD", "VALUE", "LEASE" };
/* The field of a Compare that carries the other side, per target. */
static const char *const target_fields[] = { NULL, "version", "create_revision",
                                             "mod_revision", "value", "lease" };
static const char *const result_names[] = { NULL, "EQUAL", "NOT_EQUAL", "GREATER", "LESS" };
static const char *const sort_names[] = { NULL, "KEY", "VERSION", "CREATE", "MOD", "VALUE" };
static const char *const op_names[] = { NULL, "put", "range", "delete" };

#define COUNT(a) ((int)(sizeof a / sizeof a[0]))

static int known(int v, int count) { return v >= 1 && v < count; }

/* ------------------------------------------------------------ checks */

static int refuse(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int refuse(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);      /* errlen 0: err may be NULL */
    va_end(ap);
    return -EINVAL;
}

/* Bytes are (NULL, 0) or (p, n) with p set. */
static int bytes_ok(const void *p, size_t n) { return p || n == 0; }

static int check_cmp(const atomrun_etcd_cmp *c, size_t i, char *err, size_t errlen)
{
    if (!c->key || c->keylen == 0)
        return refuse(err, errlen, "etcd txn: compare %zu has no key", i + 1);
    if (!known(c->target, COUNT(target_names)))
        return refuse(err, errlen, "etcd txn: compare %zu: unknown target %d", i + 1, c->target);
    if (!known(c->result, COUNT(result_names)))
        return refuse(err, errlen, "etcd txn: compare %zu: unknown result %d", i + 1, c->result);
    if (c->target == ATOMRUN_ETCD_VALUE && !bytes_ok(c->value, c->valuelen))
        return refuse(err, errlen, "etcd txn: compare %zu: a NULL value of %zu bytes", i + 1,
                      c->valuelen);
    return 0;
}

/* where: "then op 2", "else op 1", "range" -- for the message. */
static int check_op(const atomrun_etcd_op *o, const char *where, char *err, size_t errlen)
{
    int spans = o->type == ATOMRUN_ETCD_RANGE || o->type == ATOMRUN_ETCD_DELETE;
    if (!known(o->type, COUNT(op_names)))
        return refuse(err, errlen, "etcd txn: %s: unknown type %d", where, o->type);
    if (!o->key || o->keylen == 0)
        return refuse(err, errlen, "etcd txn: %s (%s) has no key", where, op_names[o->type]);
    if (!bytes_ok(o->range_end, o->range_end_len) || !bytes_ok(o->value, o->valuelen))
        return refuse(err, errlen, "etcd txn: %s: a NULL range_end or value with a length",
                      where);
    if (o->range_end_len && o->prefix)
        return refuse(err, errlen, "etcd txn: %s: range_end and prefix both given", where);
    if (!spans && (o->range_end_len || o->prefix))
        return refuse(err, errlen, "etcd txn: %s: a put takes no range_end or prefix", where);
    if (o->limit < 0 || o->revision < 0)
        return refuse(err, errlen, "etcd txn: %s: negative limit or revision", where);
    if (o->sort && !known(o->sort, COUNT(sort_names)))
        return refuse(err, errlen, "etcd txn: %s: unknown sort %d", where, o->sort);
    return 0;
}

static int check_ops(const atomrun_etcd_op *ops, size_t n, const char *branch,
                     char *err, size_t errlen)
{
    char where[32];
    int r;
    if (n && !ops)
        return refuse(err, errlen, "etcd txn: %zu %s ops given as NULL", n, branch);
    for (size_t i = 0; i < n; i++) {
        snprintf(where, sizeof where, "%s op %zu", branch, i + 1);
        if ((r = check_op(&ops[i], where, err, errlen)) < 0)
            return r;
    }
    return 0;
}

static int check_txn(const atomrun_etcd_cmp *cmp, size_t ncmp, const atomrun_etcd_op *then,
                     size_t nthen, const atomrun_etcd_op *otherwise, size_t nelse,
                     char *err, size_t errlen)
{
    int r;
    if (ncmp && !cmp)
        return refuse(err, errlen, "etcd txn: %zu compares given as NULL", ncmp);
    for (size_t i = 0; i < ncmp; i++)
        if ((r = check_cmp(&cmp[i], i, err, errlen)) < 0)
            return r;
    if ((r = check_ops(then, nthen, "then", err, errlen)) < 0)
        return r;
    return check_ops(otherwise, nelse, "else", err, errlen);
}

/* ------------------------------------------------------------ building */

/* Each setter takes obj over and gives it back, or NULL when obj or v is
 * NULL (out of memory): a builder chains them and checks once, at the
 * end. */
static json_t *set(json_t *obj, const char *field, json_t *v)
{
    if (!obj || !v) {
        json_decref(obj);
        json_decref(v);
        return NULL;
    }
    if (json_object_set_new(obj, field, v) < 0) {   /* v is freed with it */
        json_decref(obj);
        return NULL;
    }
    return obj;
}

static json_t *set_bytes(json_t *obj, const char *field, const void *p, size_t n)
{
    return set(obj, field, ar_json_b64(n ? p : "", n));
}

static json_t *set_int64(json_t *obj, const char *field, int64_t v)
{
    char num[32];
    snprintf(num, sizeof num, "%lld", (long long)v);
    return set(obj, field, json_string(num));
}

static json_t *set_flag(json_t *obj, const char *field, int on)
{
    return on ? set(obj, field, json_true()) : obj;
}

static json_t *cmp_json(const atomrun_etcd_cmp *c)
{
    json_t *j = set_bytes(json_object(), "key", c->key, c->keylen);
    j = set(j, "target", json_string(target_names[c->target]));
    j = set(j, "result", json_string(result_names[c->result]));
    if (c->target == ATOMRUN_ETCD_VALUE)
        return set_bytes(j, "value", c->value, c->valuelen);
    return set_int64(j, target_fields[c->target], c->number);
}

/* key, and range_end: the given one, or the end of the prefix. */
static json_t *span_json(const atomrun_etcd_op *o)
{
    json_t *j = set_bytes(json_object(), "key", o->key, o->keylen);
    size_t elen;
    char *end;
    if (o->range_end_len)
        return set_bytes(j, "range_end", o->range_end, o->range_end_len);
    if (!o->prefix)
        return j;
    if (!(end = ar_prefix_end(o->key, o->keylen, &elen))) {
        json_decref(j);
        return NULL;
    }
    j = set_bytes(j, "range_end", end, elen);
    free(end);
    return j;
}

/* A RangeRequest: the body of /v3/kv/range and of a txn's request_range. */
static json_t *range_json(const atomrun_etcd_op *o)
{
    json_t *j = span_json(o);
    if (o->limit)
        j = set_int64(j, "limit", o->limit);
    if (o->revision)
        j = set_int64(j, "revision", o->revision);
    j = set_flag(j, "keys_only", o->keys_only);
    j = set_flag(j, "count_only", o->count_only);
    if (o->sort) {
        j = set(j, "sort_target", json_string(sort_names[o->sort]));
        j = set(j, "sort_order", json_string(o->descend ? "DESCEND" : "ASCEND"));
    }
    return j;
}

static json_t *put_json(const atomrun_etcd_op *o)
{
    json_t *j = set_bytes(json_object(), "key", o->key, o->keylen);
    j = set_bytes(j, "value", o->value, o->valuelen);
    if (o->lease)
        j = set_int64(j, "lease", o->lease);
    return set_flag(j, "prev_kv", o->prev_kv);
}

static json_t *delete_json(const atomrun_etcd_op *o)
{
    return set_flag(span_json(o), "prev_kv", o->prev_kv);
}

/* A RequestOp: {"request_put": {...}} and so on. */
static json_t *request_op(const atomrun_etcd_op *o)
{
    switch (o->type) {
    case ATOMRUN_ETCD_PUT:    return set(json_object(), "request_put", put_json(o));
    case ATOMRUN_ETCD_RANGE:  return set(json_object(), "request_range", range_json(o));
    default:                  return set(json_object(), "request_delete_range", delete_json(o));
    }
}

static json_t *ops_json(const atomrun_etcd_op *ops, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        json_t *op = request_op(&ops[i]);
        if (!op || json_array_append_new(a, op) < 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *cmps_json(const atomrun_etcd_cmp *cmp, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        json_t *c = cmp_json(&cmp[i]);
        if (!c || json_array_append_new(a, c) < 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

int ar_txn_body(const atomrun_etcd_cmp *cmp, size_t ncmp, const atomrun_etcd_op *then,
                size_t nthen, const atomrun_etcd_op *otherwise, size_t nelse,
                json_t **body, char *err, size_t errlen)
{
    json_t *j;
    int r;
    *body = NULL;
    if ((r = check_txn(cmp, ncmp, then, nthen, otherwise, nelse, err, errlen)) < 0)
        return r;
    /* An empty list is left out, as proto3's JSON leaves it: a txn of
     * reads alone then has no "compare" at all, which is how a reader of
     * the wire tells it from a write (spec/faultproxy.py counts only the
     * txns with one). */
    j = json_object();
    if (ncmp)
        j = set(j, "compare", cmps_json(cmp, ncmp));
    if (nthen)
        j = set(j, "success", ops_json(then, nthen));
    if (nelse)
        j = set(j, "failure", ops_json(otherwise, nelse));
    if (!j) {
        snprintf(err, errlen, "etcd txn: out of memory");
        return -ENOMEM;
    }
    *body = j;
    return 0;
}

/* ------------------------------------------------------------ reading */

void ar_kv_clear(atomrun_etcd_kv *kv)
{
    free(kv->key);
    free(kv->value);
    kv->key = kv->value = NULL;
}

static void kvs_free(atomrun_etcd_kv *kvs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ar_kv_clear(&kvs[i]);
    free(kvs);
}

void atomrun_etcd_txn_free(atomrun_etcd_txn_result *res)
{
    if (!res)
        return;
    for (size_t i = 0; i < res->nops; i++) {
        kvs_free(res->ops[i].kvs, res->ops[i].nkvs);
        kvs_free(res->ops[i].prev_kvs, res->ops[i].nprev);
    }
    free(res->ops);
    free(res);
}

/* A base64 field into malloc'd bytes; a missing one is empty (keys_only
 * leaves the value out, and the gateway drops an empty one). */
static int bytes_from(const json_t *obj, const char *field, char **out, size_t *len)
{
    const char *b64 = json_string_value(json_object_get(obj, field));
    return ar_b64_decode(b64 ? b64 : "", out, len);
}

int ar_kv_from(const json_t *j, atomrun_etcd_kv *kv)
{
    int r;
    if ((r = bytes_from(j, "key", &kv->key, &kv->keylen)) < 0 ||
        (r = bytes_from(j, "value", &kv->value, &kv->valuelen)) < 0)
        return r;
    kv->create_rev = ar_json_int64(j, "create_revision");
    kv->mod_rev = ar_json_int64(j, "mod_revision");
    kv->version = ar_json_int64(j, "version");
    kv->lease = ar_json_int64(j, "lease");
    return 0;
}

/* An array of KeyValue (or NULL: none) into *out, *n. */
static int kvs_from(const json_t *arr, atomrun_etcd_kv **out, size_t *n)
{
    size_t count = json_array_size(arr), i;
    int r = 0;
    *out = NULL;
    *n = 0;
    if (count == 0)
        return 0;
    if (!(*out = calloc(count, sizeof **out)))
        return -ENOMEM;
    for (i = 0; i < count && r == 0; i++, ++*n)
        r = ar_kv_from(json_array_get(arr, i), &(*out)[i]);
    return r;
}

/* A RangeResponse (the answer of /v3/kv/range, or a txn's response_range). */
static int range_from(const json_t *rr, atomrun_etcd_op_result *r)
{
    r->type = ATOMRUN_ETCD_RANGE;
    r->count = ar_json_int64(rr, "count");
    r->more = json_is_true(json_object_get(rr, "more"));
    return kvs_from(json_object_get(rr, "kvs"), &r->kvs, &r->nkvs);
}

static int op_result_from(const json_t *item, atomrun_etcd_op_result *r)
{
    const json_t *v;
    if ((v = json_object_get(item, "response_range")) != NULL)
        return range_from(v, r);
    if ((v = json_object_get(item, "response_put")) != NULL) {
        r->type = ATOMRUN_ETCD_PUT;
        v = json_object_get(v, "prev_kv");
        if (!v)
            return 0;
        if (!(r->prev_kvs = calloc(1, sizeof *r->prev_kvs)))
            return -ENOMEM;
        r->nprev = 1;
        return ar_kv_from(v, r->prev_kvs);
    }
    if ((v = json_object_get(item, "response_delete_range")) != NULL) {
        r->type = ATOMRUN_ETCD_DELETE;
        r->deleted = ar_json_int64(v, "deleted");
        return kvs_from(json_object_get(v, "prev_kvs"), &r->prev_kvs, &r->nprev);
    }
    return -EPROTO;             /* a nested txn, or not etcd's answer */
}

/* The cluster id of an answer's header.  A uint64 the gateway prints as a
 * string, most often above INT64_MAX (so not ar_json_int64); 0 if none. */
static uint64_t header_cluster(const json_t *answer)
{
    const json_t *v = json_object_get(json_object_get(answer, "header"), "cluster_id");
    if (json_is_string(v))
        return strtoull(json_string_value(v), NULL, 10);
    if (json_is_integer(v))
        return (uint64_t)json_integer_value(v);
    return 0;
}

/* A result with room for n op results, the header read from ans. */
static atomrun_etcd_txn_result *result_new(const json_t *ans, size_t n)
{
    atomrun_etcd_txn_result *res = calloc(1, sizeof *res);
    if (!res || !(res->ops = calloc(n ? n : 1, sizeof *res->ops))) {
        free(res);
        return NULL;
    }
    res->revision = ar_json_int64(json_object_get(ans, "header"), "revision");
    res->cluster = header_cluster(ans);
    return res;
}

/* A TxnResponse into *out: 0, -ENOMEM or -EPROTO. */
static int txn_from(const json_t *ans, atomrun_etcd_txn_result **out)
{
    const json_t *resp = json_object_get(ans, "responses");
    atomrun_etcd_txn_result *res = result_new(ans, json_array_size(resp));
    int r = 0;
    *out = NULL;
    if (!res)
        return -ENOMEM;
    res->succeeded = json_is_true(json_object_get(ans, "succeeded"));
    for (size_t i = 0; i < json_array_size(resp) && r == 0; i++, res->nops++)
        r = op_result_from(json_array_get(resp, i), &res->ops[i]);
    if (r < 0) {
        atomrun_etcd_txn_free(res);
        return r;
    }
    *out = res;
    return 0;
}

/* ------------------------------------------------------------ sending */

/* An answer that could not be read: r (-ENOMEM or -EPROTO), said in err. */
static int unreadable(atomrun_etcd *c, int r, const char *what, char *err, size_t errlen)
{
    if (r == -ENOMEM)
        snprintf(err, errlen, "etcd %s: out of memory reading the answer", what);
    else
        snprintf(err, errlen, "etcd %s: %s answered something that is not etcd's %s answer",
                 what, atomrun_etcd_endpoints(c), what);
    return r;
}

int ar_txn_send(atomrun_etcd *c, json_t *body, double deadline, int *unsure,
                atomrun_etcd_txn_result **out, char *err, size_t errlen)
{
    json_t *ans = NULL;
    int r;
    *out = NULL;
    r = ar_etcd_send_tracked(c, "/v3/kv/txn", body, deadline, NULL, unsure, &ans, err, errlen);
    if (r < 0)
        return r;
    r = txn_from(ans, out);
    json_decref(ans);
    return r < 0 ? unreadable(c, r, "txn", err, errlen) : 0;
}

int ar_etcd_txn_at(atomrun_etcd *c, const atomrun_etcd_cmp *cmp, size_t ncmp,
                   const atomrun_etcd_op *then, size_t nthen,
                   const atomrun_etcd_op *otherwise, size_t nelse, double deadline,
                   int *unsure, atomrun_etcd_txn_result **out, char *err, size_t errlen)
{
    json_t *body;
    int r;
    *out = NULL;
    if ((r = ar_txn_body(cmp, ncmp, then, nthen, otherwise, nelse, &body, err, errlen)) < 0)
        return r;
    return ar_txn_send(c, body, deadline, unsure, out, err, errlen);
}

/* The server refuses a request over its --max-request-bytes with
 * "etcdserver: request is too large" (gRPC InvalidArgument), or "received
 * message larger than max" when it is over gRPC's limit too (a little
 * above): -EINVAL from the client, but a size, not a malformed txn, so
 * -E2BIG, said so. */
static int too_large(int r, char *err, size_t errlen)
{
    char was[ATOMRUN_ERRLEN];
    if (r != -EINVAL || !err || errlen == 0 || (!strstr(err, "request is too large") && !strstr(err, "larger than max")))
        return r;
    snprintf(was, sizeof was, "%s", err);
    ar_seterr(err, errlen, "etcd txn: over the etcd request limit of the cluster "
              "(its --max-request-bytes): %s", was);
    return -E2BIG;
}

int atomrun_etcd_txn(atomrun_etcd *c, const atomrun_etcd_cmp *cmp, size_t ncmp,
                     const atomrun_etcd_op *then, size_t nthen,
                     const atomrun_etcd_op *otherwise, size_t nelse,
                     atomrun_etcd_txn_result **out, double timeout, atomrun_err *e)
{
    atomrun_err own;
    char *err = ar_err_start(e, &own)->msg;
    size_t errlen = sizeof own.msg;
    double deadline = ar_deadline_in(timeout);
    if (!out)
        return refuse(err, errlen, "etcd txn: no place for the result");
    *out = NULL;
    if (!c)
        return refuse(err, errlen, "etcd txn: no client");
    return too_large(ar_etcd_txn_at(c, cmp, ncmp, then, nthen, otherwise, nelse, deadline,
                                    NULL, out, err, errlen), err, errlen);
}

/* A /v3/kv/range answer as a one-op result. */
static int range_result(const json_t *ans, atomrun_etcd_txn_result **out)
{
    atomrun_etcd_txn_result *res = result_new(ans, 1);
    int r;
    *out = NULL;
    if (!res)
        return -ENOMEM;
    res->succeeded = 1;
    res->nops = 1;
    if ((r = range_from(ans, &res->ops[0])) < 0) {
        atomrun_etcd_txn_free(res);
        return r;
    }
    *out = res;
    return 0;
}

int ar_etcd_range(atomrun_etcd *c, const atomrun_etcd_op *op, double deadline,
                  atomrun_etcd_txn_result **out, char *err, size_t errlen)
{
    json_t *ans = NULL;
    int r;
    *out = NULL;
    if (op->type != ATOMRUN_ETCD_RANGE)
        return refuse(err, errlen, "etcd range: not a range op (type %d)", op->type);
    if ((r = check_op(op, "range", err, errlen)) < 0)
        return r;
    r = ar_etcd_send(c, "/v3/kv/range", range_json(op), deadline, NULL, &ans, err, errlen);
    if (r < 0)
        return r;
    r = range_result(ans, out);
    json_decref(ans);
    return r < 0 ? unreadable(c, r, "range", err, errlen) : 0;
}

/* ------------------------------------------------------------ makers */

atomrun_etcd_op ar_op_put(const char *key, const void *value, size_t valuelen, int64_t lease)
{
    atomrun_etcd_op o = { .type = ATOMRUN_ETCD_PUT, .key = key, .keylen = strlen(key),
                          .value = value, .valuelen = valuelen, .lease = lease };
    return o;
}

atomrun_etcd_op ar_op_get(const char *key)
{
    atomrun_etcd_op o = { .type = ATOMRUN_ETCD_RANGE, .key = key, .keylen = strlen(key) };
    return o;
}

atomrun_etcd_op ar_op_delete(const char *key)
{
    atomrun_etcd_op o = { .type = ATOMRUN_ETCD_DELETE, .key = key, .keylen = strlen(key) };
    return o;
}

atomrun_etcd_cmp ar_cmp_equal(const char *key, int target, int64_t number)
{
    atomrun_etcd_cmp c = { .key = key, .keylen = strlen(key), .target = target,
                           .result = ATOMRUN_ETCD_EQUAL, .number = number };
    return c;
}

const atomrun_etcd_kv *ar_txn_kv(const atomrun_etcd_txn_result *res, size_t i)
{
    return res && i < res->nops && res->ops[i].nkvs ? &res->ops[i].kvs[0] : NULL;
}
