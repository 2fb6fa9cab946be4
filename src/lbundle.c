/*
 * lbundle.c -- the Lua sources of lua/ compiled in (build/bundle.c): found
 * by require through package.preload, before any search path, so the
 * binary and libatomrun are self-contained.
 */
#include "lbind.h"

#include <string.h>

const ar_bundled *arL_findbundled(const char *name)
{
    for (const ar_bundled *m = ar_bundle; m->name; m++)
        if (strcmp(m->name, name) == 0)
            return m;
    return NULL;
}

int arL_loadbundled(lua_State *L, const ar_bundled *m)
{
    return luaL_loadbuffer(L, m->source, m->len, m->chunkname);
}

/* The preload loader of one entry (upvalue): run its chunk with the
 * module name, as the file searcher would. */
static int ar_preload(lua_State *L)
{
    const ar_bundled *m = lua_touserdata(L, lua_upvalueindex(1));
    if (arL_loadbundled(L, m) != LUA_OK)
        return lua_error(L);
    lua_pushstring(L, m->name);
    lua_call(L, 1, 1);
    return 1;
}

void arL_preload_bundle(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_atomrun_core);
    lua_setfield(L, -2, "atomrun.core");
    for (const ar_bundled *m = ar_bundle; m->name; m++) {
        lua_pushlightuserdata(L, (void *)m);
        lua_pushcclosure(L, ar_preload, 1);
        lua_setfield(L, -2, m->name);
    }
    lua_pop(L, 1);
}
