/*
 * bind/etcd_txn.c -- core.etcd: the typed etcd calls the recipes stand on,
 * as etcd's own recipes (clientv3/concurrency's stm.go, mutex.go) stand on
 * clientv3's Txn/Cmp/Op.  txn(url, t [, opts]) is atomrun_etcd_txn with Lua
 * tables for its arrays; lease(url, ttl) the process's session lease;
 * revoke(url, id) ends a lease (`atomrun who --revoke`); PREFIX the key
 * space, spelled once in atomrun.h.  Keys and values are Lua strings of any
 * bytes, revisions and leases integers: no base64 and no JSON reach Lua.
 *
 *   t = { compare = { {key=, target=, result=, value=}, ... },
 *         success = { {put = {...}} | {range = {...}} | {delete = {...}}, ... },
 *         failure = { ... } }
 *
 * A malformed t is a Lua error naming the element and what is wrong with
 * it ("compare 1: unknown target 'x'"): a typo in a txn must never be sent
 * as some other txn.
 */
#define _GNU_SOURCE
#include "bind/bind.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESULT_MT "atomrun.etcd.txn_result"

/* The words of t, in the order of atomrun.h's enumerations (which start
 * at 1: a word's index + 1 is its value). */
static const char *const target_words[] = { "version", "create", "mod", "value", "lease", NULL };
static const char *const result_words[] = { "==", "~=", ">", "<", NULL };
static const char *const sort_words[] = { "key", "version", "create", "mod", "value", NULL };
static const char *const op_words[] = { "put", "range", "delete", NULL };

static const char *const cmp_fields[] = { "key", "target", "result", "value", NULL };
static const char *const put_fields[] = { "key", "value", "lease", "prev_kv", NULL };
static const char *const range_fields[] = { "key", "range_end", "prefix", "limit", "keys_only",
                                            "count_only", "sort", "descend", "revision", NULL };
static const char *const delete_fields[] = { "key", "range_end", "prefix", "prev_kv", NULL };

/* etcd refuses a request over its --max-request-bytes (1.5 MiB unless the
 * cluster was started with another), and on the gateway every key and
 * value travels base64 inside JSON: 4/3 of its bytes, plus the framing of
 * each compare or op (field names, numbers, quotes) and of the txn.  A txn
 * over the limit is refused before it is sent, so it costs no round trip;
 * opts.max_request_bytes follows a cluster with another limit.  A cluster
 * with a lower one refuses it itself: atomrun_etcd_txn says E2BIG too. */
#define DEFAULT_REQUEST_LIMIT (1536 * 1024)
#define ITEM_FRAMING 160
#define TXN_FRAMING  256

static size_t b64len(size_t n) { return (n + 2) / 3 * 4; }

/* The txn being read from t: its arrays live in userdata on the stack, so
 * a Lua error on a later element frees them. */
typedef struct txn_args {
    atomrun_etcd_cmp *cmp;
    atomrun_etcd_op  *then, *otherwise;
    size_t            ncmp, nthen, nelse;
    size_t            wire;        /* the request's bytes as sent, about */
} txn_args;

/* Where an element is, for the message: "compare 1", "success 2". */
typedef struct where {
    const char *branch;
    size_t      i;
} where;

static int bad(lua_State *L, const where *w, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A Lua error: bad argument #2 to 'txn' (compare 1: ...). */
static int bad(lua_State *L, const where *w, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return luaL_argerror(L, 2, lua_pushfstring(L, "%s %d: %s", w->branch, (int)w->i, msg));
}

static int word_index(const char *const *words, const char *s)
{
    for (int i = 0; words[i]; i++)
        if (strcmp(words[i], s) == 0)
            return i;
    return -1;
}

/* t[name] of the table at (absolute) idx, raw: a string found through an
 * __index could be a temporary, collected while the txn still points at
 * it; every value read here must be one that t itself holds. */
static int rawfield(lua_State *L, int idx, const char *name)
{
    lua_pushstring(L, name);
    return lua_rawget(L, idx);
}

/* Every field of the table at idx is one of names: a misspelt field
 * (rang_end) must not be dropped silently. */
static void check_fields(lua_State *L, int idx, const char *const *names, const where *w)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING || word_index(names, lua_tostring(L, -1)) < 0)
            bad(L, w, "unknown field '%s'", lua_type(L, -1) == LUA_TSTRING
                ? lua_tostring(L, -1) : luaL_typename(L, -1));
    }
}

