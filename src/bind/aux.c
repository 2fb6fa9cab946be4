/*
 * bind/aux.c -- what every binding function shares: failure results, holder
 * tables, path and option checking, handle metatables, and the held-lock
 * set of each Lua state.
 */
#define _GNU_SOURCE
#include "bind/bind.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------- the held-lock set */

/* The set lives in a userdata in the registry, one per Lua state:
 * userdata never move, so the intrusive links stay valid. */
static const char heldset_key = 'h';

ar_heldset *arL_heldset(lua_State *L)
{
    ar_heldset *s;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &heldset_key) == LUA_TUSERDATA) {
        s = lua_touserdata(L, -1);
        lua_pop(L, 1);
        return s;
    }
    lua_pop(L, 1);
    s = lua_newuserdatauv(L, sizeof *s, 0);
    ar_heldset_init(s);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &heldset_key);
    return s;
}

/* -------------------------------------------------------------- results */

const char *arL_modename(int mode)
{
    return mode == ATOMRUN_SHARED ? "shared" : "exclusive";
}

int arL_fail(lua_State *L, int result, const char *fmt, ...)
{
    va_list ap;
    lua_pushnil(L);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_pushstring(L, atomrun_err_name(result));
    return 3;
}

int arL_failerrno(lua_State *L, int result, const char *what,
                  const char *path)
{
    return arL_fail(L, result, "%s%s%s: %s", what, *what ? " " : "", path,
                    atomrun_strerror(result));
}

int arL_failpath(lua_State *L, int result, const char *what,
                 const char *path, int follow)
{
    atomrun_refused ref;
    if (result == -EACCES && atomrun_refused_link(path, follow, &ref) == 1)
        return arL_fail(L, result, "%s%s%s: refusing to follow the symlink "
            "%s (owned by uid %d) in the sticky world-writable directory %s",
            what, *what ? " " : "", path, ref.link, (int)ref.uid, ref.dir);
    return arL_failerrno(L, result, what, path);
}

void arL_pushholder(lua_State *L, const atomrun_holder *h, int range)
{
    lua_createtable(L, 0, 6);
    if (h->pid > 0) {
        lua_pushinteger(L, h->pid);
        lua_setfield(L, -2, "pid");
    }
    lua_pushstring(L, arL_modename(h->mode));
    lua_setfield(L, -2, "mode");
    if (h->cmd[0]) {
        lua_pushstring(L, h->cmd);
        lua_setfield(L, -2, "cmd");
    }
    lua_pushstring(L, h->kind);
    lua_setfield(L, -2, "kind");
    if (h->since > 0) {
        lua_pushinteger(L, h->since);
        lua_setfield(L, -2, "since");
    }
    if (range) {
        lua_pushinteger(L, h->start);
        lua_setfield(L, -2, "start");
        lua_pushinteger(L, h->length);
        lua_setfield(L, -2, "length");
    }
}

/* What to say of a holder /proc does not show us: another user's process
 * (root, or its owner, sees it), or for root one outside our pid
 * namespace (a container's, or the host's). */
static const char *unseen_holder(void)
{
    if (geteuid() == 0)
        return "a process atomrun cannot see (in another pid namespace: a container's or the "
               "host's)";
    return "a process atomrun cannot see (another user's: root, or its owner, can see it)";
}

/* "pid 4121 (backup.sh)" or "a process atomrun cannot see" */
static void pushholdertext(lua_State *L, const atomrun_holder *h)
{
    if (h->pid > 0 && h->cmd[0])
        lua_pushfstring(L, "pid %d (%s)", (int)h->pid, h->cmd);
    else if (h->pid > 0)
        lua_pushfstring(L, "pid %d", (int)h->pid);
    else
        lua_pushstring(L, unseen_holder());
}

int arL_faillock(lua_State *L, int r, const char *what, double timeout,
                 const atomrun_holder *h, int range)
{
    int known = h && (h->pid > 0 || h->kind[0]);
    if (known)
        pushholdertext(L, h);
    else
        lua_pushstring(L, "a holder atomrun cannot see");
    if (r == ATOMRUN_EBUSY)
        arL_fail(L, r, "%s is locked by %s", what, lua_tostring(L, -1));
    else
        arL_fail(L, r, "timed out after %f s waiting for %s, locked by %s",
                 timeout, what, lua_tostring(L, -1));
    lua_remove(L, -4);               /* the holder text */
    if (!known)
        return 3;
    arL_pushholder(L, h, range);
    return 4;
}

/* ------------------------------------------------------------ arguments */

const char *arL_checkpath(lua_State *L, int arg)
{
    size_t len;
    const char *path;
    if (lua_type(L, arg) != LUA_TSTRING)   /* no silent number->string */
        luaL_typeerror(L, arg, "string");
    path = lua_tolstring(L, arg, &len);
    if (strlen(path) != len)
        luaL_argerror(L, arg, "path contains a NUL byte");
    return path;
}

int arL_checkmode(lua_State *L, int arg, const char *s)
{
    if (strcmp(s, "exclusive") == 0)
        return ATOMRUN_EXCLUSIVE;
    if (strcmp(s, "shared") == 0)
        return ATOMRUN_SHARED;
    return luaL_argerror(L, arg, lua_pushfstring(L,
        "bad mode '%s' (expected 'exclusive' or 'shared')", s));
}


