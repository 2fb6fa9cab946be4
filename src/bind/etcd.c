/*
 * bind/etcd.c -- the binding of the etcd locks (src/etcd/client.c, etcd/session.c,
 * etcd/lock.c).  atomrun.lock(name, opts) comes here when name has a scheme
 * (bind/lock.c asks arL_isurl), so the recipes that call atomrun.lock take etcd
 * names unchanged and every message names 'lock' as for files.  The handle
 * has the shape of a file lock's -- lk:unlock(), <close>/__gc, lk.path,
 * lk.mode -- plus lk.token, lk.index, lk.name, lk.key, lk.lease, lk:lost().
 *
 *   etcd://HOST:PORT[,HOST:PORT...]/NAME   etcd+https://...   etcd:///NAME
 *   (endpoints from ATOMRUN_ETCD), USER:PASSWORD@ before the endpoints or
 *   ATOMRUN_ETCD_USER/_PASSWORD; TLS files from opts.ca/cert/key or
 *   ATOMRUN_ETCD_CA/_CERT/_KEY.  The password is kept out of every message
 *   and of lk.path: they show the URL without its userinfo.
 *
 *   core._etcd_queue(url) -> {holder...} (holders first, then waiters)
 *
 * The locks a Lua state holds are counted per cluster and name in a
 * registry table, so that asking again for a name the state holds is
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
#define AR_RHELD    "atomrun.etcd_held"     /* registry: key -> count */

typedef struct ar_rlock {
    atomrun_remote_lock *l;        /* NULL once released */
    /* Released, but no member answered yet (atomrun_remote_unlock's
     * ATOMRUN_EUNAVAILABLE): a later unlock() asks it how it went. */
    atomrun_remote_lock *pending;
    int                  mode;
    int                  slots;
} ar_rlock;

/* ---------------------------------------------------------- the URL */

typedef struct ar_url {
    int         tls;
    char        endpoints[1024];
    char        user[128], password[256];
    const char *name;           /* inside the URL string */
    char        shown[1536];    /* the URL without userinfo */
} ar_url;

int arL_isurl(const char *s)
{
    const char *p = s;
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
        return 0;
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
           (*p >= '0' && *p <= '9') || *p == '+' || *p == '-' || *p == '.')
        p++;
    return strncmp(p, "://", 3) == 0;
}

static int hex_digit(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Copy n bytes of s into dst (size), decoding %XX; 0, or -1 if too long. */
static int unescape(char *dst, size_t size, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%' && i + 2 < n && hex_digit((unsigned char)s[i + 1]) >= 0 &&
            hex_digit((unsigned char)s[i + 2]) >= 0) {
            ch = hex_digit((unsigned char)s[i + 1]) * 16 + hex_digit((unsigned char)s[i + 2]);
            i += 2;
        }
        if (o + 1 >= size)
            return -1;
        dst[o++] = (char)ch;
    }
    dst[o] = '\0';
    return 0;
}

static const char *getenv_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* Parse url into u; NULL, or the reason it is refused (pushed on the
 * stack, naming the URL without its credentials). */
static const char *parse_url(lua_State *L, const char *url, ar_url *u)
{
    const char *sep = strstr(url, "://"), *auth = sep + 3, *slash, *at = NULL;
    size_t slen = (size_t)(sep - url), alen;
    const char *p;

    memset(u, 0, sizeof *u);
    if (slen == 4 && strncasecmp(url, "etcd", 4) == 0)
        u->tls = 0;
    else if (slen == 10 && strncasecmp(url, "etcd+https", 10) == 0)
        u->tls = 1;
    else {
        char scheme[48];
        snprintf(scheme, sizeof scheme, "%.*s", (int)(slen < 40 ? slen : 40), url);
        return lua_pushfstring(L, "unsupported scheme '%s' in %s://... (atomrun "
                               "knows etcd:// and etcd+https://)", scheme, scheme);
    }
    slash = strchr(auth, '/');
    for (p = auth; *p && p != slash; p++)
        if (*p == '@')
            at = p;
    if (!slash)
        return lua_pushfstring(L, "%s://%s has no /NAME after the endpoints",
                               u->tls ? "etcd+https" : "etcd", at ? at + 1 : auth);
    u->name = slash + 1;
    /* "etcd://u:pa/ss@h:2379/x": a '/' in a password ends the endpoints
     * early and the password would be shown as part of the name.  Lock
     * names cannot hold '@'; the URL is not quoted back. */
    if (strchr(u->name, '@'))
        return lua_pushfstring(L, "%s URL with '@' after the endpoints refused (a lock "
                               "name cannot contain '@'; write '/' in a password as %%2F)",
                               u->tls ? "etcd+https" : "etcd");
    snprintf(u->shown, sizeof u->shown, "%s://%.*s/%s", u->tls ? "etcd+https" : "etcd",
             (int)(slash - (at ? at + 1 : auth)), at ? at + 1 : auth, u->name);
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        size_t ulen = colon ? (size_t)(colon - auth) : (size_t)(at - auth);
        if (ulen == 0)
            return lua_pushfstring(L, "%s: empty user name before '@'", u->shown);
        if (unescape(u->user, sizeof u->user, auth, ulen) < 0 ||
            (colon && unescape(u->password, sizeof u->password, colon + 1,
                                  (size_t)(at - colon - 1)) < 0))
            return lua_pushfstring(L, "%s: user name or password too long", u->shown);
        auth = at + 1;
    } else {
        const char *eu = getenv_nonempty("ATOMRUN_ETCD_USER"), *ep = getenv_nonempty("ATOMRUN_ETCD_PASSWORD");
        if (eu)
            snprintf(u->user, sizeof u->user, "%s", eu);
        if (ep)
            snprintf(u->password, sizeof u->password, "%s", ep);
    }
    alen = (size_t)(slash - auth);
    if (alen == 0) {
        const char *env = getenv_nonempty("ATOMRUN_ETCD"), *e;
        size_t n;
        if (!env)
            return lua_pushfstring(L, "%s: no endpoints in the URL and ATOMRUN_ETCD is "
                                   "not set (HOST:PORT[,HOST:PORT...])", u->shown);
        /* ATOMRUN_ETCD may be written as a URL prefix ("etcd://h:2379") */
        e = strstr(env, "://");
        env = e ? e + 3 : env;
        if (strchr(env, '@'))       /* never echo what may be a password */
            return lua_pushfstring(L, "%s: ATOMRUN_ETCD must hold endpoints only; give "
                                   "credentials in ATOMRUN_ETCD_USER and "
                                   "ATOMRUN_ETCD_PASSWORD", u->shown);
        n = strlen(env);
        while (n > 0 && env[n - 1] == '/')
            n--;
        if (n >= sizeof u->endpoints)
            return lua_pushfstring(L, "%s: ATOMRUN_ETCD is too long", u->shown);
        memcpy(u->endpoints, env, n);
        u->endpoints[n] = '\0';
    } else {
        if (alen >= sizeof u->endpoints)
            return lua_pushfstring(L, "%s: the endpoint list is too long", u->shown);
        memcpy(u->endpoints, auth, alen);
        u->endpoints[alen] = '\0';
    }
    if (!*u->name)
        return lua_pushfstring(L, "%s: no lock or key name after the endpoints (etcd://HOST:PORT/NAME)", u->shown);
    return NULL;
}