/* t[name] at idx as bytes (NULL when absent).  The string stays referenced
 * by t, which stays on the stack for the whole call. */
static const char *bytes_field(lua_State *L, int idx, const char *name, size_t *len,
                               const where *w)
{
    const char *s = NULL;
    int t = rawfield(L, idx, name);
    *len = 0;
    if (t == LUA_TSTRING)
        s = lua_tolstring(L, -1, len);
    else if (t != LUA_TNIL)
        bad(L, w, "'%s' must be a string, not a %s", name, luaL_typename(L, -1));
    lua_pop(L, 1);
    return s;
}

static const char *key_field(lua_State *L, int idx, size_t *len, const where *w)
{
    const char *k = bytes_field(L, idx, "key", len, w);
    if (!k || *len == 0)
        bad(L, w, k ? "empty key" : "no key");
    return k;
}

/* t[name] as an integer >= min (dflt when absent). */
static int64_t int_field(lua_State *L, int idx, const char *name, int64_t dflt, int64_t min,
                         const where *w)
{
    int t = rawfield(L, idx, name), isint = 0;
    lua_Integer v = dflt;
    if (t != LUA_TNIL) {
        v = lua_tointegerx(L, -1, &isint);
        if (t != LUA_TNUMBER || !isint || v < min)
            bad(L, w, "'%s' must be an integer%s", name, min == 0 ? " >= 0" : "");
    }
    lua_pop(L, 1);
    return (int64_t)v;
}

