/*
 * bind/etcd_lock.c -- the etcd lock handle (src/etcd/session.c,
 * etcd/lock.c).  atomrun.lock(name, opts) comes here when name has a scheme
 * (bind/lock.c asks arL_isurl), so the recipes that call atomrun.lock take
 * etcd names unchanged and every message names 'lock' as for files.  The
 * handle has the shape of a file lock's -- lk:unlock(), <close>/__gc,
 * lk.path, lk.mode -- plus lk.token, lk.index, lk.name, lk.key, lk.lease,
 * lk:lost(), lk:guard().  Also the holders pushed to Lua (a lock's, a key's
 * creator).
 *
 * A held lock is in the state's held set with the file locks (kind
 * AR_HELD_ETCD), so that asking again for a name the state holds is
 * "deadlock" at once (as for files) instead of a wait for ourselves.
 */
#define _GNU_SOURCE
#include "bind/bind.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AR_RLOCK_MT "atomrun.etcd_lock"

typedef struct rlock {
    /* In the state's held set while l is held: kind AR_HELD_ETCD, the
     * mode and slots asked for, the granting cluster's id, the name (user
     * value 2 keeps it alive).  The first member (see held_rlock). */
    ar_held         held;
    const char          *canon;    /* the endpoints made canonical (user
                                      value 3) */
    atomrun_etcd_lock   *l;        /* NULL once released */
    /* Released, but no member answered yet (atomrun_etcd_lock_release's
     * ATOMRUN_EUNAVAILABLE): a later unlock() asks it how it went. */
    atomrun_etcd_lock   *pending;
} rlock;

/* ------------------------------------------------------ the held set */

/*
 * Every lock a Lua state holds is in its held set (arL_heldset), etcd names
 * with files, so that asking for one it holds is "deadlock" at once (the
 * core's ar_heldset_conflict decides, as for files) instead of a wait
 * for ourselves.  A name is held on a cluster, known by its id: one
 * cluster is written many ways -- its endpoints in another order, one
 * twice, a host in capitals, another subset of its members.  A request
 * learns its cluster's id only when the state holds its name somewhere:
 * from a held lock reached through the same endpoints (made canonical:
 * free to compare), else by asking the cluster (one read).
 */

static int strpcmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The canonical spelling of the endpoint p (len bytes) into dst, which has
 * room for len + CANON_EXTRA: the host lower-cased, ':' and the port as a
 * plain number.  The length written. */
#define CANON_EXTRA 24              /* ':', a long's digits and sign, NUL */
static size_t canon_one(char *dst, const char *p, size_t len)
{
    size_t host = len, i;
    for (i = len; i > 0; i--)
        if (p[i - 1] == ':') {              /* the last ':' ends an IPv6 host */
            host = i - 1;
            break;
        }
    for (i = 0; i < host; i++)
        dst[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] - 'A' + 'a' : p[i]);
    return host + (size_t)snprintf(dst + host, CANON_EXTRA, ":%ld",
                                   host < len ? strtol(p + host + 1, NULL, 10) : 0L);
}

/* Push eps ("h1:p1,h2:p2", checked by the client already) as one spelling
 * per set: each host lower-cased (host names and IPv6 hex digits are
 * case-blind), each port a plain number, sorted, repeats dropped.  The
 * room is counted from eps itself: a fixed one (it was 32 endpoints of
 * 256-byte hosts) cut lists short, and two lists alike up to the cut were
 * one cluster to the deadlock check -- "deadlock" for a lock on another.
 * The room is a userdata, so a Lua error frees it. */
static const char *pushcanon(lua_State *L, const char *eps)
{
    size_t n = 1, len = strlen(eps), k = 0;
    char **sorted, *out;
    luaL_Buffer b;
    for (const char *p = eps; *p; p++)
        n += *p == ',';
    sorted = lua_newuserdatauv(L, n * sizeof *sorted + len + n * CANON_EXTRA, 0);
    out = (char *)(sorted + n);
    for (const char *p = eps; *p && k < n;) {
        size_t one = strcspn(p, ",");
        sorted[k++] = out;
        out += canon_one(out, p, one) + 1;
        p += one;
        if (*p == ',')
            p++;
    }
    qsort(sorted, k, sizeof *sorted, strpcmp);
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < k; i++) {
        if (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0)
            continue;
        if (luaL_bufflen(&b) > 0)
            luaL_addchar(&b, ',');
        luaL_addstring(&b, sorted[i]);
    }
    luaL_pushresult(&b);
    lua_remove(L, -2);              /* the room; the result is its own string */
    return lua_tostring(L, -1);
}

