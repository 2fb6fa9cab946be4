/*
 * bind/etcd_kv.c -- etcd keys in the binding: create/replace/read on an etcd
 * name (the value read whole from a string, a file or a reader, and the
 * request's size limit), the watch stream (core._etcd_watch) and the read
 * of a lock's queue (core._etcd_queue).  URLs and clients: bind/etcd.c.
 */
#define _GNU_SOURCE
#include "bind/bind.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * core._etcd_queue(url [, opts]) -> {holder...}, holders first: all of
 * them.  The first read has room for 64; a longer queue (a 200-slot
 * semaphore) is read again into a buffer of its size, as many times as it
 * grows meanwhile.  The buffers are userdata, so a Lua error frees them.
 */
int arL_etcd_queue(lua_State *L)
{
    static const char *const names[] = { "ca", "cert", "key", NULL };
    const char *url = arL_checkpath(L, 1), *why = "not an etcd URL";
    atomrun_etcd *c;
    atomrun_etcd_holder *h;
    atomrun_err e;
    arL_url *u;
    int r, n = 0, room = 64, i;
    arL_checkoptnames(L, 2, names);
    lua_settop(L, 2);
    u = lua_newuserdatauv(L, sizeof *u, 0);
    if (!arL_isurl(url) || (why = arL_parse_url(L, url, u)) != NULL)
        return arL_fail(L, -EINVAL, "%s", why);
    if ((r = arL_open_client(L, u, arL_optstr(L, 2, "ca"), arL_optstr(L, 2, "cert"),
                             arL_optstr(L, 2, "key"), &c)) != 0)
        return r;
    for (;;) {
        h = lua_newuserdatauv(L, sizeof *h * (size_t)room, 0);
        r = atomrun_etcd_queue(c, u->name, h, room, &n, &e);
        if (r < 0)
            return arL_fail(L, r, "%s: %s", u->shown, e.msg);
        if (n <= room)
            break;
        lua_pop(L, 1);
        room = n + 16;
    }
    lua_createtable(L, n, 1);
    for (i = 0; i < n; i++) {
        arL_pushrholder(L, &h[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
    return 1;
}

/* ------------------------------------------- keys: create/replace/read
 *
 * The file calls on an etcd name (issue 16): the key is the URL's name as
 * written ("etcd://h:p/claims/job-42" -> key "claims/job-42"), so etcdctl and
 * other clients see the same key.  Each write is ONE txn (etcd/kv.c): its
 * conditions (create-only, fence) and the put cannot be split by another
 * writer.  Values are any bytes.
 */

/* etcd refuses a request over --max-request-bytes (1.5 MiB by default) and
 * the value travels base64 inside JSON: 4/3 of its size plus the key and the
 * txn's framing.  Refused before sending, so a too-big value never costs a
 * round trip or half a txn; opts.max_request_bytes follows a cluster started
 * with another limit. */
#define AR_MAX_REQUEST_BYTES (1536 * 1024)
#define AR_TXN_FRAMING 512

static size_t b64len(size_t n) { return (n + 2) / 3 * 4; }

static int toobig(lua_State *L, const char *shown, size_t len, lua_Integer limit)
{
    return arL_fail(L, -E2BIG, "%s: a value of %d bytes is over the etcd request "
                    "limit of %d bytes (base64 in JSON: %d bytes; option "
                    "max_request_bytes follows a cluster's --max-request-bytes)",
                    shown, (int)len, (int)limit,
                    (int)(b64len(len) + AR_TXN_FRAMING));
}

/* The server's own size error ("etcdserver: request is too large") is the
 * same condition: the same clear message, however the limit was set. */
static int is_toobig_answer(const char *err)
{
    return strstr(err, "too large") != NULL;
}

/* What create's creator record adds to the txn at most (etcd/kv.c: the
 * record's host, pid, command and time, base64, put and read back). */
#define AR_CREATOR_FRAMING 1536

/* "cannot create URL: it exists, created by pid 4121 on web-3 (job.sh) at
 * 2026-...Z (revision 57, version 2)", and the facts as a 4th value:
 * {create_revision, mod_revision, version, pid, host, cmd, since}; pid and
 * the rest absent when no creator record matches the key (made by etcdctl
 * or a replace, or made again after a delete). */
static int fail_exists(lua_State *L, const char *shown, const atomrun_etcd_put_result *po)
{
    const atomrun_etcd_holder *h = &po->creator;
    char since[32];
    if (h->pid > 0)
        arL_fail(L, -EEXIST, "cannot create %s: it exists, created by pid %d on %s%s%s%s "
                 "at %s (revision %d, version %d)", shown, (int)h->pid,
                 h->host[0] ? h->host : "?", h->cmd[0] ? " (" : "", h->cmd,
                 h->cmd[0] ? ")" : "",
                 arL_utc_text(since, sizeof since, h->since) ? since : "an unknown time",
                 (int)po->existing.create_rev, (int)po->existing.version);
    else
        arL_fail(L, -EEXIST, "cannot create %s: it exists (created at revision %d, "
                 "version %d, by a writer that left no creator record: not "
                 "atomrun.create)", shown, (int)po->existing.create_rev,
                 (int)po->existing.version);
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, (lua_Integer)po->existing.create_rev);
    lua_setfield(L, -2, "create_revision");
    lua_pushinteger(L, (lua_Integer)po->existing.mod_rev);
    lua_setfield(L, -2, "mod_revision");
    lua_pushinteger(L, (lua_Integer)po->existing.version);
    lua_setfield(L, -2, "version");
    if (h->pid > 0)
        arL_setwriter(L, h);
    return 4;
}

typedef struct kvreq {
    arL_url                 *u;
    atomrun_etcd           *c;
    atomrun_etcd_put_opts po;
    lua_Integer             limit;
} kvreq;

/* opts.fence at arg: NULL, or the etcd lock it holds; a released one is
 * "lost" (the count of nil, msg, code pushed).  Any other type is the same
 * mistake as a file lock: one message. */
static int optfence(lua_State *L, int arg, const char *url,
                       const atomrun_etcd_lock **fence)
{
    const atomrun_etcd_lock *l;
    *fence = NULL;
    if (lua_isnoneornil(L, arg))
        return 0;
    if (lua_getfield(L, arg, "fence") == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    if (!arL_testetcdlock(L, -1, &l))
        luaL_argerror(L, arg, "option 'fence' must be a lock on an etcd name");
    lua_pop(L, 1);
    if (!l)
        return arL_fail(L, ATOMRUN_ELOST, "%s: not written: the fence lock was "
                        "already released", url);
    *fence = l;
    return 0;
}

/* Parse url and the write options at arg; 0 or the count of a failure
 * already pushed (nil, msg, code). */
static int kvsetup(lua_State *L, int arg, int write, kvreq *q)
{
    static const char *const wnames[] = { "ttl", "fence", "max_request_bytes", "ca",
                                          "cert", "key", "durable", "mode", "follow",
                                          NULL };
    static const char *const rnames[] = { "ca", "cert", "key", NULL };
    const char *url = arL_checkpath(L, 1), *why;
    int r;

    arL_checkoptnames(L, arg, write ? wnames : rnames);
    atomrun_etcd_put_opts_init(&q->po);
    q->limit = AR_MAX_REQUEST_BYTES;
    if (write) {
        q->po.ttl = arL_optposint(L, arg, "ttl", 0, "a whole number of seconds >= 1");
        if ((r = optfence(L, arg, url, &q->po.fence)) != 0)
            return r;
        if (arL_opt(L, arg, "max_request_bytes", LUA_TNUMBER) != LUA_TNIL) {
            int isint;
            q->limit = lua_tointegerx(L, -1, &isint);
            lua_pop(L, 1);
            if (!isint || q->limit < 1024)
                luaL_argerror(L, arg, "option 'max_request_bytes' must be an integer >= 1024");
        }
        /* durable/mode/follow mean nothing on a key (etcd is durable by
         * itself); accepted so a recipe written for a file runs unchanged. */
    }
    q->u = lua_newuserdatauv(L, sizeof *q->u, 0);   /* freed by the GC */
    if ((why = arL_parse_url(L, url, q->u)) != NULL)
        return arL_fail(L, -EINVAL, "%s", why);
    if ((r = arL_open_client(L, q->u, arL_optstr(L, arg, "ca"), arL_optstr(L, arg, "cert"),
                             arL_optstr(L, arg, "key"), &q->c)) != 0)
        return r;
    return 0;
}

/*
 * A value given as an open io file or a reader function (what create and
 * replace take for files, so a recipe written for a file runs unchanged on
 * a key), read whole -- etcd takes a value in one request -- into a string
 * that replaces it at arg.  Reading stops once past limit bytes: the
 * caller refuses that as too big.  Nothing is written before this returns,
 * so a reader's error simply goes on.  0, or the count of nil, msg, code
 * pushed (the file could not be read).
 */
static int slurpvalue(lua_State *L, int arg, size_t limit, const char *shown, int create)
{
    luaL_Stream *p = luaL_testudata(L, arg, LUA_FILEHANDLE);
    luaL_Buffer b;

    if (p && !p->closef)
        return luaL_argerror(L, arg, "attempt to use a closed file");
    luaL_buffinit(L, &b);
    while (luaL_bufflen(&b) <= limit) {
        if (p) {
            char *dst = luaL_prepbuffer(&b);
            size_t n;
            errno = 0;              /* ferror() below: this read's errno only */
            n = fread(dst, 1, LUAL_BUFFERSIZE, p->f);
            luaL_addsize(&b, n);
            if (n == LUAL_BUFFERSIZE)
                continue;
            if (ferror(p->f)) {
                int e = errno ? -errno : -EIO;
                clearerr(p->f);
                return arL_fail(L, e, "cannot %s %s: reading the new contents from the "
                                "file failed: %s", create ? "create" : "replace", shown,
                                atomrun_strerror(e));
            }
            break;                              /* EOF */
        }
        lua_pushvalue(L, arg);
        lua_call(L, 0, 1);
        if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) == 0)) {
            lua_pop(L, 1);
            break;
        }
        if (lua_type(L, -1) != LUA_TSTRING)
            return luaL_argerror(L, arg, lua_pushfstring(L, "the reader function must "
                                 "return strings, then nil or \"\"; it returned a %s",
                                 luaL_typename(L, -1)));
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_replace(L, arg);
    return 0;
}

static int kvput(lua_State *L, int create)
{
    atomrun_etcd_put_result out;
    atomrun_err e;
    const char *err = e.msg;
    const char *data = "";
    size_t len = 0;
    int t = lua_type(L, 2), r;
    kvreq q;

    if (!(create && t == LUA_TNONE) && !(create && t == LUA_TNIL) && t != LUA_TSTRING &&
        t != LUA_TFUNCTION && !luaL_testudata(L, 2, LUA_FILEHANDLE))
        return luaL_typeerror(L, 2, create ? "string, file, reader function or nil (an etcd value)"
                                           : "string, file or reader function (an etcd value)");
    lua_settop(L, 3);
    if ((r = kvsetup(L, 3, 1, &q)) != 0)
        return r;
    if (t == LUA_TFUNCTION || t == LUA_TUSERDATA) {
        if ((r = slurpvalue(L, 2, (size_t)q.limit, q.u->shown, create)) != 0)
            return r;
        /* The reader ran the caller's code: it may have released the fence
         * (and the collector freed it).  Look again. */
        if (q.po.fence && (r = optfence(L, 3, q.u->shown, &q.po.fence)) != 0)
            return r;
    }
    if (!lua_isnil(L, 2))
        data = lua_tolstring(L, 2, &len);
    if (b64len(len) + strlen(q.u->name) * (create ? 6 : 2) + AR_TXN_FRAMING +
        (create ? AR_CREATOR_FRAMING : 0) > (size_t)q.limit)
        return toobig(L, q.u->shown, len, q.limit);
    q.po.create_only = create;
    r = atomrun_etcd_put(q.c, q.u->name, data, len, &q.po, &out, 0, &e);
    if (r == -EEXIST)
        return fail_exists(L, q.u->shown, &out);
    if (r < 0 && is_toobig_answer(err))
        return toobig(L, q.u->shown, len, q.limit);
    if (r < 0)
        return arL_fail(L, r, "%s: %s", q.u->shown, err[0] ? err : atomrun_strerror(r));
    lua_pushboolean(L, 1);
    return 1;
}

/* atomrun.create(url, data [, opts]) for an etcd name (from bind/file.c). */
int arL_etcd_create(lua_State *L) { return kvput(L, 1); }

/* atomrun.replace(url, data [, opts]) for an etcd name (from bind/file.c). */
int arL_etcd_replace(lua_State *L) { return kvput(L, 0); }

static void pushkv(lua_State *L, const atomrun_etcd_kv_meta *kv)
{
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)kv->create_rev);
    lua_setfield(L, -2, "create_revision");
    lua_pushinteger(L, (lua_Integer)kv->mod_rev);
    lua_setfield(L, -2, "mod_revision");
    lua_pushinteger(L, (lua_Integer)kv->version);
    lua_setfield(L, -2, "version");
    lua_pushinteger(L, (lua_Integer)kv->lease);
    lua_setfield(L, -2, "lease");
}

