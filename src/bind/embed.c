/*
 * bind/embed.c -- a ready lua_State and a script runner, for the `atomrun`
 * command and for C hosts alike (the command line uses exactly these).
 * Shaped after lua.c: everything runs under lua_pcall with a traceback.
 */
#include "bind/bind.h"

#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#define AR_CMD_PREFIX "atomrun.cmd."

static int open_all(lua_State *L)
{
    luaL_openlibs(L);
    luaL_requiref(L, "atomrun", luaopen_atomrun, 1);   /* also the global */
    return 0;
}

/*
 * The state a bundled subcommand runs in (`atomrun lock ...`): the same
 * libraries, but the ones the subcommands reach only now and then (math,
 * io, os, utf8, coroutine, debug) are opened on their first use, by the
 * globals' __index, or by require through package.preload.  Opening all
 * of them was a sixth of `atomrun lock -n F true`'s instructions.  Only
 * the subcommands, which are ours, run in it: a user's script gets
 * atomrun_newstate(), with no metatable on its globals.  base, package
 * (require), string (the methods of every string) and table are opened
 * at once.
 */
static const luaL_Reg lazy_libs[] = {
    { LUA_COLIBNAME, luaopen_coroutine }, { LUA_IOLIBNAME, luaopen_io },
    { LUA_OSLIBNAME, luaopen_os }, { LUA_MATHLIBNAME, luaopen_math },
    { LUA_UTF8LIBNAME, luaopen_utf8 }, { LUA_DBLIBNAME, luaopen_debug },
    { NULL, NULL } };

/* __index of the globals: a lazy library by its name, required (so that
 * package.loaded has it, as luaL_openlibs leaves it) and then a plain
 * global, which no later access pays for. */
static int lazy_global(lua_State *L)
{
    const char *name = lua_tostring(L, 2);
    for (const luaL_Reg *lib = lazy_libs; name && lib->name; lib++)
        if (strcmp(name, lib->name) == 0) {
            luaL_requiref(L, lib->name, lib->func, 1);
            return 1;
        }
    return 0;
}

static int open_command(lua_State *L)
{
    static const luaL_Reg now[] = {
        { LUA_GNAME, luaopen_base }, { LUA_LOADLIBNAME, luaopen_package },
        { LUA_STRLIBNAME, luaopen_string }, { LUA_TABLIBNAME, luaopen_table },
        { NULL, NULL } };
    for (const luaL_Reg *lib = now; lib->name; lib++) {
        luaL_requiref(L, lib->name, lib->func, 1);
        lua_pop(L, 1);
    }
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    luaL_setfuncs(L, lazy_libs, 0);
    lua_pop(L, 1);
    lua_pushglobaltable(L);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, lazy_global);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_pop(L, 1);
    luaL_requiref(L, "atomrun", luaopen_atomrun, 1);   /* also the global */
    return 0;
}

/*
 * The allocator of the subcommand's state: a bump arena, then malloc.
 *
 * Starting `atomrun lock -n F true` makes about 1,100 small allocations
 * (the bundled chunks' strings, protos and tables) into a fresh heap, and
 * glibc's malloc took ~190 instructions each there: a sixth of the
 * command's start-up.  Here an allocation is a pointer bump in a static
 * array, zero-filled by the kernel on first touch like the heap pages it
 * replaces.  A freed block is given back only when it is the newest one
 * (Lua often frees or grows what it just allocated); any other stays
 * unused, and once the arena is full every further allocation is
 * malloc's, so a long-running command wastes at most the arena's size.
 * Blocks from before the switch (luaL_newstate's) and after the arena is
 * full are malloc's and go back to realloc/free, as lauxlib's l_alloc does.
 *
 * One state in the process may have it (the command line has one): it is
 * claimed once, never shared, so no locking.  Under AddressSanitizer the
 * arena is left out, so that ASan sees every block; under valgrind
 * (memcheck.h's client requests, no-ops elsewhere) each block is declared
 * as malloc'ed and freed, so memcheck checks these as it checks the heap.
 */
#if defined(__SANITIZE_ADDRESS__)
#define AR_ARENA 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AR_ARENA 0
#endif
#endif
#ifndef AR_ARENA
#define AR_ARENA 1
#endif