static int bool_field(lua_State *L, int idx, const char *name, const where *w)
{
    int t = rawfield(L, idx, name), v = lua_toboolean(L, -1);
    if (t != LUA_TNIL && t != LUA_TBOOLEAN)
        bad(L, w, "'%s' must be a boolean, not a %s", name, luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

/* t[name] as one of words: its enumeration value (index + 1), 0 absent. */
static int word_field(lua_State *L, int idx, const char *name, const char *const *words,
                      const where *w)
{
    int t = rawfield(L, idx, name), i = 0;
    if (t == LUA_TSTRING) {
        if ((i = word_index(words, lua_tostring(L, -1))) < 0)
            bad(L, w, "unknown %s '%s'", name, lua_tostring(L, -1));
        i++;
    } else if (t != LUA_TNIL)
        bad(L, w, "'%s' must be a string, not a %s", name, luaL_typename(L, -1));
    lua_pop(L, 1);
    return i;
}

/* ------------------------------------------------------------ reading t */

static void read_cmp(lua_State *L, int idx, atomrun_etcd_cmp *c, const where *w)
{
    int t;
    check_fields(L, idx, cmp_fields, w);
    c->key = key_field(L, idx, &c->keylen, w);
    if (!(c->target = word_field(L, idx, "target", target_words, w)))
        bad(L, w, "no target (version, create, mod, value or lease)");
    if (!(c->result = word_field(L, idx, "result", result_words, w)))
        bad(L, w, "no result (==, ~=, > or <)");
    t = rawfield(L, idx, "value");
    lua_pop(L, 1);
    if (t == LUA_TNIL)
        bad(L, w, "no value to compare with");
    if (c->target == ATOMRUN_ETCD_VALUE)
        c->value = bytes_field(L, idx, "value", &c->valuelen, w);
    else
        c->number = int_field(L, idx, "value", 0, INT64_MIN, w);
}

/* range_end or prefix (not both): the span of a range or a delete. */
static void read_span(lua_State *L, int idx, atomrun_etcd_op *o, const where *w)
{
    o->range_end = bytes_field(L, idx, "range_end", &o->range_end_len, w);
    o->prefix = bool_field(L, idx, "prefix", w);
    if (o->range_end && o->range_end_len == 0)
        bad(L, w, "empty range_end (\"\\0\" is every key from key on)");
    if (o->range_end && o->prefix)
        bad(L, w, "range_end and prefix both given");
}

static void read_op_body(lua_State *L, int idx, atomrun_etcd_op *o, const where *w)
{
    static const char *const *const fields[] = { NULL, put_fields, range_fields, delete_fields };
    check_fields(L, idx, fields[o->type], w);
    o->key = key_field(L, idx, &o->keylen, w);
    if (o->type == ATOMRUN_ETCD_PUT) {
        o->value = bytes_field(L, idx, "value", &o->valuelen, w);
        o->lease = int_field(L, idx, "lease", 0, 0, w);
        o->prev_kv = bool_field(L, idx, "prev_kv", w);
        return;
    }
    read_span(L, idx, o, w);
    if (o->type == ATOMRUN_ETCD_DELETE) {
        o->prev_kv = bool_field(L, idx, "prev_kv", w);
        return;
    }
    o->limit = int_field(L, idx, "limit", 0, 0, w);
    o->keys_only = bool_field(L, idx, "keys_only", w);
    o->count_only = bool_field(L, idx, "count_only", w);
    o->sort = word_field(L, idx, "sort", sort_words, w);
    o->descend = bool_field(L, idx, "descend", w);
    o->revision = int_field(L, idx, "revision", 0, 0, w);
}

/* One op: a table of one field, put, range or delete, holding a table. */
static void read_op(lua_State *L, int idx, atomrun_etcd_op *o, const where *w)
{
    static const char shape[] = "an op is {put = {...}}, {range = {...}} or {delete = {...}}";
    int type = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int k = lua_type(L, -2) == LUA_TSTRING ? word_index(op_words, lua_tostring(L, -2)) : -1;
        if (k < 0 || type || lua_type(L, -1) != LUA_TTABLE)
            bad(L, w, "%s", shape);
        type = k + 1;
        lua_pop(L, 1);
    }
    if (!type)
        bad(L, w, "%s", shape);
    o->type = type;
    rawfield(L, idx, op_words[type - 1]);
    read_op_body(L, lua_gettop(L), o, w);
    lua_pop(L, 1);
}

/* The array t[name] (absent: none); its element count, the array itself
 * in new userdata left on the stack. */
static size_t read_array(lua_State *L, const char *name, size_t size, void **out)
{
    int t = rawfield(L, 2, name);
    size_t n;
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        *out = NULL;
        return 0;
    }
    if (t != LUA_TTABLE)
        luaL_argerror(L, 2, lua_pushfstring(L, "'%s' must be a table, not a %s", name,
                                            luaL_typename(L, -1)));
    n = (size_t)lua_rawlen(L, -1);
    lua_pushnil(L);
    while (lua_next(L, -2)) {       /* a list and only a list: no holes, no keys */
        lua_Integer i = lua_isinteger(L, -2) ? lua_tointeger(L, -2) : 0;
        if (i < 1 || (size_t)i > n)
            luaL_argerror(L, 2, lua_pushfstring(L, "'%s' must be a list", name));
        lua_pop(L, 1);
    }
    *out = lua_newuserdatauv(L, size * (n ? n : 1), 0);
    memset(*out, 0, size * (n ? n : 1));
    return n;
}

static size_t cmp_wire(const atomrun_etcd_cmp *c)
{
    return b64len(c->keylen) + b64len(c->valuelen) + ITEM_FRAMING;
}

static size_t op_wire(const atomrun_etcd_op *o)
{
    return b64len(o->keylen) + b64len(o->valuelen) + b64len(o->range_end_len) +
           (o->prefix ? b64len(o->keylen) : 0) + ITEM_FRAMING;
}