/* The handle of a held etcd lock: the set holds only these and the file
 * handles of bind/lock.c, told apart by kind. */
static const rlock *held_rlock(const ar_held *h)
{
    return (const rlock *)h;        /* held is the first member */
}

/* Fill req->cluster for a request on u's cluster (canon: its endpoints
 * made canonical) when the state holds the name on some cluster: 1, or 0
 * when no lock held can be in its way (or the cluster cannot say its id:
 * the lock request that follows meets the same silence and says so). */
static int request_cluster(ar_heldset *set, atomrun_etcd *c,
                           const char *canon, double timeout,
                           ar_held *req)
{
    int same_name = 0;
    for (const ar_held *h = set->head.next; h != &set->head; h = h->next) {
        if (h->kind != AR_HELD_ETCD || h->namelen != req->namelen ||
            memcmp(h->name, req->name, req->namelen) != 0)
            continue;
        /* Same endpoints, same cluster: its id without asking.  A lock
         * granted by an answer without an id (etcd always sends one; a
         * proxy might not) has 0 here, and a request taking that 0 meets
         * every such lock of the name: two id-less clusters under one
         * name would be one cluster to this check. */
        if (strcmp(held_rlock(h)->canon, canon) == 0) {
            req->cluster = h->cluster;
            return 1;
        }
        same_name = 1;
    }
    if (!same_name)
        return 0;
    /* Held under another spelling: of this cluster? */
    return atomrun_etcd_cluster_id(c, timeout > 0 ? timeout : 0, &req->cluster, NULL) == 0;
}

/* Does this state already hold what o asks for on u's cluster? */
static int waits_on_self(lua_State *L, atomrun_etcd *c, const arL_url *u,
                         const char *canon, const atomrun_etcd_lock_opts *o)
{
    ar_heldset *set = arL_heldset(L);
    ar_held req;
    memset(&req, 0, sizeof req);
    req.kind = AR_HELD_ETCD;
    req.mode = o->mode;
    req.fd = -1;
    req.name = u->name;
    req.namelen = strlen(u->name);
    req.slots = o->slots;
    return request_cluster(set, c, canon, o->timeout, &req) &&
           ar_heldset_conflict(set, &req) != NULL;
}

/* ------------------------------------------------------------- handle */

static rlock *checkrlock(lua_State *L, int i)
{
    return luaL_checkudata(L, i, AR_RLOCK_MT);
}

/* The remote lock behind the etcd lock handle at index i, for run()'s
 * guard option: an error naming the option for anything else, and for a
 * handle already released (there is nothing left to guard). */
atomrun_etcd_lock *arL_checkguard(lua_State *L, int i, int arg)
{
    rlock *lk = luaL_testudata(L, i, AR_RLOCK_MT);
    if (!lk)
        luaL_argerror(L, arg, lua_pushfstring(L, "option 'guard' must be an etcd "
                      "lock (atomrun.lock(\"etcd://...\")), not a %s", luaL_typename(L, i)));
    if (!lk->l)
        luaL_argerror(L, arg, "option 'guard': the lock is already released");
    return lk->l;
}

/* Release lk (held or pending); the core's result, err filled. */
static int rlock_release(rlock *lk, atomrun_err *err)
{
    atomrun_etcd_lock *l = lk->l ? lk->l : lk->pending;
    int r;
    if (!l)
        return 0;
    if (lk->l) {
        lk->l = NULL;
        ar_heldset_remove(&lk->held);
    }
    r = atomrun_etcd_lock_release(l, err);
    lk->pending = r == ATOMRUN_EUNAVAILABLE ? l : NULL;
    return r;
}

/* lk:unlock() -> true | nil, msg, code.  Idempotent as for files, but never
 * a blind true: after a release whose answer did not come, each call says
 * how it stands then ("unavailable" while it is retried, true once a
 * member answered). */