#if AR_ARENA
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#endif
#endif
#ifndef VALGRIND_MALLOCLIKE_BLOCK
#define VALGRIND_MALLOCLIKE_BLOCK(p, n, rz, zeroed) ((void)0)
#define VALGRIND_FREELIKE_BLOCK(p, rz) ((void)0)
#define VALGRIND_RESIZEINPLACE_BLOCK(p, o, n, rz) ((void)0)
#define VALGRIND_MAKE_MEM_NOACCESS(p, n) ((void)0)
#endif

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>

#define AR_ARENA_SIZE  (512u * 1024u)
#define AR_ARENA_ALIGN 16u            /* malloc's, max_align_t */

static alignas(AR_ARENA_ALIGN) unsigned char arena[AR_ARENA_SIZE];
static size_t arena_used;            /* bytes handed out, aligned */
static unsigned char *arena_last;    /* the newest block, or NULL */
static int arena_claimed;

static int in_arena(const void *p)
{
    uintptr_t a = (uintptr_t)p, lo = (uintptr_t)arena;
    return a >= lo && a - lo < AR_ARENA_SIZE;
}

static size_t arena_round(size_t n)
{
    return (n + AR_ARENA_ALIGN - 1) & ~(size_t)(AR_ARENA_ALIGN - 1);
}

/* A new block of n bytes at the top, or NULL when it does not fit.  The
 * arena's size and every offset in it are multiples of AR_ARENA_ALIGN, so
 * n fits exactly when its rounded size does. */
static inline void *arena_bump(size_t n)
{
    unsigned char *p;
    if (n > AR_ARENA_SIZE - arena_used)
        return NULL;
    p = arena + arena_used;
    arena_used += arena_round(n);
    arena_last = p;
    VALGRIND_MALLOCLIKE_BLOCK(p, n, 0, 0);
    return p;
}

static void arena_release(unsigned char *p)
{
    VALGRIND_FREELIKE_BLOCK(p, 0);
    if (p == arena_last) {           /* the newest: give it back */
        arena_used = (size_t)(p - arena);
        arena_last = NULL;
    }
}

/* Every call but a new block: free, resize, and malloc's blocks. */
static void *arena_realloc(unsigned char *p, size_t osize, size_t nsize)
{
    unsigned char *q;
    if (p && !in_arena(p)) {          /* malloc's block: as l_alloc */
        if (nsize == 0) {
            free(p);
            return NULL;
        }
        return realloc(p, nsize);
    }
    if (nsize == 0) {
        if (p)
            arena_release(p);
        return NULL;
    }
    if (!p)                             /* did not fit in the arena */
        return malloc(nsize);
    if (nsize <= osize ||
        (p == arena_last &&
         nsize <= AR_ARENA_SIZE - (size_t)(p - arena))) {
        /* shrink in place, or grow the newest block in place */
        if (p == arena_last)
            arena_used = (size_t)(p - arena) + arena_round(nsize);
        VALGRIND_RESIZEINPLACE_BLOCK(p, osize, nsize, 0);
        return p;
    }
    q = arena_bump(nsize);
    if (!q && !(q = malloc(nsize)))
        return NULL;                    /* Lua keeps the old block */
    memcpy(q, p, osize);
    arena_release(p);
    return q;
}

/* lua_Alloc: osize is the block's size when ptr is not NULL.  A new block
 * (nine calls in ten) is the bump alone. */
static void *arena_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    void *q;
    (void)ud;
    if (!ptr && nsize != 0 && (q = arena_bump(nsize)) != NULL)
        return q;
    return arena_realloc(ptr, osize, nsize);
}

static void use_arena(lua_State *L)
{
    if (arena_claimed)
        return;
    arena_claimed = 1;
    VALGRIND_MAKE_MEM_NOACCESS(arena, AR_ARENA_SIZE);
    lua_setallocf(L, arena_alloc, NULL);
}
#endif

/*
 * The subcommand's state is built and its chunk loaded with the collector
 * stopped (as lua.c opens its libraries): all of it is live, so the steps
 * the collector would take meanwhile only mark what stays.  load starts
 * it again once the command's chunk is loaded (atomrun_runscript), before
 * any of the command runs, so a long-running command collects as any
 * state does.
 */
static lua_State *gc_held;

static void gc_release(lua_State *L)
{
    if (L == gc_held) {
        gc_held = NULL;
        lua_gc(L, LUA_GCRESTART);
    }
}

