/*
 * bind/etcd.c -- etcd names in the binding: the URL grammar and the
 * ATOMRUN_ETCD* environment made into a client's config, opening clients,
 * the private functions on a URL (_etcd_call, _etcd_endpoints,
 * _etcd_key), and the opener of the etcd binding.  The lock handle is in
 * bind/etcd_lock.c, the keys (create/replace/read, watch, queue) in
 * bind/etcd_kv.c.
 *
 *   etcd://HOST:PORT[,HOST:PORT...]/NAME   etcd+https://...   etcd:///NAME
 *   (endpoints from ATOMRUN_ETCD), USER:PASSWORD@ before the endpoints or
 *   ATOMRUN_ETCD_USER/_PASSWORD; TLS files from opts.ca/cert/key or
 *   ATOMRUN_ETCD_CA/_CERT/_KEY.  The password is kept out of every message
 *   and of lk.path: they show the URL without its userinfo.
 */
#define _GNU_SOURCE
#include "bind/bind.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------- the URL */

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

/* The scheme words atomrun takes ("etcd://", "etcd+https://"), longest
 * first so that "etcd+https" is not read as "etcd" and "+https". */
static const char *const schemes[] = { "etcd+https", "etcd+http", "etcd" };

int arL_nearurl(const char *s)
{
    size_t i, n;
    for (i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        n = strlen(schemes[i]);
        if (strncasecmp(s, schemes[i], n) != 0)
            continue;
        s += n;
        /* "etcd:/h:2379/x", "etcd:h:2379/x", "etcd//h:2379/x": a mistyped
         * "://".  A plain "etcd/x" or "etcd.lock" is a path like any. */
        return (s[0] == ':' && strncmp(s, "://", 3) != 0) || strncmp(s, "//", 2) == 0;
    }
    return 0;
}

/* What is said of such a name, wherever it is refused. */
static void pushnearurl(lua_State *L, const char *name)
{
    lua_pushfstring(L, "%s looks like a mistyped etcd name, not a file: the form is "
                    "etcd://HOST:PORT[,HOST:PORT...]/NAME (or etcd:///NAME with ATOMRUN_ETCD)",
                    name);
}

int arL_failnearurl(lua_State *L, const char *name)
{
    pushnearurl(L, name);
    return arL_fail(L, -EINVAL, "%s", lua_tostring(L, -1));
}

/* core._etcd_mistyped(name) -> the message when name looks like a
 * mistyped etcd URL, else nil: the CLI's usage error (atomrun.backend's
 * near_miss), by the rule lock() refuses such a name with. */
static int etcd_mistyped(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING || !arL_nearurl(lua_tostring(L, 1)))
        return 0;
    pushnearurl(L, lua_tostring(L, 1));
    return 1;
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

/* "etcd:///NAME": u's endpoints from ATOMRUN_ETCD; NULL, or the reason
 * it is refused (pushed). */
static const char *endpoints_from_env(lua_State *L, arL_url *u)
{
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
        return lua_pushfstring(L, "%s: ATOMRUN_ETCD is too long (at most %d bytes "
                               "of endpoints)", u->shown, (int)sizeof u->endpoints - 1);
    memcpy(u->endpoints, env, n);
    u->endpoints[n] = '\0';
    return NULL;
}

/* Parse url into u; NULL, or the reason it is refused (pushed on the
 * stack, naming the URL without its credentials). */
const char *arL_parse_url(lua_State *L, const char *url, arL_url *u)
{
    const char *sep = strstr(url, "://"), *auth = sep + 3, *slash, *at = NULL;
    size_t slen = (size_t)(sep - url), alen;
    const char *p, *why;

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
        if ((why = endpoints_from_env(L, u)) != NULL)
            return why;
    } else {
        if (alen >= sizeof u->endpoints)
            return lua_pushfstring(L, "%s: the endpoint list is too long (at most %d "
                                   "bytes)", u->shown, (int)sizeof u->endpoints - 1);
        memcpy(u->endpoints, auth, alen);
        u->endpoints[alen] = '\0';
    }
    /* The one check of an empty name, for every caller: the lock, the key
     * calls and the _etcd_* functions never see an empty u->name. */
    if (!*u->name)
        return lua_pushfstring(L, "%s: no lock or key name after the endpoints (etcd://HOST:PORT/NAME)", u->shown);
    return NULL;
}

/* ATOMRUN_ETCD_TIMEOUT: the seconds an etcd request may take, endpoint
 * rotation and all, when the call gives no time of its own (lock -n, who,
 * a read): the client's op_timeout, 5 by default.  NULL, or what is wrong
 * with the value. */
static const char *op_timeout_from_env(double *out)
{
    const char *v = getenv_nonempty("ATOMRUN_ETCD_TIMEOUT");
    char *end;
    double t;
    if (!v)
        return NULL;
    t = strtod(v, &end);
    if (end == v || *end || !(t > 0) || t > 86400)
        return "ATOMRUN_ETCD_TIMEOUT must be seconds, more than 0 and at most 86400";
    *out = t;
    return NULL;
}