static void read_ops(lua_State *L, const char *branch, atomrun_etcd_op **ops, size_t *n,
                     size_t *wire)
{
    int arr;
    *n = read_array(L, branch, sizeof **ops, (void **)ops);
    if (!*ops)
        return;
    arr = lua_gettop(L) - 1;        /* under the userdata */
    for (size_t i = 0; i < *n; i++) {
        where w = { branch, i + 1 };
        if (lua_rawgeti(L, arr, (lua_Integer)i + 1) != LUA_TTABLE)
            bad(L, &w, "an op must be a table, not a %s", luaL_typename(L, -1));
        read_op(L, lua_gettop(L), &(*ops)[i], &w);
        lua_pop(L, 1);
        *wire += op_wire(&(*ops)[i]);
    }
}

/* t (argument 2) into a; what it leaves on the stack keeps a's arrays. */
static void read_txn(lua_State *L, txn_args *a)
{
    static const char *const names[] = { "compare", "success", "failure", NULL };
    int arr;
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING || word_index(names, lua_tostring(L, -1)) < 0)
            luaL_argerror(L, 2, lua_pushfstring(L, "unknown field '%s' (compare, success, "
                "failure)", lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                : luaL_typename(L, -1)));
    }
    memset(a, 0, sizeof *a);
    a->wire = TXN_FRAMING;
    a->ncmp = read_array(L, "compare", sizeof *a->cmp, (void **)&a->cmp);
    arr = lua_gettop(L) - 1;
    for (size_t i = 0; a->cmp && i < a->ncmp; i++) {
        where w = { "compare", i + 1 };
        if (lua_rawgeti(L, arr, (lua_Integer)i + 1) != LUA_TTABLE)
            bad(L, &w, "a compare must be a table, not a %s", luaL_typename(L, -1));
        read_cmp(L, lua_gettop(L), &a->cmp[i], &w);
        lua_pop(L, 1);
        a->wire += cmp_wire(&a->cmp[i]);
    }
    read_ops(L, "success", &a->then, &a->nthen, &a->wire);
    read_ops(L, "failure", &a->otherwise, &a->nelse, &a->wire);
}

/* ------------------------------------------------------------ the answer */

static void set_int(lua_State *L, const char *name, int64_t v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, name);
}

static void push_kv(lua_State *L, const atomrun_etcd_kv *kv)
{
    lua_createtable(L, 0, 6);
    lua_pushlstring(L, kv->key, kv->keylen);
    lua_setfield(L, -2, "key");
    lua_pushlstring(L, kv->value ? kv->value : "", kv->valuelen);
    lua_setfield(L, -2, "value");
    set_int(L, "create_revision", kv->create_rev);
    set_int(L, "mod_revision", kv->mod_rev);
    set_int(L, "version", kv->version);
    set_int(L, "lease", kv->lease);
}