/* atomrun.read(url [, opts]) for an etcd name (from bind/file.c); a second
 * result, the key's revisions, for update (the read it compares against). */
int arL_etcd_read(lua_State *L)
{
    atomrun_err e;
    const char *err = e.msg;
    char *data;
    atomrun_etcd_kv_meta kv;
    size_t len;
    kvreq q;
    int r;

    lua_settop(L, 2);
    if ((r = kvsetup(L, 2, 0, &q)) != 0)
        return r;
    r = atomrun_etcd_get(q.c, q.u->name, &data, &len, &kv, 0, &e);
    if (r == -ENOENT)
        return arL_fail(L, r, "cannot read %s: no such key", q.u->shown);
    if (r < 0)
        return arL_fail(L, r, "cannot read %s: %s", q.u->shown,
                        err[0] ? err : atomrun_strerror(r));
    lua_pushlstring(L, data, len);
    free(data);
    pushkv(L, &kv);
    return 2;
}

/* core._etcd_watch(url, start_revision, seconds, fn [, opts]) -> 1 (fn
 * asked to stop) | 0 (time up, the stream broke or the server cancelled
 * it: look again) | nil, msg, code.  Watches the URL's key, or every key
 * under it when the name ends in "/".  opts: ca, cert, key, as for the
 * other calls (else ATOMRUN_ETCD_CA/_CERT/_KEY).  fn(events) runs for
 * each result of the stream, its events as tables (keys and values as
 * bytes: no base64 and no JSON reach Lua); true from fn stops.  fn runs inside curl's write callback,
 * so it is called with lua_pcall: an error must not longjmp through curl.
 * It is raised again once curl has returned. */