static void fillcfg(const ar_url *u, atomrun_etcd_config *cfg, const char *ca,
                       const char *cert, const char *key)
{
    atomrun_etcd_config_init(cfg);
    cfg->endpoints = u->endpoints;
    cfg->tls = u->tls;
    cfg->ca_file = ca ? ca : getenv_nonempty("ATOMRUN_ETCD_CA");
    cfg->cert_file = cert ? cert : getenv_nonempty("ATOMRUN_ETCD_CERT");
    cfg->key_file = key ? key : getenv_nonempty("ATOMRUN_ETCD_KEY");
    cfg->user = u->user[0] ? u->user : NULL;
    cfg->password = u->password[0] ? u->password : NULL;
}

static int open_client(lua_State *L, const ar_url *u, const char *ca,
                          const char *cert, const char *key, atomrun_etcd **c)
{
    atomrun_etcd_config cfg;
    char err[ATOMRUN_ETCD_ERRLEN];
    int r;
    fillcfg(u, &cfg, ca, cert, key);
    r = atomrun_etcd_open(&cfg, c, err, sizeof err);
    if (r < 0)
        return arL_fail(L, r, "%s: %s", u->shown, err);
    return 0;
}

/* ------------------------------------------------------ held counting */

/*
 * The locks this Lua state holds, so that asking for one of them is
 * "deadlock" at once (as for files) instead of a wait for ourselves.  One
 * cluster is written many ways -- its endpoints in another order, one
 * twice, a host in capitals, another subset of its members -- so each lock
 * is counted under each of its identities: its endpoint list made
 * canonical (free to compare), "cluster <id>" (the id from the answer that
 * granted it), and "*" (any cluster).  A request is compared by its
 * canonical list; only when the state holds the name on some cluster
 * under another spelling is the cluster asked for its id (one read).
 *
 *   registry[AR_RHELD][ident "\n" name "\n" kind] = count
 *
 * kind: 'x' exclusive, 's' shared, 'n' a slot of a semaphore.
 */

/* registry[AR_RHELD][ident "\n" name "\n" kind] += delta; the count. */
static lua_Integer held_add(lua_State *L, const char *ident, const char *name,
                               char kind, lua_Integer delta)
{
    lua_Integer n;
    if (lua_getfield(L, LUA_REGISTRYINDEX, AR_RHELD) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, AR_RHELD);
    }
    lua_pushfstring(L, "%s\n%s\n%c", ident, name, kind);
    lua_pushvalue(L, -1);
    lua_gettable(L, -3);
    n = lua_tointeger(L, -1) + delta;
    lua_pop(L, 1);
    if (delta == 0)
        lua_pop(L, 1);
    else {
        if (n > 0)
            lua_pushinteger(L, n);
        else
            lua_pushnil(L);
        lua_settable(L, -3);
    }
    lua_pop(L, 1);
    return n;
}

static char kind_letter(int mode, int slots)
{
    return slots > 1 ? 'n' : mode == ATOMRUN_SHARED ? 's' : 'x';
}

/* Would a lock of o's kind on name, under ident, wait for one this state
 * holds?  The kinds exclude each other (etcd/lock.c); a semaphore's own slots
 * block it only when the state holds all of them. */
