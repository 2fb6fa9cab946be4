/*
 * bind/module.c -- the openers of the Lua binding (see atomrun.h), and the
 * small functions that belong to no handle: now, sleep, held, errname,
 * strerror, probe.  The binding's conventions are in bind/bind.h.
 */
#define _GNU_SOURCE
#include "bind/bind.h"

#include <math.h>

static int l_now(lua_State *L)
{
    lua_pushnumber(L, ar_now());
    return 1;
}

static int l_sleep(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    if (isnan(s) || s < 0)
        luaL_argerror(L, 1, "seconds must be a number >= 0");
    ar_sleep(s);
    return 0;
}

/* The number of locks this state holds, files and etcd names (for tests
 * and diagnostics). */
static int l_held(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)ar_heldset_count(arL_heldset(L)));
    return 1;
}

/* errname(n) -> the code string of errno n (either sign), "OK" for 0, and
 * "EUNKNOWN" (atomrun_err_name's word) for a number no result has: an
 * errno the C library cannot name, or a number beyond an int, whose cast
 * would wrap (2^32 is not 0, "OK"). */
static int l_errname(lua_State *L)
{
    lua_Integer e = luaL_checkinteger(L, 1);
    if (e < -0x7fffffff || e > 0x7fffffff)
        lua_pushliteral(L, "EUNKNOWN");
    else
        lua_pushstring(L, atomrun_err_name(e > 0 ? (int)-e : (int)e));
    return 1;
}

/* strerror(code) -> the sentence for a code string ("ENOENT", "busy") or
 * an errno number (positive, or negative as the core returns it). */
static int l_strerror(lua_State *L)
{
    int r;
    if (lua_type(L, 1) == LUA_TSTRING) {
        r = ar_err_from_name(lua_tostring(L, 1));
        if (r == 0)
            return luaL_argerror(L, 1, lua_pushfstring(L,
                "unknown error code '%s'", lua_tostring(L, 1)));
    } else {
        lua_Integer e = luaL_checkinteger(L, 1);
        if (e == 0 || e < -0x7fffffff || e > 0x7fffffff)
            return luaL_argerror(L, 1, "errno must be a non-zero int");
        r = e > 0 ? (int)-e : (int)e;
    }
    lua_pushstring(L, atomrun_strerror(r));
    return 1;
}

static void setfield_probe(lua_State *L, const char *key, int v)
{
    if (v < 0)
        lua_pushstring(L, atomrun_err_name(v));
    else
        lua_pushboolean(L, v);
    lua_setfield(L, -2, key);
}

/* probe(dir) -> { fstype=, remote=, volatile=, flock=, ofd=, tmpfile=,
 * noreplace=, dirsync= }: true, false (no effect) or the errno name. */
static int l_probe(lua_State *L)
{
    const char *dir = arL_checkpath(L, 1);
    atomrun_fsinfo fi;
    int r = atomrun_probe(dir, &fi);
    if (r < 0)
        return arL_failerrno(L, r, "cannot probe", dir);
    lua_createtable(L, 0, 8);
    lua_pushstring(L, fi.fstype);
    lua_setfield(L, -2, "fstype");
    lua_pushboolean(L, fi.remote);
    lua_setfield(L, -2, "remote");
    lua_pushboolean(L, fi.volatile_);
    lua_setfield(L, -2, "volatile");
    setfield_probe(L, "flock", fi.flock);
    setfield_probe(L, "ofd", fi.ofd);
    setfield_probe(L, "tmpfile", fi.tmpfile);
    setfield_probe(L, "noreplace", fi.noreplace);
    setfield_probe(L, "dirsync", fi.dirsync);
    if (fi.scratch < 0) {       /* these probes did not run: say why */
        lua_pushstring(L, atomrun_err_name(fi.scratch));
        lua_setfield(L, -2, "scratch");
    }
    return 1;
}

int luaopen_atomrun_core(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        /* "lock": set by arL_openlock, with upvalues */
        { "open", arL_open },
        { "create", arL_create },     { "replace", arL_replace },
        { "read", arL_read },         { "run", arL_run },
        { "exec", arL_exec },         { "now", l_now },
        { "sleep", l_sleep },      { "pid", arL_pid },
        { "uid", arL_uid },           { "hostname", arL_hostname },
        { "stat", arL_stat },
        { "mkdir", arL_mkdir },       { "held", l_held },
        { "resolve", arL_resolve },
        { "errname", l_errname },  { "strerror", l_strerror },
        { "probe", l_probe },      { "isatty", arL_isatty },
        { "lockfd", arL_lockfd },     { "unlockfd", arL_unlockfd },
        { "who", arL_who },           { "holds", arL_holds },
        { NULL, NULL } };

    luaL_newlib(L, funcs);
    arL_openremote(L);               /* the etcd handle and _etcd_* */
    arL_openlock(L);
    lua_pushstring(L, ATOMRUN_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, atomrun_range_mechanism());
    lua_setfield(L, -2, "range_mechanism");
    return 1;
}

/* For C hosts: the bundle in package.preload, then require "atomrun"
 * (lua/atomrun/init.lua, which requires atomrun.core).  Also what a
 * require "atomrun" that reaches this opener gets: the preload entry just
 * set is the bundled init.lua, so the nested require does not recurse. */
int luaopen_atomrun(lua_State *L)
{
    arL_preload_bundle(L);
    lua_getglobal(L, "require");
    lua_pushstring(L, "atomrun");
    lua_call(L, 1, 1);
    return 1;
}
