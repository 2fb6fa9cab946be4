/*
 * lfile.c -- whole files: create(), replace(), read(), and the path
 * functions stat() and mkdir().
 */
#define _GNU_SOURCE
#include "lbind.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ================================================ create / replace / read */

static const char *ar_stage_text(int stage)
{
    switch (stage) {
    case ATOMRUN_STAGE_RESOLVE: return "following the symlink failed";
    case ATOMRUN_STAGE_OPEN:    return "cannot open";
    case ATOMRUN_STAGE_WRITE:   return "writing the new contents failed";
    case ATOMRUN_STAGE_SYNC:    return "fsync of the new contents failed";
    case ATOMRUN_STAGE_LINK:    return "moving the new file into place failed";
    default:                    return "failed";
    }
}

/* The 4th result of a failed create/replace: the step that failed, so a
 * caller need not read it out of the message.  NULL: none (refused before
 * any step, e.g. "exists"). */
static const char *ar_stage_name(int stage)
{
    switch (stage) {
    case ATOMRUN_STAGE_RESOLVE: return "resolve";
    case ATOMRUN_STAGE_OPEN:    return "open";
    case ATOMRUN_STAGE_WRITE:   return "write";
    case ATOMRUN_STAGE_SYNC:    return "sync";
    case ATOMRUN_STAGE_LINK:    return "link";
    case ATOMRUN_STAGE_DIRSYNC: return "dirsync";
    default:                    return NULL;
    }
}

static void ar_checkwriteopts(lua_State *L, int arg, atomrun_write_opts *o,
                              int replace)
{
    static const char *const create_names[] = { "durable", "mode", NULL };
    static const char *const replace_names[] = { "durable", "mode", "follow",
                                                 NULL };
    atomrun_write_opts_init(o);
    arL_checkoptnames(L, arg, replace ? replace_names : create_names);
    o->durable = arL_optbool(L, arg, "durable", 1);
    o->mode = arL_optperm(L, arg, "mode", -1);
    if (replace)
        o->follow = arL_optbool(L, arg, "follow", 0);
}

static int ar_pushwritemsg(lua_State *L, int r, int replace,
                           const char *path, const atomrun_write_opts *o)
{
    if (r == -EEXIST && (!o->stage || o->stage == ATOMRUN_STAGE_LINK))
        return arL_fail(L, r, "cannot create %s: it already exists", path);
    if (o->stage == ATOMRUN_STAGE_DIRSYNC)
        return arL_fail(L, r, "%s: %s, but the directory entry may not be "
            "durable (fsync of the directory: %s)", path,
            replace ? "replaced" : "created", atomrun_strerror(r));
    return arL_fail(L, r, "cannot %s %s: %s: %s%s",
        replace ? "replace" : "create", path, ar_stage_text(o->stage),
        atomrun_strerror(r), replace ? " (the old contents are intact)" : "");
}

/* nil, message, code [, stage] */
static int ar_failwrite(lua_State *L, int r, int replace, const char *path,
                        const atomrun_write_opts *o)
{
    const char *stage = ar_stage_name(o->stage);
    int n = ar_pushwritemsg(L, r, replace, path, o);
    if (!stage)
        return n;
    lua_pushstring(L, stage);
    return n + 1;
}

int arL_create(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    const char *data = NULL;
    size_t len = 0;
    atomrun_write_opts o;
    int r;

    if (!lua_isnoneornil(L, 2)) {
        if (lua_type(L, 2) != LUA_TSTRING)   /* no silent number->string */
            luaL_typeerror(L, 2, "string or nil");
        data = lua_tolstring(L, 2, &len);
    }
    ar_checkwriteopts(L, 3, &o, 0);
    r = atomrun_create(path, data, len, &o);
    if (r < 0)
        return ar_failwrite(L, r, 0, path, &o);
    lua_pushboolean(L, 1);
    return 1;
}

int arL_replace(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    size_t len;
    const char *data;
    atomrun_write_opts o;
    int r;

    if (lua_type(L, 2) != LUA_TSTRING)   /* no silent number->string */
        luaL_typeerror(L, 2, "string");
    data = lua_tolstring(L, 2, &len);
    ar_checkwriteopts(L, 3, &o, 1);
    r = atomrun_replace(path, data, len, &o);
    if (r < 0)
        return ar_failwrite(L, r, 1, path, &o);
    lua_pushboolean(L, 1);
    return 1;
}

int arL_read(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    char *data;
    size_t len;
    int r = atomrun_read(path, &data, &len);
    if (r == -EINVAL)
        return arL_fail(L, r, "cannot read %s: not a regular file", path);
    if (r < 0)
        return arL_failerrno(L, r, "cannot read", path);
    lua_pushlstring(L, data, len);
    free(data);
    return 1;
}

/* ======================================================== stat / mkdir */

static void ar_setint(lua_State *L, const char *key, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, key);
}

int arL_stat(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    atomrun_stat st;
    int follow = 1, r;

    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TBOOLEAN);
        follow = lua_toboolean(L, 2);
    }
    r = atomrun_stat_path(path, follow, &st);
    if (r < 0)
        return arL_failerrno(L, r, "cannot stat", path);
    lua_createtable(L, 0, 8);
    ar_setint(L, "dev", (lua_Integer)st.dev);
    ar_setint(L, "ino", (lua_Integer)st.ino);
    ar_setint(L, "size", (lua_Integer)st.size);
    ar_setint(L, "uid", st.uid);
    ar_setint(L, "gid", st.gid);
    ar_setint(L, "mode", st.mode);
    lua_pushnumber(L, st.mtime);
    lua_setfield(L, -2, "mtime");
    lua_pushstring(L, st.type);
    lua_setfield(L, -2, "type");
    return 1;
}

int arL_mkdir(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    lua_Integer mode = luaL_optinteger(L, 2, 0777);
    int r;
    if (mode < 0 || mode > 07777)      /* -1 would mean setuid|setgid|sticky */
        luaL_argerror(L, 2, "mode must be permission bits (0 to 4095, i.e. "
                      "07777)");
    r = atomrun_mkdir(path, (int)mode);
    if (r < 0)
        return arL_failerrno(L, r, "cannot create directory", path);
    lua_pushboolean(L, 1);
    return 1;
}