/* mode (default exclusive), timeout and wait (false: timeout 0) of every
 * lock's options, file or etcd, into *mode and *timeout (left as they are
 * when absent: the caller's defaults). */
void arL_optmodewait(lua_State *L, int arg, int *mode, double *timeout)
{
    if (arL_opt(L, arg, "mode", LUA_TSTRING) != LUA_TNIL) {
        *mode = arL_checkmode(L, arg, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    *timeout = arL_optseconds(L, arg, "timeout", *timeout);
    if (!arL_optbool(L, arg, "wait", 1))
        *timeout = 0;
}

/* -------------------------------------------------------------- options */

static void unknownopt(lua_State *L, int arg, const char *const *names)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (const char *const *n = names; *n; n++) {
        if (n != names)
            luaL_addstring(&b, ", ");
        luaL_addstring(&b, *n);
    }
    luaL_pushresult(&b);
    luaL_argerror(L, arg, lua_pushfstring(L,
        "unknown option '%s' (expected one of: %s)",
        luaL_tolstring(L, -2, NULL), lua_tostring(L, -1)));
}

void arL_checkoptnames(lua_State *L, int arg, const char *const *names)
{
    if (lua_isnoneornil(L, arg))
        return;
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        int known = 0;
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING)
            for (const char *const *n = names; *n && !known; n++)
                known = strcmp(lua_tostring(L, -1), *n) == 0;
        if (!known)
            unknownopt(L, arg, names);
    }
}

int arL_opt(lua_State *L, int arg, const char *name, int type)
{
    int t;
    if (lua_isnoneornil(L, arg))
        return LUA_TNIL;
    t = lua_getfield(L, arg, name);
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return LUA_TNIL;
    }
    if (t != type) {
        luaL_argerror(L, arg, lua_pushfstring(L,
            "option '%s' must be a %s, not a %s", name,
            lua_typename(L, type), luaL_typename(L, -1)));
    }
    return t;
}

int arL_optbool(lua_State *L, int arg, const char *name, int dflt)
{
    if (arL_opt(L, arg, name, LUA_TBOOLEAN) == LUA_TNIL)
        return dflt;
    dflt = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return dflt;
}

double arL_optseconds(lua_State *L, int arg, const char *name, double dflt)
{
    double v;
    if (arL_opt(L, arg, name, LUA_TNUMBER) == LUA_TNIL)
        return dflt;
    v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (isnan(v) || v < 0)
        luaL_argerror(L, arg, lua_pushfstring(L,
            "option '%s' must be a number of seconds >= 0", name));
    return v;
}

int arL_optrange(lua_State *L, int arg, const char *name, int dflt,
                 lua_Integer min, lua_Integer max, const char *what)
{
    lua_Integer v;
    int isint;
    if (arL_opt(L, arg, name, LUA_TNUMBER) == LUA_TNIL)
        return dflt;
    v = lua_tointegerx(L, -1, &isint);
    lua_pop(L, 1);
    if (!isint || v < min || v > max)
        luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be %s", name, what));
    return (int)v;
}

int arL_optperm(lua_State *L, int arg, const char *name, int dflt)
{
    return arL_optrange(L, arg, name, dflt, 0, 07777, "permission bits (0 to 4095, "
                        "i.e. 07777; e.g. tonumber('640', 8))");
}

void arL_checklockopts(lua_State *L, int arg, arL_lockopts *o)
{
    static const char *const names[] = { "mode", "wait", "timeout", "perm",
                                         "create", "holder", NULL };
    arL_checkoptnames(L, arg, names);
    arL_readlockopts(L, arg, o);
}

void arL_readlockopts(lua_State *L, int arg, arL_lockopts *o)
{
    o->mode = ATOMRUN_EXCLUSIVE;
    o->holder = 1;
    o->timeout = ATOMRUN_FOREVER;
    o->perm = 0666;
    o->create = 1;
    if (lua_isnoneornil(L, arg))        /* the common case: the defaults */
        return;
    arL_optmodewait(L, arg, &o->mode, &o->timeout);
    o->perm = arL_optperm(L, arg, "perm", 0666);
    o->create = arL_optbool(L, arg, "create", 1);
    /* Finding the holder reads /proc (every process's descriptors for OFD
     * locks): loops that retry on busy skip it with holder = false. */
    o->holder = arL_optbool(L, arg, "holder", 1);
}

/* -------------------------------------------------------------- classes */

/* __index(obj, key): upvalue 1 the methods, upvalue 2 the getters (as
 * light C functions).  A method needs no check of the object here (the
 * method checks it). */
static int object_index(lua_State *L)
{
    lua_CFunction get;
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
        return 1;
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(2));
    get = lua_tocfunction(L, -1);
    if (!get) {
        lua_pushnil(L);
        return 1;
    }
    lua_settop(L, 1);
    return get(L);
}

void arL_newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                  const luaL_Reg *getters, lua_CFunction gc,
                  lua_CFunction tostring)
{
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_newtable(L);
    luaL_setfuncs(L, getters, 0);
    lua_pushcclosure(L, object_index, 2);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);              /* luaL_newmetatable set __name already */
}