static int would_wait(lua_State *L, const char *ident, const char *name,
                         const atomrun_remote_opts *o)
{
    lua_Integer x = held_add(L, ident, name, 'x', 0);
    lua_Integer s = held_add(L, ident, name, 's', 0);
    lua_Integer n = held_add(L, ident, name, 'n', 0);
    switch (kind_letter(o->mode, o->slots)) {
    case 'n': return x > 0 || s > 0 || n >= o->slots;
    case 's': return x > 0 || n > 0;
    default:  return x + s + n > 0;
    }
}

static int strpcmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Push eps ("h1:p1,h2:p2", checked by the client already) as one spelling
 * per set: each host lower-cased (host names and IPv6 hex digits are
 * case-blind), each port a plain number, sorted, repeats dropped. */
static const char *pushcanon(lua_State *L, const char *eps)
{
    char one[32][280];
    char *sorted[32];
    int n = 0;
    luaL_Buffer b;
    for (const char *p = eps; *p && n < 32;) {
        size_t len = strcspn(p, ","), host = len, i;
        for (i = len; i > 0; i--)
            if (p[i - 1] == ':') {          /* the last ':' ends an IPv6 host */
                host = i - 1;
                break;
            }
        if (host > 256)
            host = 256;
        for (i = 0; i < host; i++)
            one[n][i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] - 'A' + 'a' : p[i]);
        snprintf(one[n] + host, sizeof one[n] - host, ":%ld",
                 host < len ? strtol(p + host + 1, NULL, 10) : 0L);
        sorted[n] = one[n];
        n++;
        p += len;
        if (*p == ',')
            p++;
    }
    qsort(sorted, (size_t)n, sizeof *sorted, strpcmp);
    luaL_buffinit(L, &b);
    for (int i = 0; i < n; i++) {
        if (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0)
            continue;
        if (luaL_bufflen(&b) > 0)
            luaL_addchar(&b, ',');
        luaL_addstring(&b, sorted[i]);
    }
    luaL_pushresult(&b);
    return lua_tostring(L, -1);
}

/* "cluster <id in hex>": the identity a cluster's id gives (ident: 40). */
static const char *cluster_ident(char *ident, size_t size, uint64_t id)
{
    snprintf(ident, size, "cluster %llx", (unsigned long long)id);
    return ident;
}

/* Does this state already hold what o asks for on u's cluster?  canon:
 * u's canonical endpoints. */
static int waits_on_self(lua_State *L, atomrun_etcd *c, const ar_url *u,
                            const char *canon, const atomrun_remote_opts *o)
{
    char err[ATOMRUN_ETCD_ERRLEN], ident[40];
    uint64_t id;
    if (would_wait(L, canon, u->name, o))
        return 1;
    if (!would_wait(L, "*", u->name, o))
        return 0;
    /* Held under another spelling: of this cluster?  When it cannot say,
     * the lock request that follows meets the same silence and says so. */
    if (atomrun_remote_cluster_id(c, o->timeout > 0 ? atomrun_now() + o->timeout : 0, &id,
                                  err, sizeof err) < 0)
        return 0;
    return would_wait(L, cluster_ident(ident, sizeof ident, id), u->name, o);
}

/* Count the handle at index i in (delta 1) or out (-1) under each of its
 * identities: uservalue 2 the name, 3 the list of identities. */
static void held_note(lua_State *L, int i, const ar_rlock *lk, lua_Integer delta)
{
    const char *name;
    i = lua_absindex(L, i);
    lua_getiuservalue(L, i, 2);
    lua_getiuservalue(L, i, 3);
    name = lua_tostring(L, -2);
    if (name && lua_istable(L, -1)) {
        for (lua_Integer k = 1; lua_rawgeti(L, -1, k) == LUA_TSTRING; k++) {
            held_add(L, lua_tostring(L, -1), name, kind_letter(lk->mode, lk->slots), delta);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);              /* the nil that ended the list */
    }
    lua_pop(L, 2);
}

/* ------------------------------------------------------------- handle */

static ar_rlock *checkrlock(lua_State *L, int i)
{
    return luaL_checkudata(L, i, AR_RLOCK_MT);
}

/* The remote lock behind the etcd lock handle at index i, for run()'s
 * guard option: an error naming the option for anything else, and for a
 * handle already released (there is nothing left to guard). */
atomrun_remote_lock *arL_checkguard(lua_State *L, int i, int arg)
{
    ar_rlock *lk = luaL_testudata(L, i, AR_RLOCK_MT);
    if (!lk)
        luaL_argerror(L, arg, lua_pushfstring(L, "option 'guard' must be an etcd "
                      "lock (atomrun.lock(\"etcd://...\")), not a %s", luaL_typename(L, i)));
    if (!lk->l)
        luaL_argerror(L, arg, "option 'guard': the lock is already released");
    return lk->l;
}

/* Uservalues: 1 url, 2 name, 3 its identities (held counting), 4 facts. */
static void rlock_forget(lua_State *L, int i, ar_rlock *lk)
{
    held_note(L, i, lk, -1);
}