typedef struct watchud {
    lua_State *L;
    int        fn;          /* stack index of fn */
    int        failed;      /* fn raised: its error is on the stack top */
} watchud;

/* The events as Lua tables: {key=, value=, mod_revision=,
 * create_revision=, version=} or {deleted = true, key=, mod_revision=}. */
static void pushevents(lua_State *L, const atomrun_etcd_event *ev, size_t n)
{
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        const atomrun_etcd_kv *kv = &ev[i].kv;
        lua_createtable(L, 0, 6);
        lua_pushlstring(L, kv->key, kv->keylen);
        lua_setfield(L, -2, "key");
        lua_pushinteger(L, kv->mod_rev);
        lua_setfield(L, -2, "mod_revision");
        if (ev[i].deleted) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "deleted");
        } else {
            lua_pushlstring(L, kv->value, kv->valuelen);
            lua_setfield(L, -2, "value");
            lua_pushinteger(L, kv->create_rev);
            lua_setfield(L, -2, "create_revision");
            lua_pushinteger(L, kv->version);
            lua_setfield(L, -2, "version");
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

static int onwatch(void *ud, const atomrun_etcd_event *ev, size_t n)
{
    watchud *w = ud;
    int stop;
    lua_pushvalue(w->L, w->fn);
    pushevents(w->L, ev, n);
    if (lua_pcall(w->L, 1, 1, 0) != LUA_OK) {
        w->failed = 1;      /* leave the error object on the stack */
        return 1;
    }
    stop = lua_toboolean(w->L, -1);
    lua_pop(w->L, 1);
    return stop;
}

int arL_etcd_watch(lua_State *L)
{
    static const char *const names[] = { "ca", "cert", "key", NULL };
    const char *url = arL_checkpath(L, 1), *why = "not an etcd URL";
    lua_Integer start = luaL_checkinteger(L, 2);
    double secs = luaL_checknumber(L, 3);
    atomrun_err e;
    const char *err = e.msg;
    atomrun_etcd *c;
    watchud w;
    arL_url *u;
    int r;

    luaL_checktype(L, 4, LUA_TFUNCTION);
    arL_checkoptnames(L, 5, names);
    lua_settop(L, 5);
    u = lua_newuserdatauv(L, sizeof *u, 0);
    if (!arL_isurl(url) || (why = arL_parse_url(L, url, u)) != NULL)
        return arL_fail(L, -EINVAL, "%s", why);
    if ((r = arL_open_client(L, u, arL_optstr(L, 5, "ca"), arL_optstr(L, 5, "cert"),
                             arL_optstr(L, 5, "key"), &c)) != 0)
        return r;
    w.L = L;
    w.fn = 4;
    w.failed = 0;
    r = atomrun_etcd_watch(c, u->name, (int64_t)start, secs, onwatch, &w, &e);
    if (w.failed)
        return lua_error(L);
    if (r < 0)
        return arL_fail(L, r, "%s: %s", u->shown, err[0] ? err : atomrun_strerror(r));
    lua_pushinteger(L, r);
    return 1;
}