static void push_kvs(lua_State *L, const char *name, const atomrun_etcd_kv *kvs, size_t n)
{
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        push_kv(L, &kvs[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, name);
}

/* One response, with the fields of its op's type (and prev_kvs when the
 * op asked for them: a put's is the one it replaced, none for a new key). */
static void push_response(lua_State *L, const atomrun_etcd_op *op,
                          const atomrun_etcd_op_result *r)
{
    lua_createtable(L, 0, 5);
    lua_pushstring(L, r->type >= 1 && r->type <= 3 ? op_words[r->type - 1] : "?");
    lua_setfield(L, -2, "type");
    if (r->type == ATOMRUN_ETCD_RANGE) {
        push_kvs(L, "kvs", r->kvs, r->nkvs);
        set_int(L, "count", r->count);
        lua_pushboolean(L, r->more);
        lua_setfield(L, -2, "more");
    }
    if (r->type == ATOMRUN_ETCD_DELETE)
        set_int(L, "deleted", r->deleted);
    if (op && op->prev_kv)
        push_kvs(L, "prev_kvs", r->prev_kvs, r->nprev);
}

static void push_result(lua_State *L, const txn_args *a, const atomrun_etcd_txn_result *res)
{
    const atomrun_etcd_op *ops = res->succeeded ? a->then : a->otherwise;
    size_t nops = res->succeeded ? a->nthen : a->nelse;
    lua_createtable(L, 0, 3);
    lua_pushboolean(L, res->succeeded);
    lua_setfield(L, -2, "succeeded");
    set_int(L, "revision", res->revision);
    lua_createtable(L, (int)res->nops, 0);
    for (size_t i = 0; i < res->nops; i++) {
        push_response(L, i < nops ? &ops[i] : NULL, &res->ops[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "responses");
}

/* The result's box: freed by its __gc if a Lua error (out of memory while
 * the answer is pushed) comes first. */
static int result_gc(lua_State *L)
{
    atomrun_etcd_txn_result **box = luaL_checkudata(L, 1, RESULT_MT);
    atomrun_etcd_txn_free(*box);
    *box = NULL;
    return 0;
}

/* ------------------------------------------------------------ the calls */

/* The cluster of url: every call here takes an etcd URL; a name after the
 * endpoints is allowed and ignored (the recipes pass the URL they were
 * given), so "etcd://h:2379" and "etcd://h:2379/" are cluster URLs too.
 * 0 and *c, or the count of nil, msg, code pushed. */
static int open_cluster(lua_State *L, const char *url, int optarg, arL_url **u,
                        atomrun_etcd **c)
{
    const char *rest = strstr(url, "://"), *slash, *why = "not an etcd URL";
    int named = 1;
    if (!arL_isurl(url))
        return arL_fail(L, -EINVAL, "%s: %s", url, why);
    slash = strchr(rest + 3, '/');
    if (!slash || !slash[1]) {      /* no name: give the parser one, then drop it */
        url = lua_pushfstring(L, "%s%s-", url, slash ? "" : "/");
        named = 0;
    }
    *u = lua_newuserdatauv(L, sizeof **u, 0);
    if ((why = arL_parse_url(L, url, *u)) != NULL)
        return arL_fail(L, -EINVAL, "%s", why);
    if (!named)
        (*u)->shown[strlen((*u)->shown) - 2] = '\0';
    return arL_open_client(L, *u, arL_optstr(L, optarg, "ca"), arL_optstr(L, optarg, "cert"),
                           arL_optstr(L, optarg, "key"), c);
}

/*
 * core.etcd.txn(url, t [, opts]) -> {succeeded=, revision=, responses=}
 * | nil, msg, code.  opts: timeout (seconds; default the client's 5),
 * max_request_bytes, ca, cert, key.
 */
static int l_txn(lua_State *L)
{
    static const char *const names[] = { "timeout", "max_request_bytes", "ca", "cert", "key",
                                         NULL };
    const char *url = arL_checkpath(L, 1);
    atomrun_err e;
    atomrun_etcd_txn_result **box;
    atomrun_etcd *c;
    txn_args a;
    arL_url *u;
    double timeout;
    int limit, r;

    arL_checkoptnames(L, 3, names);
    lua_settop(L, 3);
    read_txn(L, &a);
    timeout = arL_optseconds(L, 3, "timeout", 0);
    limit = arL_optrange(L, 3, "max_request_bytes", DEFAULT_REQUEST_LIMIT, 1024, 0x7fffffff,
                         "an integer >= 1024");
    if ((r = open_cluster(L, url, 3, &u, &c)) != 0)
        return r;
    if (a.wire > (size_t)limit)
        return arL_fail(L, -E2BIG, "%s: a txn of about %d bytes (base64 in JSON) is over the "
                        "etcd request limit of %d bytes (option max_request_bytes follows a "
                        "cluster's --max-request-bytes)", u->shown, (int)a.wire, limit);
    box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    luaL_setmetatable(L, RESULT_MT);
    r = atomrun_etcd_txn(c, a.cmp, a.ncmp, a.then, a.nthen, a.otherwise, a.nelse, box,
                         timeout, &e);
    if (r < 0)
        return arL_fail(L, r, "%s: %s", u->shown, e.msg);
    push_result(L, &a, *box);
    atomrun_etcd_txn_free(*box);
    *box = NULL;
    return 1;
}

/*
 * core.etcd.lease(url, ttl [, opts]) -> lease ID | nil, msg, code: the
 * process's session lease for ttl seconds on url's cluster -- the one
 * ttl-bound writes and locks of that ttl share -- granted now if there is
 * none or the last was lost; kept alive while the process runs, revoked at
 * its exit, gone a TTL after a crash.  For recipes that bind their own
 * txn's keys to the process (update's nonce).  opts: timeout, ca, cert, key.
 */
static int l_lease(lua_State *L)
{
    static const char *const names[] = { "timeout", "ca", "cert", "key", NULL };
    const char *url = arL_checkpath(L, 1);
    lua_Integer ttl = luaL_checkinteger(L, 2);
    atomrun_err e;
    atomrun_etcd *c;
    int64_t lease;
    double timeout;
    int r, min_ttl = 0;
    arL_url *u;

    luaL_argcheck(L, ttl >= 1 && ttl <= 1000000, 2, "a whole number of seconds >= 1");
    arL_checkoptnames(L, 3, names);
    lua_settop(L, 3);
    timeout = arL_optseconds(L, 3, "timeout", 0);
    if ((r = open_cluster(L, url, 3, &u, &c)) != 0)
        return r;
    r = atomrun_etcd_session_lease(c, (int)ttl, timeout > 0 ? timeout : 0, &lease, &min_ttl,
                                   &e);
    if (r == -ERANGE && min_ttl > 0)
        return arL_fail(L, r, "%s: ttl %d is below the cluster's minimum lease TTL of %d s",
                        u->shown, (int)ttl, min_ttl);
    if (r < 0)
        return arL_fail(L, r, "%s: %s", u->shown, e.msg);
    lua_pushinteger(L, (lua_Integer)lease);
    return 1;
}

/*
 * core.etcd.revoke(url, lease [, opts]) -> true | nil, msg, code: end the
 * lease now, and with it every key bound to it (a stuck lock's holder's:
 * `atomrun who --revoke`).  opts: timeout, ca, cert, key.  The gateway's
 * revoke has no typed call in the core yet: ar_etcd_call (core/shared.h),
 * whose JSON stays here.
 */
static int l_revoke(lua_State *L)
{
    static const char *const names[] = { "timeout", "ca", "cert", "key", NULL };
    const char *url = arL_checkpath(L, 1);
    lua_Integer id = luaL_checkinteger(L, 2);
    char err[ATOMRUN_ERRLEN] = "", body[48], *out = NULL;
    atomrun_etcd *c;
    double timeout;
    arL_url *u;
    int r;

    luaL_argcheck(L, id > 0, 2, "a lease ID > 0");
    arL_checkoptnames(L, 3, names);
    lua_settop(L, 3);
    timeout = arL_optseconds(L, 3, "timeout", 0);
    if ((r = open_cluster(L, url, 3, &u, &c)) != 0)
        return r;
    snprintf(body, sizeof body, "{\"ID\":\"%lld\"}", (long long)id);
    r = ar_etcd_call(c, "/v3/lease/revoke", body,
                     timeout > 0 ? ar_now() + timeout : 0, &out, err, sizeof err);
    free(out);
    if (r < 0)
        return arL_fail(L, r, "%s: %s", u->shown, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* core.etcd.PREFIX: where atomrun's keys live (atomrun.h). */
static void push_prefixes(lua_State *L)
{
    lua_createtable(L, 0, 4);
    lua_pushliteral(L, ATOMRUN_ETCD_LOCK_PREFIX);
    lua_setfield(L, -2, "lock");
    lua_pushliteral(L, ATOMRUN_ETCD_CREATOR_PREFIX);
    lua_setfield(L, -2, "creator");
    lua_pushliteral(L, ATOMRUN_ETCD_NONCE_PREFIX);
    lua_setfield(L, -2, "nonce");
    lua_pushliteral(L, ATOMRUN_ETCD_ALIVE_PREFIX);
    lua_setfield(L, -2, "alive");
}

void arL_openetcdtxn(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "txn", l_txn },
        { "lease", l_lease },
        { "revoke", l_revoke },
        { NULL, NULL } };
    if (luaL_newmetatable(L, RESULT_MT)) {
        lua_pushcfunction(L, result_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    push_prefixes(L);
    lua_setfield(L, -2, "PREFIX");
    lua_setfield(L, -2, "etcd");
}