/* Release lk (held or pending); the core's result, err filled. */
static int rlock_release(lua_State *L, ar_rlock *lk, char *err, size_t errlen)
{
    atomrun_remote_lock *l = lk->l ? lk->l : lk->pending;
    int r;
    if (!l)
        return 0;
    if (lk->l) {
        lk->l = NULL;
        rlock_forget(L, 1, lk);
    }
    r = atomrun_remote_unlock(l, err, errlen);
    lk->pending = r == ATOMRUN_EUNAVAILABLE ? l : NULL;
    return r;
}

/* lk:unlock() -> true | nil, msg, code.  Idempotent as for files, but never
 * a blind true: after a release whose answer did not come, each call says
 * how it stands then ("unavailable" while it is retried, true once a
 * member answered). */
static int rlock_unlock(lua_State *L)
{
    ar_rlock *lk = checkrlock(L, 1);
    char err[ATOMRUN_ETCD_ERRLEN] = "";
    int r = rlock_release(L, lk, err, sizeof err);
    if (r < 0) {
        lua_getiuservalue(L, 1, 1);
        return arL_fail(L, r, "%s: %s", lua_tostring(L, -1), err);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* <close>: released; a pending release is kept for a later unlock(). */
static int rlock_close(lua_State *L)
{
    char err[ATOMRUN_ETCD_ERRLEN];
    ar_rlock *lk = checkrlock(L, 1);
    if (lk->l)
        rlock_release(L, lk, err, sizeof err);
    return 0;
}

static int rlock_gc(lua_State *L)
{
    ar_rlock *lk = checkrlock(L, 1);
    rlock_close(L);
    if (lk->pending)                /* its retry goes on without us */
        atomrun_remote_lock_free(lk->pending);
    lk->pending = NULL;
    return 0;
}

/* lk:lost() -> false | the reason (a string): cheap, no network. */
static int rlock_lost(lua_State *L)
{
    ar_rlock *lk = checkrlock(L, 1);
    char why[ATOMRUN_ETCD_ERRLEN];
    if (!lk->l) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (atomrun_remote_lock_lost(lk->l, why, sizeof why) < 0)
        lua_pushstring(L, why);
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
    ar_rlock *lk = checkrlock(L, 1);
    lua_Integer pid = luaL_checkinteger(L, 2);
    lua_Number ka = luaL_optnumber(L, 3, -1);
    int r;
    if (pid < 0 || pid == 1 || pid > 0x7fffffff)
        luaL_argerror(L, 2, "a process id > 1 (or 0: every child) expected");
    if (!(ka >= 0) && !lua_isnoneornil(L, 3))
        luaL_argerror(L, 3, "seconds >= 0 expected");
    if (!lk->l)
        return arL_fail(L, -EINVAL, "the lock is released");
    r = atomrun_remote_lock_guard(lk->l, (pid_t)pid, ka);
    if (r == -ERANGE) {
        double most = atomrun_remote_lock_ttl(lk->l) / 2.0 - ATOMRUN_ETCD_GUARD_MARGIN;
        char a[32], m[32];
        snprintf(a, sizeof a, "%g", ka);
        snprintf(m, sizeof m, "%g", most);
        luaL_argerror(L, 3, lua_pushfstring(L, "%s s does not fit in a TTL of %d s: at "
                      "most %s s", a, atomrun_remote_lock_ttl(lk->l), m));
    }
    if (r < 0)
        return arL_fail(L, r, "cannot guard pid %d: %s", (int)pid, atomrun_strerror(r));
    lua_pushboolean(L, 1);
    return 1;
}

static int rlock_unguard(lua_State *L)
{
    ar_rlock *lk = checkrlock(L, 1);
    int r = lk->l ? atomrun_remote_lock_unguard(lk->l) : 0;
    if (r == 0)
        lua_pushboolean(L, 0);
    else
        lua_pushstring(L, r == 1 ? "term" : "kill");   /* 2, 3: KILL was sent */
    return 1;
}

static int rlock_tostring(lua_State *L)
{
    ar_rlock *lk = checkrlock(L, 1);
    lua_getiuservalue(L, 1, 1);
    if (lk->l)
        lua_pushfstring(L, "atomrun.etcd_lock (%s, %s, token %I)", lua_tostring(L, -1),
                        arL_modename(lk->mode),
                        (lua_Integer)atomrun_remote_lock_token(lk->l));
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
    lua_pushstring(L, arL_modename(checkrlock(L, 1)->mode));
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

/*
 * "2026-12-07T20:08:00Z" (what atomrun writes in its records) as seconds
 * since the epoch, so that `since` is one type for file and etcd holders
 * (an integer, as os.time() gives).  0 when the text is anything else (a
 * record another program wrote): the field is then left out, never
 * guessed.
 */
static lua_Integer utc_seconds(const char *text)
{
    struct tm tm;
    int n = 0;
    memset(&tm, 0, sizeof tm);
    if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2dZ%n", &tm.tm_year, &tm.tm_mon,
               &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 ||
        text[n] != '\0' || tm.tm_year < 1970 || tm.tm_mon < 1 || tm.tm_mon > 12)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    return t > 0 ? (lua_Integer)t : 0;
}

/* The writer's fields (a lock holder's, a key's creator's) into the table
 * on top: pid (when known), host, cmd, since (epoch seconds, when known). */
static void setwriter(lua_State *L, const atomrun_remote_holder *h)
{
    lua_Integer since = utc_seconds(h->since);
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

static void pushrholder(lua_State *L, const atomrun_remote_holder *h)
{
    char lease[24];
    lua_createtable(L, 0, 8);
    setwriter(L, h);
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
static void pushholdertext(lua_State *L, const atomrun_remote_holder *h, int say_kind)
{
    luaL_Buffer b;
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
    if (h->since[0]) {
        lua_pushfstring(L, " since %s", h->since);
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

static const char *optstr(lua_State *L, int arg, const char *name)
{
    const char *v = NULL;
    if (arL_opt(L, arg, name, LUA_TSTRING) != LUA_TNIL) {
        v = lua_tostring(L, -1);    /* stays referenced by the options */
        lua_pop(L, 1);
    }
    return v;
}

/* A positive whole option (ttl, slots): 1 .. 1000000. */
static int optposint(lua_State *L, int arg, const char *name, int dflt,
                        const char *what)
{
    return arL_optrange(L, arg, name, dflt, 1, 1000000, what);
}

/* lock()'s options into o; the TLS file names into tls[3] (ca, cert, key). */
static void lock_options(lua_State *L, int arg, atomrun_remote_opts *o, const char *tls[3])
{
    static const char *const names[] = { "mode", "wait", "timeout", "ttl", "holder",
                                         "cmd", "ca", "cert", "key", "slots", NULL };
    arL_checkoptnames(L, arg, names);
    atomrun_remote_opts_init(o);
    if (arL_opt(L, arg, "mode", LUA_TSTRING) != LUA_TNIL) {
        o->mode = arL_checkmode(L, arg, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    o->timeout = arL_optseconds(L, arg, "timeout", ATOMRUN_FOREVER);
    if (!arL_optbool(L, arg, "wait", 1))
        o->timeout = 0;
    o->ttl = optposint(L, arg, "ttl", 10, "a whole number of seconds >= 1");
    o->slots = optposint(L, arg, "slots", 1, "an integer >= 1");
    arL_optbool(L, arg, "holder", 1);  /* accepted: the holder is always known */
    o->cmd = optstr(L, arg, "cmd");
    tls[0] = optstr(L, arg, "ca");
    tls[1] = optstr(L, arg, "cert");
    tls[2] = optstr(L, arg, "key");
    if (o->mode == ATOMRUN_SHARED && o->slots != 1)
        luaL_argerror(L, arg, "a shared etcd lock has one slot");
}

/* The acquire failed with r: nil, msg, code, and for busy and timeout the
 * holder table (for a TTL below the cluster's minimum, that minimum). */
static int lock_failed(lua_State *L, const ar_url *u, const atomrun_remote_opts *o, int r)
{
    if ((r == ATOMRUN_EBUSY || r == ATOMRUN_ETIMEOUT) && o->holder.token) {
        /* The kind is news unless an exclusive lock meets one. */
        pushholdertext(L, &o->holder, o->holder.slots > 0 || o->holder.mode == ATOMRUN_SHARED
                          || kind_letter(o->mode, o->slots) != 'x');
        if (r == ATOMRUN_EBUSY)
            arL_fail(L, r, "%s is locked by %s", u->shown, lua_tostring(L, -1));
        else
            arL_fail(L, r, "timed out after %f s waiting for %s, locked by %s",
                     o->timeout, u->shown, lua_tostring(L, -1));
        lua_remove(L, -4);
        pushrholder(L, &o->holder);
        return 4;
    }
    if (r == ATOMRUN_EBUSY)
        return arL_fail(L, r, "%s is locked", u->shown);
    if (r == ATOMRUN_ETIMEOUT)
        return arL_fail(L, r, "timed out after %f s waiting for %s", o->timeout, u->shown);
    if (r == -ERANGE && o->min_ttl > 0) {
        arL_fail(L, r, "%s: ttl %d is below the cluster's minimum lease TTL of %d s",
                 u->shown, o->ttl, o->min_ttl);
        lua_pushinteger(L, o->min_ttl);
        return 4;
    }
    return arL_fail(L, r, "%s: %s", u->shown, o->err[0] ? o->err : atomrun_strerror(r));
}

/* The handle on top holds l: its user values -- 1 the URL as shown, 2 the
 * name, 3 the identities it is held under (the endpoints as written,
 * canonical; "*"; the cluster id), 4 its fields (token, index, key,
 * lease). */
static void set_handle_values(lua_State *L, const ar_url *u, const char *canon,
                              atomrun_remote_lock *l)
{
    char lease[24], ident[40];
    lua_pushstring(L, u->shown);
    lua_setiuservalue(L, -2, 1);
    lua_pushstring(L, u->name);
    lua_setiuservalue(L, -2, 2);
    lua_createtable(L, 3, 0);
    lua_pushstring(L, canon);
    lua_rawseti(L, -2, 1);
    lua_pushliteral(L, "*");
    lua_rawseti(L, -2, 2);
    if (atomrun_remote_lock_cluster(l)) {
        lua_pushstring(L, cluster_ident(ident, sizeof ident, atomrun_remote_lock_cluster(l)));
        lua_rawseti(L, -2, 3);
    }
    lua_setiuservalue(L, -2, 3);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)atomrun_remote_lock_token(l));
    lua_setfield(L, -2, "token");
    lua_pushinteger(L, atomrun_remote_lock_index(l));
    lua_setfield(L, -2, "index");
    lua_pushstring(L, atomrun_remote_lock_key(l));
    lua_setfield(L, -2, "key");
    snprintf(lease, sizeof lease, "%llx", (unsigned long long)atomrun_remote_lock_lease(l));
    lua_pushstring(L, lease);
    lua_setfield(L, -2, "lease");
    lua_setiuservalue(L, -2, 4);
}

/* atomrun.lock(url, opts) for a name with a scheme (from bind/lock.c). */
int arL_etcd_lock(lua_State *L)
{
    const char *url = arL_checkpath(L, 1), *why, *tls[3], *canon;
    atomrun_etcd *c;
    atomrun_remote_opts o;
    atomrun_remote_lock *l;
    ar_rlock *lk;
    ar_url *u;
    int r;

    lua_settop(L, 2);
    lock_options(L, 2, &o, tls);
    u = lua_newuserdatauv(L, sizeof *u, 0);   /* 3: freed by the GC */
    if ((why = parse_url(L, url, u)) != NULL)
        return arL_fail(L, -EINVAL, "%s", why);
    if ((r = open_client(L, u, tls[0], tls[1], tls[2], &c)) != 0)
        return r;

    /* Waiting for a name this state holds would wait for ourselves. */
    canon = pushcanon(L, u->endpoints);                /* 4 */
    if (o.timeout != 0 && waits_on_self(L, c, u, canon, &o))
        return arL_fail(L, -EDEADLK, "%s is already locked by this script; waiting "
                        "for it to be released would wait forever", u->shown);

    /* The handle first: out of memory here must not leak a held lock. */
    lk = lua_newuserdatauv(L, sizeof *lk, 4);
    memset(lk, 0, sizeof *lk);
    lk->mode = o.mode;
    lk->slots = o.slots;
    luaL_setmetatable(L, AR_RLOCK_MT);

    if ((r = atomrun_remote_lock_acquire(c, u->name, &o, &l)) < 0)
        return lock_failed(L, u, &o, r);
    lk->l = l;
    set_handle_values(L, u, canon, l);
    held_note(L, -1, lk, 1);
    return 1;
}

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
    atomrun_remote_holder *h;
    char err[ATOMRUN_ETCD_ERRLEN];
    ar_url *u;
    int r, n = 0, room = 64, i;
    arL_checkoptnames(L, 2, names);
    lua_settop(L, 2);
    u = lua_newuserdatauv(L, sizeof *u, 0);
    if (!arL_isurl(url) || (why = parse_url(L, url, u)) != NULL)
        return arL_fail(L, -EINVAL, "%s", why);
    if ((r = open_client(L, u, optstr(L, 2, "ca"), optstr(L, 2, "cert"),
                            optstr(L, 2, "key"), &c)) != 0)
        return r;
    for (;;) {
        h = lua_newuserdatauv(L, sizeof *h * (size_t)room, 0);
        r = atomrun_remote_queue(c, u->name, h, room, &n, err, sizeof err);
        if (r < 0)
            return arL_fail(L, r, "%s: %s", u->shown, err);
        if (n <= room)
            break;
        lua_pop(L, 1);
        room = n + 16;
    }
    lua_createtable(L, n, 1);
    for (i = 0; i < n; i++) {
        pushrholder(L, &h[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
    return 1;
}

/*
 * core._etcd_call(url, path, json [, opts]) -> answer (JSON text) | nil, msg,
 * code: one gateway call, for atomrun doctor and for recipes not yet in C.
 * opts.endpoint (1-based): that endpoint only; opts.anonymous: without the
 * user (to ask whether auth is on); opts.timeout: seconds (default the
 * client's 5).
 */
int arL_etcd_call(lua_State *L)
{
    static const char *const names[] = { "endpoint", "anonymous", "timeout", "ca",
                                         "cert", "key", NULL };
    const char *url = arL_checkpath(L, 1), *path = luaL_checkstring(L, 2);
    const char *json = luaL_checkstring(L, 3), *why = "not an etcd URL";
    atomrun_etcd_config cfg;
    atomrun_etcd *c;
    char err[ATOMRUN_ETCD_ERRLEN], *out = NULL;
    double timeout;
    lua_Integer ep = 0;
    ar_url *u;
    int r;

    arL_checkoptnames(L, 4, names);
    lua_settop(L, 4);
    if (arL_opt(L, 4, "endpoint", LUA_TNUMBER) != LUA_TNIL) {
        ep = lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    timeout = arL_optseconds(L, 4, "timeout", 0);
    u = lua_newuserdatauv(L, sizeof *u, 0);
    if (!arL_isurl(url) || (why = parse_url(L, url, u)) != NULL)
        return arL_fail(L, -EINVAL, "%s", why);
    if (ep > 0) {                   /* keep only the ep-th endpoint */
        char *p = u->endpoints, *next;
        for (lua_Integer i = 1; i < ep && p; i++) {
            p = strchr(p, ',');
            if (p)
                p++;
        }
        if (!p || !*p)
            return arL_fail(L, -EINVAL, "%s: no endpoint #%d", u->shown, (int)ep);
        next = strchr(p, ',');
        if (next)
            *next = '\0';
        memmove(u->endpoints, p, strlen(p) + 1);
    }
    if (arL_optbool(L, 4, "anonymous", 0))
        u->user[0] = u->password[0] = '\0';
    fillcfg(u, &cfg, optstr(L, 4, "ca"), optstr(L, 4, "cert"), optstr(L, 4, "key"));
    r = atomrun_etcd_open(&cfg, &c, err, sizeof err);
    if (r < 0)
        return arL_fail(L, r, "%s: %s", u->shown, err);
    r = atomrun_etcd_call(c, path, json, timeout > 0 ? atomrun_now() + timeout : 0, &out,
                          err, sizeof err);
    if (r < 0)
        return arL_fail(L, r, "%s: %s", u->shown, err);
    lua_pushstring(L, out);
    free(out);
    return 1;
}

/*
 * core._etcd_lease(url, ttl [, opts]) -> lease ID (integer) | nil, msg, code:
 * the process's session lease for ttl seconds on url's cluster -- the one
 * ttl-bound writes and locks of that ttl share -- granted now if there is
 * none or the last was lost; kept alive while the process runs, revoked at
 * its exit, gone a TTL after a crash.  For recipes that bind their own
 * txn's keys to the process (update's nonce).  opts: timeout, ca, cert, key.
 */
int arL_etcd_lease(lua_State *L)
{
    static const char *const names[] = { "timeout", "ca", "cert", "key", NULL };
    const char *url = arL_checkpath(L, 1), *why = "not an etcd URL";
    lua_Integer ttl = luaL_checkinteger(L, 2);
    char err[ATOMRUN_ETCD_ERRLEN];
    atomrun_etcd *c;
    int64_t lease;
    double timeout;
    int r, min_ttl = 0;
    ar_url *u;

    luaL_argcheck(L, ttl >= 1 && ttl <= 1000000, 2, "a whole number of seconds >= 1");
    arL_checkoptnames(L, 3, names);
    lua_settop(L, 3);
    timeout = arL_optseconds(L, 3, "timeout", 0);
    u = lua_newuserdatauv(L, sizeof *u, 0);
    if (!arL_isurl(url) || (why = parse_url(L, url, u)) != NULL)
        return arL_fail(L, -EINVAL, "%s", why);
    if ((r = open_client(L, u, optstr(L, 3, "ca"), optstr(L, 3, "cert"),
                            optstr(L, 3, "key"), &c)) != 0)
        return r;
    r = atomrun_remote_session_lease(c, (int)ttl, timeout > 0 ? atomrun_now() + timeout : 0,
                                     &lease, &min_ttl, err, sizeof err);
    if (r == -ERANGE && min_ttl > 0)
        return arL_fail(L, r, "%s: ttl %d is below the cluster's minimum lease TTL of %d s",
                        u->shown, (int)ttl, min_ttl);
    if (r < 0)
        return arL_fail(L, r, "%s: %s", u->shown, err);
    lua_pushinteger(L, (lua_Integer)lease);
    return 1;
}

/* core._etcd_endpoints(url) -> {"h:p", ...}, shown URL | nil, msg, code */
int arL_etcd_endpoints(lua_State *L)
{
    const char *url = arL_checkpath(L, 1), *why = "not an etcd URL", *p;
    ar_url *u = lua_newuserdatauv(L, sizeof *u, 0);
    int n = 0;
    if (!arL_isurl(url) || (why = parse_url(L, url, u)) != NULL)
        return arL_fail(L, -EINVAL, "%s", why);
    lua_newtable(L);
    for (p = u->endpoints; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        lua_pushlstring(L, p, len);
        lua_rawseti(L, -2, ++n);
        p += len;
        if (*p == ',')
            p++;
    }
    lua_pushstring(L, u->shown);
    return 2;
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
static int fail_exists(lua_State *L, const char *shown, const atomrun_remote_put_opts *po)
{
    const atomrun_remote_holder *h = &po->creator;
    if (h->pid > 0)
        arL_fail(L, -EEXIST, "cannot create %s: it exists, created by pid %d on %s%s%s%s "
                 "at %s (revision %d, version %d)", shown, (int)h->pid,
                 h->host[0] ? h->host : "?", h->cmd[0] ? " (" : "", h->cmd,
                 h->cmd[0] ? ")" : "", h->since[0] ? h->since : "an unknown time",
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
        setwriter(L, h);
    return 4;
}

typedef struct ar_kvreq {
    ar_url                 *u;
    atomrun_etcd           *c;
    atomrun_remote_put_opts po;
    lua_Integer             limit;
} ar_kvreq;

/* opts.fence at arg: NULL, or the etcd lock it holds; a released one is
 * "lost" (the count of nil, msg, code pushed).  Any other type is the same
 * mistake as a file lock: one message. */
static int optfence(lua_State *L, int arg, const char *url,
                       const atomrun_remote_lock **fence)
{
    ar_rlock *lk;
    *fence = NULL;
    if (lua_isnoneornil(L, arg))
        return 0;
    if (lua_getfield(L, arg, "fence") == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    lk = luaL_testudata(L, -1, AR_RLOCK_MT);
    if (!lk)
        luaL_argerror(L, arg, "option 'fence' must be a lock on an etcd name");
    lua_pop(L, 1);
    if (!lk->l)
        return arL_fail(L, ATOMRUN_ELOST, "%s: not written: the fence lock was "
                        "already released", url);
    *fence = lk->l;
    return 0;
}

/* Parse url and the write options at arg; 0 or the count of a failure
 * already pushed (nil, msg, code). */
static int kvsetup(lua_State *L, int arg, int write, ar_kvreq *q)
{
    static const char *const wnames[] = { "ttl", "fence", "max_request_bytes", "ca",
                                          "cert", "key", "durable", "mode", "follow",
                                          NULL };
    static const char *const rnames[] = { "ca", "cert", "key", NULL };
    const char *url = arL_checkpath(L, 1), *why;
    int r;

    arL_checkoptnames(L, arg, write ? wnames : rnames);
    atomrun_remote_put_opts_init(&q->po);
    q->limit = AR_MAX_REQUEST_BYTES;
    if (write) {
        q->po.ttl = optposint(L, arg, "ttl", 0, "a whole number of seconds >= 1");
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
    if ((why = parse_url(L, url, q->u)) != NULL)
        return arL_fail(L, -EINVAL, "%s", why);
    if (!*q->u->name)
        return arL_fail(L, -EINVAL, "%s: no key name after the endpoints", q->u->shown);
    if ((r = open_client(L, q->u, optstr(L, arg, "ca"), optstr(L, arg, "cert"),
                            optstr(L, arg, "key"), &q->c)) != 0)
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
    char err[ATOMRUN_ETCD_ERRLEN] = "";
    const char *data = "";
    size_t len = 0;
    int t = lua_type(L, 2), r;
    ar_kvreq q;

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
    r = atomrun_remote_put(q.c, q.u->name, data, len, &q.po, 0, err, sizeof err);
    if (r == -EEXIST)
        return fail_exists(L, q.u->shown, &q.po);
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

static void pushkv(lua_State *L, const atomrun_remote_kv *kv)
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
    char err[ATOMRUN_ETCD_ERRLEN] = "", *data;
    atomrun_remote_kv kv;
    size_t len;
    ar_kvreq q;
    int r;

    lua_settop(L, 2);
    if ((r = kvsetup(L, 2, 0, &q)) != 0)
        return r;
    r = atomrun_remote_get(q.c, q.u->name, &data, &len, &kv, 0, err, sizeof err);
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

/* core._etcd_key(url) -> the etcd key of url, shown URL | nil, msg, code:
 * for the recipes that write their own txn (update's nonce). */
int arL_etcd_key(lua_State *L)
{
    const char *url = arL_checkpath(L, 1), *why = "not an etcd URL";
    ar_url *u = lua_newuserdatauv(L, sizeof *u, 0);
    if (!arL_isurl(url) || (why = parse_url(L, url, u)) != NULL)
        return arL_fail(L, -EINVAL, "%s", why);
    if (!*u->name)
        return arL_fail(L, -EINVAL, "%s: no key name after the endpoints", u->shown);
    lua_pushstring(L, u->name);
    lua_pushstring(L, u->shown);
    return 2;
}

/* core._etcd_watch(url, start_revision, seconds, fn) -> 1 (fn asked to
 * stop) | 0 (time up, the stream broke or the server cancelled it: look
 * again) | nil, msg, code.  Watches the URL's key, or every key under it
 * when the name ends in "/".  fn(result_json_text) runs for each result of
 * the stream; true from fn stops.  fn runs inside curl's write callback,
 * so it is called with lua_pcall: an error must not longjmp through curl.
 * It is raised again once curl has returned. */
typedef struct ar_watchud {
    lua_State *L;
    int        fn;          /* stack index of fn */
    int        failed;      /* fn raised: its error is on the stack top */
} ar_watchud;

static int onwatch(void *ud, const char *result)
{
    ar_watchud *w = ud;
    int stop;
    lua_pushvalue(w->L, w->fn);
    lua_pushstring(w->L, result);
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
    const char *url = arL_checkpath(L, 1), *why = "not an etcd URL";
    lua_Integer start = luaL_checkinteger(L, 2);
    double secs = luaL_checknumber(L, 3);
    char err[ATOMRUN_ETCD_ERRLEN] = "";
    atomrun_etcd *c;
    ar_watchud w;
    ar_url *u;
    int r;

    luaL_checktype(L, 4, LUA_TFUNCTION);
    lua_settop(L, 4);
    u = lua_newuserdatauv(L, sizeof *u, 0);
    if (!arL_isurl(url) || (why = parse_url(L, url, u)) != NULL)
        return arL_fail(L, -EINVAL, "%s", why);
    if (!*u->name)
        return arL_fail(L, -EINVAL, "%s: no key name after the endpoints", u->shown);
    if ((r = open_client(L, u, NULL, NULL, NULL, &c)) != 0)
        return r;
    w.L = L;
    w.fn = 4;
    w.failed = 0;
    r = atomrun_remote_watch(c, u->name, (int64_t)start, atomrun_now() + secs, onwatch,
                             &w, err, sizeof err);
    if (w.failed)
        return lua_error(L);
    if (r < 0)
        return arL_fail(L, r, "%s: %s", u->shown, err[0] ? err : atomrun_strerror(r));
    lua_pushinteger(L, r);
    return 1;
}

void arL_openremote(lua_State *L)
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
