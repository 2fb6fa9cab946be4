/*
 * bind/bundle.c -- the Lua sources of lua/ compiled in (build/bundle.c): found
 * by require through package.preload, before any search path, so the
 * binary and libatomrun are self-contained.
 */
#include "bind/bind.h"

#include <string.h>

const ar_bundled *arL_findbundled(const char *name)
{
    for (const ar_bundled *m = ar_bundle; m->name; m++)
        if (strcmp(m->name, name) == 0)
            return m;
    return NULL;
}

/*
 * The precompiled chunk when it is safe, else the source.  Bytecode is
 * tied to one Lua release: use it only if the bundler ran the release we
 * were compiled against, and let lua_load check the chunk's header (version,
 * format, sizes of ints and floats) against the Lua that runs it -- a stock
 * lua5.4 loading atomrun.so may be another build.  Any refusal falls back
 * to the source, which always works, only more slowly.
 */
int arL_loadbundled(lua_State *L, const ar_bundled *m)
{
    int binary_ok = m->binary && strcmp(ar_bundle_lua_release, LUA_RELEASE) == 0;
    if (binary_ok &&
        luaL_loadbufferx(L, m->binary, m->binlen, m->chunkname, "b") == LUA_OK)
        return LUA_OK;
    if (binary_ok)
        lua_pop(L, 1);                  /* the refusal's message */
    return luaL_loadbufferx(L, m->source, m->len, m->chunkname, "t");
}

/* The preload loader of one entry (upvalue): run its chunk with the
 * module name, as the file searcher would. */
static int preload_bundled(lua_State *L)
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
        lua_pushcclosure(L, preload_bundled, 1);
        lua_setfield(L, -2, m->name);
    }
    lua_pop(L, 1);
}