static int rlock_unlock(lua_State *L)
{
    rlock *lk = checkrlock(L, 1);
    atomrun_err e;
    int r = rlock_release(lk, &e);
    if (r < 0) {
        lua_getiuservalue(L, 1, 1);
        return arL_fail(L, r, "%s: %s", lua_tostring(L, -1), e.msg);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* <close>: released; a pending release is kept for a later unlock(). */
static int rlock_close(lua_State *L)
{
    rlock *lk = checkrlock(L, 1);
    if (lk->l)
        rlock_release(lk, NULL);
    return 0;
}

static int rlock_gc(lua_State *L)
{
    rlock *lk = checkrlock(L, 1);
    rlock_close(L);
    if (lk->pending)                /* its retry goes on without us */
        atomrun_etcd_lock_free(lk->pending);
    lk->pending = NULL;
    return 0;
}

/* lk:lost() -> false | the reason (a string): cheap, no network. */
static int rlock_lost(lua_State *L)
{
    rlock *lk = checkrlock(L, 1);
    atomrun_err why;
    if (!lk->l) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (atomrun_etcd_lock_lost(lk->l, &why) < 0)
        lua_pushstring(L, why.msg);
    else
        lua_pushboolean(L, 0);
    return 1;
}

/* lk:guard(pid [, kill_after]) -> true: a watchdog process ends process
 * group pid (a command run in its own group; 0: every child of this
 * process) before the lease can expire: SIGTERM, then SIGKILL kill_after
 * seconds later (default TTL/4, at most 5; it must fit: at most TTL/2 -
 * 0.25), SIGKILL at once when the lease is gone or this process dies.
 * lk:unguard() -> false | "term" | "kill": what the guard did; unlock
 * stops it too. */
static int rlock_guard(lua_State *L)
{
    rlock *lk = checkrlock(L, 1);
    lua_Integer pid = luaL_checkinteger(L, 2);
    lua_Number ka = luaL_optnumber(L, 3, -1);
    int r;
    if (pid < 0 || pid == 1 || pid > 0x7fffffff)
        luaL_argerror(L, 2, "a process id > 1 (or 0: every child) expected");
    if (!(ka >= 0) && !lua_isnoneornil(L, 3))
        luaL_argerror(L, 3, "seconds >= 0 expected");
    if (!lk->l)
        return arL_fail(L, -EINVAL, "the lock is released");
    r = atomrun_etcd_lock_guard(lk->l, (pid_t)pid, ka);
    if (r == -ERANGE) {
        double most = ar_etcd_lockinfo(lk->l).ttl / 2.0 - ATOMRUN_ETCD_GUARD_MARGIN;
        char a[32], m[32];
        snprintf(a, sizeof a, "%g", ka);
        snprintf(m, sizeof m, "%g", most);
        luaL_argerror(L, 3, lua_pushfstring(L, "%s s does not fit in a TTL of %d s: at "
                      "most %s s", a, ar_etcd_lockinfo(lk->l).ttl, m));
    }
    if (r < 0)
        return arL_fail(L, r, "cannot guard pid %d: %s", (int)pid, atomrun_strerror(r));
    lua_pushboolean(L, 1);
    return 1;
}

static int rlock_unguard(lua_State *L)
{
    rlock *lk = checkrlock(L, 1);
    int r = lk->l ? atomrun_etcd_lock_unguard(lk->l) : 0;
    if (r == 0)
        lua_pushboolean(L, 0);
    else
        lua_pushstring(L, r == 1 ? "term" : "kill");   /* 2, 3: KILL was sent */
    return 1;
}

static int rlock_tostring(lua_State *L)
{
    rlock *lk = checkrlock(L, 1);
    lua_getiuservalue(L, 1, 1);
    if (lk->l)
        lua_pushfstring(L, "atomrun.etcd_lock (%s, %s, token %I)", lua_tostring(L, -1),
                        arL_modename(lk->held.mode),
                        (lua_Integer)atomrun_etcd_lock_token(lk->l));
    else
        lua_pushfstring(L, "atomrun.etcd_lock (%s, released)", lua_tostring(L, -1));
    return 1;
}

static int rlock_path(lua_State *L)
{
    checkrlock(L, 1);
    lua_getiuservalue(L, 1, 1);
    return 1;
}

static int rlock_name(lua_State *L)
{
    checkrlock(L, 1);
    lua_getiuservalue(L, 1, 2);
    return 1;
}

static int rlock_mode(lua_State *L)
{
    lua_pushstring(L, arL_modename(checkrlock(L, 1)->held.mode));
    return 1;
}

/* token, index, key, lease: kept after release (a fenced write that
 * failed may want to say which token it had), in user value 4. */
static int rlock_fact(lua_State *L, const char *name)
{
    checkrlock(L, 1);
    lua_getiuservalue(L, 1, 4);
    lua_getfield(L, -1, name);
    return 1;
}

static int rlock_token(lua_State *L) { return rlock_fact(L, "token"); }
static int rlock_index(lua_State *L) { return rlock_fact(L, "index"); }
static int rlock_key(lua_State *L)   { return rlock_fact(L, "key"); }
static int rlock_lease(lua_State *L) { return rlock_fact(L, "lease"); }

static int rlock_locked(lua_State *L)
{
    lua_pushboolean(L, checkrlock(L, 1)->l != NULL);
    return 1;
}

/* ------------------------------------------------------------- holders */

/* A holder's since (epoch seconds, > 0) as the records write it,
 * "2026-12-07T20:08:00Z", for the messages. */
const char *arL_utc_text(char *buf, size_t size, int64_t since)
{
    time_t t = (time_t)since;
    struct tm tm;
    if (since <= 0 || !gmtime_r(&t, &tm) ||
        strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return NULL;
    return buf;
}

/* The writer's fields (a lock holder's, a key's creator's) into the table
 * on top: pid (when known), host, cmd, since (epoch seconds, when known). */
void arL_setwriter(lua_State *L, const atomrun_etcd_holder *h)
{
    lua_Integer since = (lua_Integer)h->since;
    if (h->pid > 0) {
        lua_pushinteger(L, h->pid);
        lua_setfield(L, -2, "pid");
    }
    lua_pushstring(L, h->host);
    lua_setfield(L, -2, "host");
    lua_pushstring(L, h->cmd);
    lua_setfield(L, -2, "cmd");
    if (since > 0) {
        lua_pushinteger(L, since);
        lua_setfield(L, -2, "since");
    }
}

/* A lock key without an atomrun record (etcdctl lock, clientv3's Mutex,
 * any other client): the core leaves pid 0 and host "". */
static int is_foreign(const atomrun_etcd_holder *h)
{
    return h->pid == 0 && !h->host[0];
}

/* "an etcd client without an atomrun record, lease 694d7c3a2e1f0b04": all
 * that is known of such a holder (with its token). */
static void pushforeign(lua_State *L, const atomrun_etcd_holder *h)
{
    char text[96];
    snprintf(text, sizeof text, "an etcd client without an atomrun record, lease %llx",
             (unsigned long long)h->lease);
    lua_pushstring(L, text);
}

void arL_pushrholder(lua_State *L, const atomrun_etcd_holder *h)
{
    char lease[24];
    lua_createtable(L, 0, 8);
    arL_setwriter(L, h);
    if (h->token && is_foreign(h)) {
        pushforeign(L, h);
        lua_setfield(L, -2, "foreign");
    }
    lua_pushinteger(L, (lua_Integer)h->token);
    lua_setfield(L, -2, "token");
    lua_pushstring(L, h->slots > 0 ? "semaphore" : arL_modename(h->mode));
    lua_setfield(L, -2, "mode");
    if (h->slots > 0) {
        lua_pushinteger(L, h->slots);
        lua_setfield(L, -2, "slots");
    }
    if (h->waiting) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "waiting");
    }
    lua_pushstring(L, h->key);
    lua_setfield(L, -2, "key");
    snprintf(lease, sizeof lease, "%llx", (unsigned long long)h->lease);
    lua_pushstring(L, lease);
    lua_setfield(L, -2, "lease");
}

/* "pid 4121 on web-3 (backup.sh) since 2026-...", and with say_kind what
 * kind of lock it has (", as a shared lock"). */
static void pushholdertext(lua_State *L, const atomrun_etcd_holder *h, int say_kind)
{
    char since[32];
    luaL_Buffer b;
    if (is_foreign(h)) {
        pushforeign(L, h);
        lua_pushfstring(L, "%s (token %I)", lua_tostring(L, -1), (lua_Integer)h->token);
        lua_remove(L, -2);
        return;
    }
    luaL_buffinit(L, &b);
    if (h->pid > 0)
        lua_pushfstring(L, "pid %d on %s", (int)h->pid, h->host[0] ? h->host : "?");
    else
        lua_pushfstring(L, "a holder on %s", h->host[0] ? h->host : "?");
    luaL_addvalue(&b);
    if (h->cmd[0]) {
        lua_pushfstring(L, " (%s)", h->cmd);
        luaL_addvalue(&b);
    }
    if (arL_utc_text(since, sizeof since, h->since)) {
        lua_pushfstring(L, " since %s", since);
        luaL_addvalue(&b);
    }
    if (say_kind && h->slots > 0)
        lua_pushfstring(L, ", as a slot of a semaphore of %d", h->slots);
    else if (say_kind)
        lua_pushfstring(L, ", as %s lock", h->mode == ATOMRUN_SHARED ? "a shared" : "an exclusive");
    if (say_kind)
        luaL_addvalue(&b);
    luaL_pushresult(&b);
}

/* ------------------------------------------------------------- lock */

/* lock()'s options into o; the TLS file names into tls[3] (ca, cert, key). */
static void lock_options(lua_State *L, int arg, atomrun_etcd_lock_opts *o, const char *tls[3])
{
    static const char *const names[] = { "mode", "wait", "timeout", "ttl", "holder",
                                         "cmd", "ca", "cert", "key", "slots", NULL };
    arL_checkoptnames(L, arg, names);
    atomrun_etcd_lock_opts_init(o);
    arL_optmodewait(L, arg, &o->mode, &o->timeout);
    o->ttl = arL_optposint(L, arg, "ttl", 10, "a whole number of seconds >= 1");
    o->slots = arL_optposint(L, arg, "slots", 1, "an integer >= 1");
    arL_optbool(L, arg, "holder", 1);  /* accepted: the holder is always known */
    o->cmd = arL_optstr(L, arg, "cmd");
    tls[0] = arL_optstr(L, arg, "ca");
    tls[1] = arL_optstr(L, arg, "cert");
    tls[2] = arL_optstr(L, arg, "key");
    if (o->mode == ATOMRUN_SHARED && o->slots != 1)
        luaL_argerror(L, arg, "a shared etcd lock has one slot");
}

/* The acquire failed with r: nil, msg, code, and for busy and timeout the
 * holder table (for a TTL below the cluster's minimum, that minimum). */
static int lock_failed(lua_State *L, const arL_url *u, const atomrun_etcd_lock_opts *o, int r,
                       const atomrun_etcd_holder *h, int min_ttl, const atomrun_err *e)
{
    if ((r == ATOMRUN_EBUSY || r == ATOMRUN_ETIMEOUT) && h->token) {
        /* The kind is news unless an exclusive lock meets one. */
        pushholdertext(L, h, h->slots > 0 || h->mode == ATOMRUN_SHARED
                       || o->slots > 1 || o->mode == ATOMRUN_SHARED);
        if (r == ATOMRUN_EBUSY)
            arL_fail(L, r, "%s is locked by %s", u->shown, lua_tostring(L, -1));
        else
            arL_fail(L, r, "timed out after %f s waiting for %s, locked by %s",
                     o->timeout, u->shown, lua_tostring(L, -1));
        lua_remove(L, -4);
        arL_pushrholder(L, h);
        return 4;
    }
    if (r == ATOMRUN_EBUSY)
        return arL_fail(L, r, "%s is locked", u->shown);
    if (r == ATOMRUN_ETIMEOUT)
        return arL_fail(L, r, "timed out after %f s waiting for %s", o->timeout, u->shown);
    if (r == -ERANGE && min_ttl > 0) {
        arL_fail(L, r, "%s: ttl %d is below the cluster's minimum lease TTL of %d s",
                 u->shown, o->ttl, min_ttl);
        lua_pushinteger(L, min_ttl);
        return 4;
    }
    return arL_fail(L, r, "%s: %s", u->shown, e->msg[0] ? e->msg : atomrun_strerror(r));
}

/* The handle lk on top holds l: its user values -- 1 the URL as shown, 2
 * the name, 3 the endpoints made canonical (canon), 4 its fields (token,
 * index, key, lease) -- and its place in the held set (the name and canon
 * pointers are the user values' strings, alive as long as the handle). */
static void set_handle_values(lua_State *L, rlock *lk, const arL_url *u,
                              const char *canon, atomrun_etcd_lock *l)
{
    char lease[24];
    size_t len;
    lua_pushstring(L, u->shown);
    lua_setiuservalue(L, -2, 1);
    lua_pushstring(L, u->name);
    lk->held.name = lua_tolstring(L, -1, &len);
    lk->held.namelen = len;
    lua_setiuservalue(L, -2, 2);
    lk->canon = lua_pushstring(L, canon);
    lua_setiuservalue(L, -2, 3);
    lk->held.cluster = ar_etcd_lockinfo(l).cluster;
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)atomrun_etcd_lock_token(l));
    lua_setfield(L, -2, "token");
    lua_pushinteger(L, ar_etcd_lockinfo(l).index);
    lua_setfield(L, -2, "index");
    lua_pushstring(L, ar_etcd_lockinfo(l).key);
    lua_setfield(L, -2, "key");
    snprintf(lease, sizeof lease, "%llx", (unsigned long long)ar_etcd_lockinfo(l).lease);
    lua_pushstring(L, lease);
    lua_setfield(L, -2, "lease");
    lua_setiuservalue(L, -2, 4);
}