/* command: the subcommand's state (the arena, the collector held). */
static lua_State *newstate_with(lua_CFunction open, int command)
{
    lua_State *L = luaL_newstate();
    if (!L)
        return NULL;
    if (command) {
#if AR_ARENA
        use_arena(L);
#endif
        lua_gc(L, LUA_GCSTOP);
        gc_held = L;
    }
    lua_pushcfunction(L, open);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        fprintf(stderr, "atomrun: cannot initialise Lua: %s\n",
                lua_tostring(L, -1));
        gc_release(L);
        lua_close(L);
        return NULL;
    }
    return L;
}

lua_State *atomrun_newstate(void)
{
    return newstate_with(open_all, 0);
}

lua_State *atomrun_newstate_for(int source)
{
    if (source == ATOMRUN_RUN_COMMAND)
        return newstate_with(open_command, 1);
    return atomrun_newstate();
}

static const ar_bundled *find_command(const char *name)
{
    char modname[256];
    int n = snprintf(modname, sizeof modname, AR_CMD_PREFIX "%s", name);
    if (n < 0 || (size_t)n >= sizeof modname)
        return NULL;              /* longer than any bundled name */
    return arL_findbundled(modname);
}

int atomrun_has_command(const char *name)
{
    return find_command(name) != NULL;
}

const char *atomrun_command(int i, const char **summary)
{
    size_t n = sizeof AR_CMD_PREFIX - 1;
    for (const ar_bundled *m = ar_bundle; m->name; m++) {
        if (strncmp(m->name, AR_CMD_PREFIX, n) != 0 || i-- > 0)
            continue;
        if (summary)
            *summary = m->summary ? m->summary : "";
        return m->name + n;
    }
    return NULL;
}

/* Message handler: the error text plus a traceback (as lua.c does). */
static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") &&
            lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)",
                              luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static int load(lua_State *L, int source, const char *script)
{
    const ar_bundled *m;
    switch (source) {
    case ATOMRUN_RUN_CODE:
        return luaL_loadbuffer(L, script, strlen(script), "=(command line)");
    case ATOMRUN_RUN_COMMAND:
        m = find_command(script);
        if (!m) {
            lua_pushfstring(L, "no such command: %s", script);
            return LUA_ERRFILE;
        }
        return arL_loadbundled(L, m);
    default:
        /* luaL_loadfile skips a first "#!" line, so scripts can start with
         * #!/usr/bin/env atomrun */
        return luaL_loadfile(L, strcmp(script, "-") == 0 ? NULL : script);
    }
}

/* arg[0] is the script, arg[1..n] its arguments, arg[-1] the program. */
static void set_arg(lua_State *L, const char *progname, int source,
                    const char *script, int argc, char **argv)
{
    lua_createtable(L, argc, 2);
    lua_pushstring(L, progname);
    lua_rawseti(L, -2, -1);
    if (source == ATOMRUN_RUN_CODE)
        lua_pushstring(L, "-e");
    else if (source == ATOMRUN_RUN_COMMAND)
        lua_pushfstring(L, "atomrun %s", script);
    else
        lua_pushstring(L, script);
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
}

static int report(lua_State *L, const char *progname)
{
    const char *msg = lua_tostring(L, -1);
    const char *slash = strrchr(progname, '/');
    fprintf(stderr, "%s: %s\n", slash ? slash + 1 : progname,
            msg ? msg : "(no message)");
    fflush(stderr);
    lua_pop(L, 1);
    return 1;
}

int atomrun_runscript(lua_State *L, const char *progname, int source,
                      const char *script, int argc, char **argv)
{
    int base, status;
    if (!progname)
        progname = "atomrun";
    set_arg(L, progname, source, script, argc, argv);
    lua_pushcfunction(L, msghandler);
    base = lua_gettop(L);
    status = load(L, source, script);
    gc_release(L);
    if (status != LUA_OK) {
        int r = report(L, progname);
        lua_pop(L, 1);
        return r;
    }
    if (!lua_checkstack(L, argc + 1)) {
        lua_settop(L, base - 1);
        fprintf(stderr, "%s: too many arguments\n", progname);
        return 1;
    }
    for (int i = 0; i < argc; i++)
        lua_pushstring(L, argv[i]);
    if (lua_pcall(L, argc, 0, base) != LUA_OK) {
        int r = report(L, progname);
        lua_settop(L, base - 1);
        return r;
    }
    lua_settop(L, base - 1);
    return 0;
}