static const char *fillcfg(const arL_url *u, atomrun_etcd_config *cfg, const char *ca,
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
    return op_timeout_from_env(&cfg->op_timeout);
}

int arL_open_client(lua_State *L, const arL_url *u, const char *ca,
                    const char *cert, const char *key, atomrun_etcd **c)
{
    atomrun_etcd_config cfg;
    atomrun_err e;
    int r;
    const char *why = fillcfg(u, &cfg, ca, cert, key);
    if (why)
        return arL_fail(L, -EINVAL, "%s: %s", u->shown, why);
    r = atomrun_etcd_open(&cfg, c, &e);
    if (r < 0)
        return arL_fail(L, r, "%s: %s", u->shown, e.msg);
    return 0;
}

/* ---------------------------------------------------------- options */

const char *arL_optstr(lua_State *L, int arg, const char *name)
{
    const char *v = NULL;
    if (arL_opt(L, arg, name, LUA_TSTRING) != LUA_TNIL) {
        v = lua_tostring(L, -1);    /* stays referenced by the options */
        lua_pop(L, 1);
    }
    return v;
}

/* A positive whole option (ttl, slots): 1 .. 1000000. */
int arL_optposint(lua_State *L, int arg, const char *name, int dflt,
                  const char *what)
{
    return arL_optrange(L, arg, name, dflt, 1, 1000000, what);
}

/*
 * core._etcd_call(url, path, json [, opts]) -> answer (JSON text) | nil, msg,
 * code: one gateway call: the maintenance endpoints atomrun doctor reads
 * (status, members, auth); every key operation is core.etcd.txn.
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
    atomrun_err e;
    char *out = NULL;
    double timeout;
    lua_Integer ep = 0;
    arL_url *u;
    int r;

    arL_checkoptnames(L, 4, names);
    lua_settop(L, 4);
    /* 1.5 or 0 must not quietly mean "every endpoint": a doctor asking one
     * member would get whichever answered. */
    ep = arL_optposint(L, 4, "endpoint", 0, "an endpoint's place in the URL "
                       "(an integer >= 1)");
    timeout = arL_optseconds(L, 4, "timeout", 0);
    u = lua_newuserdatauv(L, sizeof *u, 0);
    if (!arL_isurl(url) || (why = arL_parse_url(L, url, u)) != NULL)
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
    why = fillcfg(u, &cfg, arL_optstr(L, 4, "ca"), arL_optstr(L, 4, "cert"),
                  arL_optstr(L, 4, "key"));
    if (why)
        return arL_fail(L, -EINVAL, "%s: %s", u->shown, why);
    r = atomrun_etcd_open(&cfg, &c, &e);
    if (r < 0)
        return arL_fail(L, r, "%s: %s", u->shown, e.msg);
    r = ar_etcd_call(c, path, json, timeout > 0 ? ar_now() + timeout : 0, &out,
                     e.msg, sizeof e.msg);
    if (r < 0)
        return arL_fail(L, r, "%s: %s", u->shown, e.msg);
    lua_pushstring(L, out);
    free(out);
    return 1;
}

/* core._etcd_endpoints(url) -> {"h:p", ...}, shown URL | nil, msg, code */
int arL_etcd_endpoints(lua_State *L)
{
    const char *url = arL_checkpath(L, 1), *why = "not an etcd URL", *p;
    arL_url *u = lua_newuserdatauv(L, sizeof *u, 0);
    int n = 0;
    if (!arL_isurl(url) || (why = arL_parse_url(L, url, u)) != NULL)
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

/* core._etcd_key(url) -> the etcd key of url, shown URL | nil, msg, code:
 * for the recipes that write their own txn (update's nonce). */
int arL_etcd_key(lua_State *L)
{
    const char *url = arL_checkpath(L, 1), *why = "not an etcd URL";
    arL_url *u = lua_newuserdatauv(L, sizeof *u, 0);
    if (!arL_isurl(url) || (why = arL_parse_url(L, url, u)) != NULL)
        return arL_fail(L, -EINVAL, "%s", why);
    lua_pushstring(L, u->name);
    lua_pushstring(L, u->shown);
    return 2;
}

/* What luaopen_atomrun_core asks of the etcd binding: the lock handle's
 * class (bind/etcd_lock.c), and the private functions on etcd names into
 * the module table on top, so that module.c names none of them. */
void arL_openremote(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "_etcd_queue", arL_etcd_queue }, { "_etcd_call", arL_etcd_call },
        { "_etcd_endpoints", arL_etcd_endpoints },
        { "_etcd_key", arL_etcd_key }, { "_etcd_watch", arL_etcd_watch },
        { "_etcd_mistyped", etcd_mistyped },
        { "_etcd_kill_after", arL_etcd_kill_after },
        { NULL, NULL } };
    arL_openetcdlock(L);
    luaL_setfuncs(L, funcs, 0);
    arL_openetcdtxn(L);             /* core.etcd: bind/etcd_txn.c */
}