/* atomrun.lock(url, opts) for a name with a scheme (from bind/lock.c). */
int arL_etcd_lock(lua_State *L)
{
    const char *url = arL_checkpath(L, 1), *why, *tls[3], *canon;
    atomrun_etcd *c;
    atomrun_etcd_lock_opts o;
    atomrun_etcd_holder holder;
    atomrun_etcd_lock *l;
    atomrun_err e;
    rlock *lk;
    arL_url *u;
    int r, min_ttl;

    lua_settop(L, 2);
    lock_options(L, 2, &o, tls);
    u = lua_newuserdatauv(L, sizeof *u, 0);   /* 3: freed by the GC */
    if ((why = arL_parse_url(L, url, u)) != NULL)
        return arL_fail(L, -EINVAL, "%s", why);
    if ((r = arL_open_client(L, u, tls[0], tls[1], tls[2], &c)) != 0)
        return r;

    /* Waiting for a name this state holds would wait for ourselves. */
    canon = pushcanon(L, u->endpoints);                /* 4 */
    if (o.timeout != 0 && waits_on_self(L, c, u, canon, &o))
        return arL_fail(L, -EDEADLK, "%s is already locked by this script; waiting "
                        "for it to be released would wait forever", u->shown);

    /* The handle first: out of memory here must not leak a held lock. */
    lk = lua_newuserdatauv(L, sizeof *lk, 4);
    memset(lk, 0, sizeof *lk);
    lk->held.kind = AR_HELD_ETCD;
    lk->held.mode = o.mode;
    lk->held.fd = -1;
    lk->held.slots = o.slots;
    luaL_setmetatable(L, AR_RLOCK_MT);

    if ((r = atomrun_etcd_lock_acquire(c, u->name, &o, &l, &holder, &min_ttl, &e)) < 0)
        return lock_failed(L, u, &o, r, &holder, min_ttl, &e);
    lk->l = l;
    set_handle_values(L, lk, u, canon, l);
    ar_heldset_add(arL_heldset(L), &lk->held);
    return 1;
}

/* The etcd lock handle at index i (opts.fence of a key's write): 1 and its
 * remote lock in *l -- NULL once released --, or 0 for anything else. */
int arL_testetcdlock(lua_State *L, int i, const atomrun_etcd_lock **l)
{
    rlock *lk = luaL_testudata(L, i, AR_RLOCK_MT);
    *l = lk ? lk->l : NULL;
    return lk != NULL;
}

void arL_openetcdlock(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "unlock", rlock_unlock }, { "lost", rlock_lost },
        { "guard", rlock_guard },   { "unguard", rlock_unguard },
        { NULL, NULL } };
    static const luaL_Reg getters[] = {
        { "path", rlock_path },   { "url", rlock_path },
        { "name", rlock_name },   { "mode", rlock_mode },
        { "token", rlock_token }, { "index", rlock_index },
        { "key", rlock_key },     { "lease", rlock_lease },
        { "locked", rlock_locked },
        { NULL, NULL } };
    arL_newclass(L, AR_RLOCK_MT, methods, getters, rlock_gc, rlock_tostring);
    luaL_getmetatable(L, AR_RLOCK_MT);
    lua_pushcfunction(L, rlock_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
}
