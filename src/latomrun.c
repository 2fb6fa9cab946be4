/*
 * latomrun.c -- the Lua binding: the only C file that knows Lua.
 *
 * Conventions, after Lua's own liolib.c:
 *   - expected failures return  nil, message, code [, holder]
 *     (code: "busy", "timeout", "exists", "deadlock" or an errno name);
 *   - programming mistakes (wrong types, unknown options, negative lengths)
 *     raise a Lua error that names the argument;
 *   - handles are userdata whose __gc is their __close, with a "closed"
 *     state checked by every method.
 *
 * Every lock this Lua state holds is on one list (ar_registry), so that a
 * request that could only be granted by releasing one of them fails at once
 * with "deadlock" instead of hanging, and so that run() knows which
 * descriptors a child should inherit.
 */
#define _GNU_SOURCE
#include "atomrun.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#define AR_LOCK_MT  "atomrun.lock"
#define AR_FILE_MT  "atomrun.file"
#define AR_RANGE_MT "atomrun.range"

extern char **environ;

/* ====================================================== held-lock registry */

enum { AR_KIND_FLOCK, AR_KIND_RANGE };

typedef struct ar_held {
    struct ar_held *prev, *next;
    int      kind;
    int      mode;
    int      fd;
    uint64_t dev, ino;
    const void *owner;         /* ranges: the file handle that holds them */
    int64_t  start, length;    /* ranges; length 0 = to end of file */
} ar_held;

/* The list head lives in a userdata in the registry, one per Lua state:
 * userdata never move, so the intrusive links stay valid. */
typedef struct ar_registry {
    ar_held head;
} ar_registry;

static const char ar_registry_key = 'r';

static ar_registry *ar_get_registry(lua_State *L)
{
    ar_registry *reg;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &ar_registry_key) == LUA_TUSERDATA) {
        reg = lua_touserdata(L, -1);
        lua_pop(L, 1);
        return reg;
    }
    lua_pop(L, 1);
    reg = lua_newuserdatauv(L, sizeof *reg, 0);
    reg->head.prev = reg->head.next = &reg->head;
    lua_rawsetp(L, LUA_REGISTRYINDEX, &ar_registry_key);
    return reg;
}

static void ar_held_link(ar_registry *reg, ar_held *h)
{
    h->next = reg->head.next;
    h->prev = &reg->head;
    reg->head.next->prev = h;
    reg->head.next = h;
}

static void ar_held_unlink(ar_held *h)
{
    if (!h->next)
        return;
    h->prev->next = h->next;
    h->next->prev = h->prev;
    h->next = h->prev = NULL;
}

static int ar_modes_conflict(int a, int b)
{
    return a == ATOMRUN_EXCLUSIVE || b == ATOMRUN_EXCLUSIVE;
}

static int ar_ranges_overlap(int64_t s1, int64_t l1, int64_t s2, int64_t l2)
{
    /* [s, s+l) with l == 0 meaning [s, infinity) */
    int before = l1 != 0 && s1 + l1 <= s2;
    int after = l2 != 0 && s2 + l2 <= s1;
    return !before && !after;
}

/* A lock this state holds that the request (kind, file, mode, range)
 * conflicts with, other than through `owner`. */
static const ar_held *ar_find_conflict(ar_registry *reg, int kind,
                                       uint64_t dev, uint64_t ino, int mode,
                                       const void *owner, int64_t start,
                                       int64_t length)
{
    for (ar_held *h = reg->head.next; h != &reg->head; h = h->next) {
        if (h->kind != kind || h->dev != dev || h->ino != ino)
            continue;
        if (owner && h->owner == owner)
            continue;
        if (!ar_modes_conflict(h->mode, mode))
            continue;
        if (kind == AR_KIND_RANGE &&
            !ar_ranges_overlap(h->start, h->length, start, length))
            continue;
        return h;
    }
    return NULL;
}

/* ================================================================ helpers */

static const char *ar_mode_name(int mode)
{
    return mode == ATOMRUN_SHARED ? "shared" : "exclusive";
}

/* nil, message, code  -- like luaL_fileresult, with our code names. */
static int ar_pushfail(lua_State *L, int result, const char *fmt, ...)
{
    va_list ap;
    lua_pushnil(L);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_pushstring(L, atomrun_err_name(result));
    return 3;
}

static int ar_pusherrno(lua_State *L, int result, const char *what,
                        const char *path)
{
    return ar_pushfail(L, result, "%s%s%s: %s", what, *what ? " " : "", path,
                       atomrun_strerror(result));
}

static void ar_push_holder(lua_State *L, const atomrun_holder *h, int range)
{
    lua_createtable(L, 0, 6);
    if (h->pid > 0) {
        lua_pushinteger(L, h->pid);
        lua_setfield(L, -2, "pid");
    }
    lua_pushstring(L, ar_mode_name(h->mode));
    lua_setfield(L, -2, "mode");
    if (h->cmd[0]) {
        lua_pushstring(L, h->cmd);
        lua_setfield(L, -2, "cmd");
    }
    lua_pushstring(L, h->kind);
    lua_setfield(L, -2, "kind");
    if (range) {
        lua_pushinteger(L, h->start);
        lua_setfield(L, -2, "start");
        lua_pushinteger(L, h->length);
        lua_setfield(L, -2, "length");
    }
}

/* "pid 4121 (backup.sh)" or "a process atomrun cannot see" */
static void ar_push_holder_text(lua_State *L, const atomrun_holder *h)
{
    if (h->pid > 0 && h->cmd[0])
        lua_pushfstring(L, "pid %d (%s)", (int)h->pid, h->cmd);
    else if (h->pid > 0)
        lua_pushfstring(L, "pid %d", (int)h->pid);
    else
        lua_pushstring(L, "a process atomrun cannot see (another user's?)");
}

static const char *ar_check_path(lua_State *L, int arg)
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

/* ------------------------------------------------------------- options */

typedef struct ar_lockopts {
    int    mode;
    double timeout;           /* ATOMRUN_FOREVER, 0, or seconds */
    int    perm;
    int    create;
    int    holder;            /* look up who holds it on busy/timeout */
} ar_lockopts;

/* Each option table is checked against the names it may hold: a typo
 * (timout = 5) must be an error, not a silently infinite wait. */
static void ar_check_option_names(lua_State *L, int arg, const char *const *names)
{
    if (lua_isnoneornil(L, arg))
        return;
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        int known = 0;
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING)
            for (const char *const *n = names; *n; n++)
                if (strcmp(lua_tostring(L, -1), *n) == 0)
                    known = 1;
        if (!known) {
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
    }
}

/* opts[name] on the stack if present (returns its type), else nothing. */
static int ar_opt(lua_State *L, int arg, const char *name, int type)
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

static int ar_opt_bool(lua_State *L, int arg, const char *name, int dflt)
{
    if (ar_opt(L, arg, name, LUA_TBOOLEAN) == LUA_TNIL)
        return dflt;
    dflt = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return dflt;
}

static double ar_opt_seconds(lua_State *L, int arg, const char *name,
                             double dflt)
{
    double v;
    if (ar_opt(L, arg, name, LUA_TNUMBER) == LUA_TNIL)
        return dflt;
    v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (isnan(v) || v < 0)
        luaL_argerror(L, arg, lua_pushfstring(L,
            "option '%s' must be a number of seconds >= 0", name));
    return v;
}

static int ar_opt_perm(lua_State *L, int arg, const char *name, int dflt)
{
    lua_Integer v;
    int isint;
    if (ar_opt(L, arg, name, LUA_TNUMBER) == LUA_TNIL)
        return dflt;
    v = lua_tointegerx(L, -1, &isint);
    lua_pop(L, 1);
    if (!isint || v < 0 || v > 07777)
        luaL_argerror(L, arg, lua_pushfstring(L,
            "option '%s' must be permission bits (0 to 4095, i.e. 07777; "
            "e.g. tonumber('640', 8))", name));
    return (int)v;
}

static int ar_parse_mode(lua_State *L, int arg, const char *s)
{
    if (strcmp(s, "exclusive") == 0)
        return ATOMRUN_EXCLUSIVE;
    if (strcmp(s, "shared") == 0)
        return ATOMRUN_SHARED;
    return luaL_argerror(L, arg, lua_pushfstring(L,
        "bad mode '%s' (expected 'exclusive' or 'shared')", s));
}

static void ar_check_lockopts(lua_State *L, int arg, ar_lockopts *o)
{
    static const char *const names[] = { "mode", "wait", "timeout", "perm",
                                         "create", "holder", NULL };
    o->mode = ATOMRUN_EXCLUSIVE;
    o->holder = 1;
    o->timeout = ATOMRUN_FOREVER;
    o->perm = 0666;
    o->create = 1;
    if (lua_isnoneornil(L, arg))        /* the common case: the defaults */
        return;
    ar_check_option_names(L, arg, names);
    if (ar_opt(L, arg, "mode", LUA_TSTRING) != LUA_TNIL) {
        o->mode = ar_parse_mode(L, arg, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    o->timeout = ar_opt_seconds(L, arg, "timeout", ATOMRUN_FOREVER);
    if (!ar_opt_bool(L, arg, "wait", 1))
        o->timeout = 0;
    o->perm = ar_opt_perm(L, arg, "perm", 0666);
    o->create = ar_opt_bool(L, arg, "create", 1);
    /* Finding the holder reads /proc (every process's descriptors for OFD
     * locks): loops that retry on busy skip it with holder = false. */
    o->holder = ar_opt_bool(L, arg, "holder", 1);
}

/* The failure of a lock request, naming the holder when it is known. */
static int ar_push_lockfail(lua_State *L, int r, const char *what,
                            double timeout, const atomrun_holder *h)
{
    int known = h && (h->pid > 0 || h->kind[0]);
    if (h && known)
        ar_push_holder_text(L, h);
    else
        lua_pushstring(L, "a holder atomrun cannot see");
    if (r == ATOMRUN_EBUSY)
        ar_pushfail(L, r, "%s is locked by %s", what, lua_tostring(L, -1));
    else
        ar_pushfail(L, r, "timed out after %f s waiting for %s, locked by %s",
                    timeout, what, lua_tostring(L, -1));
    lua_remove(L, -4);               /* the holder text */
    if (h && known) {
        ar_push_holder(L, h, 0);
        return 4;
    }
    return 3;
}

/* ================================================================ lock() */

typedef struct ar_lock {
    ar_held held;             /* on the registry list while locked */
    int     locked;
    int     closed;           /* fd gone */
} ar_lock;

static ar_lock *ar_checklock(lua_State *L, int arg)
{
    return luaL_checkudata(L, arg, AR_LOCK_MT);
}

static void ar_lock_release(ar_lock *lk)
{
    if (lk->closed)
        return;
    ar_held_unlink(&lk->held);
    /* Closing the descriptor releases the flock lock with it.  The lock
     * FILE stays: deleting it on release would let the next waiter, who
     * already opened the old inode, lock a file that is no longer at the
     * path while a newcomer creates and locks a new one.  Two holders. */
    atomrun_close(lk->held.fd);
    lk->locked = 0;
    lk->closed = 1;
}

static int ar_lock_unlock(lua_State *L)
{
    ar_lock_release(ar_checklock(L, 1));
    lua_pushboolean(L, 1);
    return 1;
}

static int ar_lock_gc(lua_State *L)
{
    ar_lock_release(ar_checklock(L, 1));
    return 0;
}

static int ar_lock_tostring(lua_State *L)
{
    ar_lock *lk = ar_checklock(L, 1);
    lua_getiuservalue(L, 1, 1);
    lua_pushfstring(L, "atomrun.lock (%s, %s, %s)", lua_tostring(L, -1),
                    ar_mode_name(lk->held.mode),
                    lk->locked ? "held" : "released");
    return 1;
}

/* __index functions look for the method first: a method needs no check of
 * the object here (the method checks it), and `lk:unlock()` is the lookup
 * made on every lock's hot path. */
static int ar_lock_index(lua_State *L)
{
    const char *key = luaL_checkstring(L, 2);
    ar_lock *lk;
    if (strcmp(key, "unlock") == 0) {
        lua_pushcfunction(L, ar_lock_unlock);
        return 1;
    }
    lk = ar_checklock(L, 1);
    if (strcmp(key, "path") == 0)
        lua_getiuservalue(L, 1, 1);
    else if (strcmp(key, "mode") == 0)
        lua_pushstring(L, ar_mode_name(lk->held.mode));
    else if (strcmp(key, "locked") == 0)
        lua_pushboolean(L, lk->locked);
    else
        lua_pushnil(L);
    return 1;
}

static int ar_l_lock(lua_State *L)
{
    const char *path = ar_check_path(L, 1);
    ar_lockopts o;
    atomrun_holder h;
    ar_registry *reg;
    uint64_t dev, ino;
    int fd, r, writable;

    ar_check_lockopts(L, 2, &o);
    lua_settop(L, 2);
    reg = ar_get_registry(L);
    fd = atomrun_lockfile_open(path, o.create, o.perm, &writable);
    if (fd < 0)
        return ar_pusherrno(L, fd, "cannot open lock file", path);
    r = atomrun_file_id(fd, &dev, &ino);
    if (r < 0) {
        atomrun_close(fd);
        return ar_pusherrno(L, r, "cannot stat lock file", path);
    }
    if (o.timeout != 0 &&
        ar_find_conflict(reg, AR_KIND_FLOCK, dev, ino, o.mode, NULL, 0, 0)) {
        atomrun_close(fd);
        return ar_pushfail(L, -EDEADLK,
            "%s is already locked by this script; waiting for it to be "
            "released would wait forever", path);
    }
    r = atomrun_flock(fd, o.mode, o.timeout);
    if (r < 0) {
        int known = 0;
        if ((r == ATOMRUN_EBUSY || r == ATOMRUN_ETIMEOUT) && o.holder)
            known = atomrun_flock_holder(fd, o.mode, &h) == 1;
        atomrun_close(fd);
        if (r == ATOMRUN_EBUSY || r == ATOMRUN_ETIMEOUT)
            return ar_push_lockfail(L, r, path, o.timeout, known ? &h : NULL);
        return ar_pusherrno(L, r, "cannot lock", path);
    }
    ar_lock *lk = lua_newuserdatauv(L, sizeof *lk, 1);
    memset(lk, 0, sizeof *lk);
    lk->held.kind = AR_KIND_FLOCK;
    lk->held.mode = o.mode;
    lk->held.fd = fd;
    lk->held.dev = dev;
    lk->held.ino = ino;
    lk->locked = 1;
    ar_held_link(reg, &lk->held);
    luaL_setmetatable(L, AR_LOCK_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

/* ======================================================== open() / ranges */

typedef struct ar_file {
    int fd;                   /* -1 once closed */
    int writable;
    uint64_t dev, ino;
} ar_file;

typedef struct ar_range {
    ar_held held;
    int     locked;
} ar_range;

static ar_file *ar_checkfile(lua_State *L, int arg)
{
    ar_file *f = luaL_checkudata(L, arg, AR_FILE_MT);
    if (f->fd < 0)
        luaL_error(L, "attempt to use a closed atomrun file");
    return f;
}

static void ar_file_release(lua_State *L, ar_file *f)
{
    ar_registry *reg;
    if (f->fd < 0)
        return;
    /* Closing the description drops every range it holds: forget them. */
    reg = ar_get_registry(L);
    for (ar_held *h = reg->head.next, *next; h != &reg->head; h = next) {
        next = h->next;
        if (h->kind == AR_KIND_RANGE && h->owner == f) {
            ar_held_unlink(h);
            ((ar_range *)h)->locked = 0;
        }
    }
    atomrun_close(f->fd);
    f->fd = -1;
}

static int ar_file_close(lua_State *L)
{
    ar_file *f = luaL_checkudata(L, 1, AR_FILE_MT);
    ar_file_release(L, f);
    lua_pushboolean(L, 1);
    return 1;
}

static int ar_file_tostring(lua_State *L)
{
    ar_file *f = luaL_checkudata(L, 1, AR_FILE_MT);
    lua_getiuservalue(L, 1, 1);
    lua_pushfstring(L, "atomrun.file (%s%s)", lua_tostring(L, -1),
                    f->fd < 0 ? ", closed" : "");
    return 1;
}

/* A byte offset or length: an integer, named in the error otherwise
 * (luaL_checkinteger would take "10" and say only "no integer
 * representation" for 1.5). */
static int64_t ar_check_offset(lua_State *L, int arg, const char *name)
{
    int isint;
    lua_Integer v;
    if (lua_type(L, arg) != LUA_TNUMBER)
        luaL_typeerror(L, arg, "integer");
    v = lua_tointegerx(L, arg, &isint);
    if (!isint)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a whole number "
            "of bytes below 2^63, not %s", name, luaL_tolstring(L, arg, NULL)));
    return v;
}

static void ar_check_range_args(lua_State *L, int64_t *start, int64_t *length)
{
    *start = ar_check_offset(L, 2, "start");
    *length = ar_check_offset(L, 3, "length");
    if (*start < 0)
        luaL_argerror(L, 2, "start must be >= 0");
    if (*length < 0)
        luaL_argerror(L, 3, "length must be >= 0 (0 means to end of file)");
    if (*length > 0 && *start > INT64_MAX - *length)
        luaL_argerror(L, 3, "start + length overflows a file offset");
}

/* "bytes 10+5" / "bytes 10 to end of file", for messages */
static const char *ar_range_text(lua_State *L, int64_t start, int64_t length)
{
    if (length == 0)
        return lua_pushfstring(L, "bytes %I to end of file", (lua_Integer)start);
    return lua_pushfstring(L, "bytes %I+%I", (lua_Integer)start,
                           (lua_Integer)length);
}

/* "PATH (bytes 10+5)" for messages.  Built only when a message needs it:
 * formatting it on every call cost a third of a lock+unlock pair. */
static const char *ar_range_what(lua_State *L, int64_t start, int64_t length)
{
    const char *path;
    lua_getiuservalue(L, 1, 1);
    path = lua_tostring(L, -1);
    return lua_pushfstring(L, "%s (%s)", path, ar_range_text(L, start, length));
}

static int ar_file_lock(lua_State *L)
{
    ar_file *f = ar_checkfile(L, 1);
    int64_t start, length;
    ar_lockopts o;
    atomrun_holder h;
    const ar_held *c;
    const char *what;
    ar_registry *reg;
    int r;

    ar_check_range_args(L, &start, &length);
    ar_check_lockopts(L, 4, &o);
    lua_settop(L, 4);
    reg = ar_get_registry(L);
    /* The kernel merges overlapping ranges of one description into one
     * lock, so a later unlock of either would silently free both.  We
     * refuse the overlap instead: it is always a bug in the script. */
    {
        for (ar_held *hd = reg->head.next; hd != &reg->head; hd = hd->next)
            if (hd->kind == AR_KIND_RANGE && hd->owner == f &&
                ar_ranges_overlap(hd->start, hd->length, start, length)) {
                what = ar_range_what(L, start, length);
                return luaL_error(L, "%s overlaps %s already locked through "
                    "this handle (unlock it first, or use another handle)",
                    what, ar_range_text(L, hd->start, hd->length));
            }
    }
    if (o.mode == ATOMRUN_EXCLUSIVE && !f->writable)
        return ar_pushfail(L, -EBADF, "cannot lock %s exclusive: the file is "
            "open read-only (no write permission), which allows only "
            "shared locks", ar_range_what(L, start, length));
    c = ar_find_conflict(reg, AR_KIND_RANGE, f->dev, f->ino, o.mode, f, start,
                         length);
    if (c && o.timeout != 0) {
        what = ar_range_what(L, start, length);
        return ar_pushfail(L, -EDEADLK, "%s conflicts with %s held through "
            "another handle of this script; waiting would wait forever",
            what, ar_range_text(L, c->start, c->length));
    }
    r = atomrun_range_lock(f->fd, o.mode, start, length, o.timeout);
    if (r == ATOMRUN_EBUSY || r == ATOMRUN_ETIMEOUT) {
        int known = o.holder &&
                    atomrun_range_test(f->fd, o.mode, start, length, &h) == 1;
        int n = ar_push_lockfail(L, r, ar_range_what(L, start, length),
                                 o.timeout, known ? &h : NULL);
        if (n == 4) {           /* ranges: the holder has start and length */
            lua_pop(L, 1);
            ar_push_holder(L, &h, 1);
        }
        return n;
    }
    if (r < 0)
        return ar_pusherrno(L, r, "cannot lock",
                            ar_range_what(L, start, length));
    ar_range *rg = lua_newuserdatauv(L, sizeof *rg, 1);
    memset(rg, 0, sizeof *rg);
    rg->held.kind = AR_KIND_RANGE;
    rg->held.mode = o.mode;
    rg->held.fd = f->fd;
    rg->held.dev = f->dev;
    rg->held.ino = f->ino;
    rg->held.owner = f;
    rg->held.start = start;
    rg->held.length = length;
    rg->locked = 1;
    ar_held_link(reg, &rg->held);
    luaL_setmetatable(L, AR_RANGE_MT);
    lua_pushvalue(L, 1);              /* keeps the file alive */
    lua_setiuservalue(L, -2, 1);
    return 1;
}

static int ar_file_test(lua_State *L)
{
    ar_file *f = ar_checkfile(L, 1);
    int64_t start, length;
    atomrun_holder h;
    int mode = ATOMRUN_EXCLUSIVE, r;

    ar_check_range_args(L, &start, &length);
    if (!lua_isnoneornil(L, 4))
        mode = ar_parse_mode(L, 4, luaL_checkstring(L, 4));
    r = atomrun_range_test(f->fd, mode, start, length, &h);
    if (r < 0) {
        lua_getiuservalue(L, 1, 1);
        return ar_pusherrno(L, r, "cannot test a lock on", lua_tostring(L, -1));
    }
    if (r == 0) {
        lua_pushnil(L);
        return 1;
    }
    ar_push_holder(L, &h, 1);
    return 1;
}

static int ar_file_index(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "lock", ar_file_lock }, { "test", ar_file_test },
        { "close", ar_file_close }, { NULL, NULL } };
    const char *key = luaL_checkstring(L, 2);
    ar_file *f;
    for (const luaL_Reg *m = methods; m->name; m++)
        if (strcmp(key, m->name) == 0) {
            lua_pushcfunction(L, m->func);
            return 1;
        }
    f = luaL_checkudata(L, 1, AR_FILE_MT);
    if (strcmp(key, "path") == 0) {
        lua_getiuservalue(L, 1, 1);
        return 1;
    }
    if (strcmp(key, "writable") == 0) {
        lua_pushboolean(L, f->writable);
        return 1;
    }
    lua_pushnil(L);
    return 1;
}

static int ar_l_open(lua_State *L)
{
    static const char *const names[] = { "create", "perm", NULL };
    const char *path = ar_check_path(L, 1);
    int create, perm, fd, writable, r;
    uint64_t dev, ino;

    ar_check_option_names(L, 2, names);
    create = ar_opt_bool(L, 2, "create", 1);
    perm = ar_opt_perm(L, 2, "perm", 0666);
    fd = atomrun_lockfile_open(path, create, perm, &writable);
    if (fd < 0)
        return ar_pusherrno(L, fd, "cannot open", path);
    r = atomrun_file_id(fd, &dev, &ino);
    if (r < 0) {
        atomrun_close(fd);
        return ar_pusherrno(L, r, "cannot stat", path);
    }
    ar_file *f = lua_newuserdatauv(L, sizeof *f, 1);
    f->fd = fd;
    f->writable = writable;
    f->dev = dev;
    f->ino = ino;
    luaL_setmetatable(L, AR_FILE_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

static ar_range *ar_checkrange(lua_State *L, int arg)
{
    return luaL_checkudata(L, arg, AR_RANGE_MT);
}

static void ar_range_release(lua_State *L, int arg, ar_range *rg)
{
    ar_file *f;
    if (!rg->locked)
        return;
    lua_getiuservalue(L, arg, 1);
    f = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (f && f->fd >= 0)
        atomrun_range_unlock(f->fd, rg->held.start, rg->held.length);
    ar_held_unlink(&rg->held);
    rg->locked = 0;
}

static int ar_range_unlock(lua_State *L)
{
    ar_range_release(L, 1, ar_checkrange(L, 1));
    lua_pushboolean(L, 1);
    return 1;
}

static int ar_range_gc(lua_State *L)
{
    ar_range_release(L, 1, ar_checkrange(L, 1));
    return 0;
}

static int ar_range_index(lua_State *L)
{
    const char *key = luaL_checkstring(L, 2);
    ar_range *rg;
    if (strcmp(key, "unlock") == 0) {
        lua_pushcfunction(L, ar_range_unlock);
        return 1;
    }
    rg = ar_checkrange(L, 1);
    if (strcmp(key, "start") == 0)
        lua_pushinteger(L, rg->held.start);
    else if (strcmp(key, "length") == 0)
        lua_pushinteger(L, rg->held.length);
    else if (strcmp(key, "mode") == 0)
        lua_pushstring(L, ar_mode_name(rg->held.mode));
    else if (strcmp(key, "locked") == 0)
        lua_pushboolean(L, rg->locked);
    else if (strcmp(key, "file") == 0)
        lua_getiuservalue(L, 1, 1);
    else
        lua_pushnil(L);
    return 1;
}

static int ar_range_tostring(lua_State *L)
{
    ar_range *rg = ar_checkrange(L, 1);
    lua_pushfstring(L, "atomrun.range (%s, %s, %s)",
                    ar_range_text(L, rg->held.start, rg->held.length),
                    ar_mode_name(rg->held.mode),
                    rg->locked ? "held" : "released");
    return 1;
}

/* ---- temporary: the files binding (lfile.c after the split lands) ---- */
#define arL_fail ar_pushfail
#define arL_failerrno ar_pusherrno
#define arL_checkpath ar_check_path
#define arL_checkoptnames ar_check_option_names
#define arL_optbool ar_opt_bool
#define arL_optperm ar_opt_perm
#define arL_create ar_l_create
#define arL_replace ar_l_replace
#define arL_read ar_l_read
#define arL_resolve ar_l_resolve
#define arL_mkdir ar_l_mkdir
/* ============================================================ messages */

static const char *ar_stage_text(int stage)
{
    switch (stage) {
    case ATOMRUN_STAGE_RESOLVE: return "following the symlink failed";
    case ATOMRUN_STAGE_OPEN:    return "cannot look at what is there";
    case ATOMRUN_STAGE_WRITE:   return "writing the new contents failed";
    case ATOMRUN_STAGE_SYNC:    return "fsync of the new contents failed";
    case ATOMRUN_STAGE_LINK:    return "moving the new file into place failed";
    default:                    return "failed";
    }
}

/* The 4th result of a failed create/replace: the step that failed, so a
 * caller need not read it out of the message.  NULL: none (refused before
 * any step, e.g. "exists").  "read": reading the caller's file or reader
 * function (a step of the binding, not of the core). */
#define AR_STAGE_READ 100
static const char *ar_stage_name(int stage)
{
    switch (stage) {
    case ATOMRUN_STAGE_RESOLVE: return "resolve";
    case ATOMRUN_STAGE_OPEN:    return "open";
    case ATOMRUN_STAGE_WRITE:   return "write";
    case ATOMRUN_STAGE_SYNC:    return "sync";
    case ATOMRUN_STAGE_LINK:    return "link";
    case ATOMRUN_STAGE_DIRSYNC: return "dirsync";
    case ATOMRUN_STAGE_DIR:     return "dir";
    case ATOMRUN_STAGE_TEMP:    return "temp";
    case AR_STAGE_READ:         return "read";
    default:                    return NULL;
    }
}

static const char *ar_type_text(unsigned fmt)
{
    switch (fmt) {
    case S_IFCHR:  return "a character device";
    case S_IFBLK:  return "a block device";
    case S_IFIFO:  return "a FIFO";
    case S_IFSOCK: return "a socket";
    case S_IFDIR:  return "a directory";
    case S_IFLNK:  return "a symlink";
    default:       return "not a regular file";
    }
}

/* atomrun_stat's type names, as a sentence needs them. */
static const char *ar_statname(const char *type)
{
    static const char *const names[][2] = {
        { "directory", "a directory" }, { "fifo", "a FIFO" },
        { "socket", "a socket" },       { "char", "a character device" },
        { "block", "a block device" },  { "link", "a symlink" },
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(type, names[i][0]) == 0)
            return names[i][1];
    return "something";
}

/* The directory a path's file goes in, for messages ("." for "f"). */
static const char *ar_pushdirname(lua_State *L, const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return lua_pushliteral(L, ".");
    if (slash == path)
        return lua_pushliteral(L, "/");
    return lua_pushlstring(L, path, (size_t)(slash - path));
}

/* What the failure leaves: said only when it is true. */
static const char *ar_left(int replace, const atomrun_write_opts *o)
{
    if (replace && o->found == S_IFREG)
        return " (the old contents are intact)";
    return replace ? " (nothing was written)" : " (nothing was created)";
}

static int ar_pushwritemsg(lua_State *L, int r, int replace,
                           const char *path, const atomrun_write_opts *o)
{
    const char *verb = replace ? "replace" : "create";
    char target[4096];
    const char *where = path;

    /* With follow, the file in question is the end of the link chain. */
    if (o->follow && atomrun_resolve(path, target, sizeof target) == 0 &&
        strcmp(target, path) != 0)
        where = target;
    if (r == -EEXIST && (!o->stage || o->stage == ATOMRUN_STAGE_LINK))
        return arL_fail(L, r, "cannot create %s: it already exists", path);
    switch (o->stage) {
    case ATOMRUN_STAGE_DIRSYNC:
        return arL_fail(L, r, "%s: %s, but the directory entry may not be "
            "durable (fsync of the directory: %s)", path,
            !replace ? "created" : o->found == S_IFREG ? "replaced"
                                                       : "written",
            atomrun_strerror(r));
    case ATOMRUN_STAGE_OPEN:
        if (o->found && o->found != S_IFREG)
            return arL_fail(L, r, "cannot %s %s: %s%s is %s, not a regular "
                "file (left as it was)", verb, path,
                where != path ? "the symlink's target " : "",
                where != path ? where : "it", ar_type_text(o->found));
        break;
    case ATOMRUN_STAGE_DIR: {
        const char *dir = ar_pushdirname(L, where);
        return arL_fail(L, r, "cannot %s %s: %s %s: %s", verb, path,
            r == -ENOENT || r == -ENOTDIR ? "cannot create its directory"
                                          : "cannot create or open its directory",
            dir, atomrun_strerror(r));
    }
    case ATOMRUN_STAGE_TEMP: {
        const char *dir = ar_pushdirname(L, where);
        return arL_fail(L, r, "cannot %s %s: cannot create a file in directory "
            "%s: %s%s", verb, path, dir, atomrun_strerror(r),
            ar_left(replace, o));
    }
    default:
        break;
    }
    return arL_fail(L, r, "cannot %s %s: %s: %s%s", verb, path,
        ar_stage_text(o->stage), atomrun_strerror(r), ar_left(replace, o));
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

/* ============================================================= sources */

enum { AR_SRC_STRING, AR_SRC_FILE, AR_SRC_READER };

/* What argument `arg` holds: a string, an open io file, or a function. */
static int ar_checksource(lua_State *L, int arg, const char *expected)
{
    luaL_Stream *p;
    switch (lua_type(L, arg)) {
    case LUA_TSTRING:                  /* no silent number->string */
        return AR_SRC_STRING;
    case LUA_TFUNCTION:
        return AR_SRC_READER;
    case LUA_TUSERDATA:
        p = luaL_testudata(L, arg, LUA_FILEHANDLE);
        if (!p)
            break;
        if (!p->closef)
            luaL_argerror(L, arg, "attempt to use a closed file");
        return AR_SRC_FILE;
    default:
        break;
    }
    return luaL_typeerror(L, arg, expected);
}

#define AR_CHUNK 65536

/*
 * Copy an open file into the writer.  fread, not read(2) on its fd: the
 * FILE may already hold buffered bytes (a script that read a header line
 * first), and those are the next contents.  0, -errno of the write (stage
 * set by the core), or -errno of the read with *read_failed set.
 */
static int ar_copyfile(atomrun_writer *w, FILE *f, int *read_failed)
{
    char buf[AR_CHUNK];
    for (;;) {
        size_t n = fread(buf, 1, sizeof buf, f);
        if (n > 0) {
            int r = atomrun_writer_write(w, buf, n);
            if (r < 0)
                return r;
        }
        if (n < sizeof buf) {
            if (ferror(f)) {
                int err = errno ? -errno : -EIO;
                clearerr(f);
                *read_failed = 1;
                return err;
            }
            return 0;                   /* EOF */
        }
    }
}

/*
 * Call the reader until it returns nil or "".  Each call runs under
 * lua_pcall: an error in it must abort the writer (our caller does)
 * before the error goes on, or the temp file would leak until exit.
 * LUA_OK with 0 or -errno in *res, or the pcall status with the error on
 * the stack.
 */
static int ar_copyreader(lua_State *L, int fn, atomrun_writer *w, int *res,
                         int *bad_type)
{
    *res = 0;
    for (;;) {
        size_t len;
        const char *s;
        int st;
        lua_pushvalue(L, fn);
        st = lua_pcall(L, 0, 1, 0);
        if (st != LUA_OK)
            return st;
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            return LUA_OK;
        }
        if (lua_type(L, -1) != LUA_TSTRING) {
            *bad_type = lua_type(L, -1);
            lua_pop(L, 1);
            return LUA_OK;
        }
        s = lua_tolstring(L, -1, &len);
        *res = len ? atomrun_writer_write(w, s, len) : 0;
        lua_pop(L, 1);
        if (*res < 0 || len == 0)
            return LUA_OK;
    }
}

/* create/replace from a file or reader (the string forms go straight to
 * atomrun_create/atomrun_replace). */
static int ar_stream(lua_State *L, const char *path, int arg, int src,
                     int how, atomrun_write_opts *o)
{
    atomrun_writer *w;
    int replace = how == ATOMRUN_WRITE_REPLACE;
    int r, read_failed = 0, bad_type = LUA_TNONE;

    r = atomrun_writer_open(&w, path, how, o);
    if (r < 0)
        return ar_failwrite(L, r, replace, path, o);
    if (src == AR_SRC_FILE) {
        luaL_Stream *p = luaL_checkudata(L, arg, LUA_FILEHANDLE);
        r = ar_copyfile(w, p->f, &read_failed);
    } else {
        int st = ar_copyreader(L, arg, w, &r, &bad_type);
        if (st != LUA_OK) {
            atomrun_writer_abort(w);
            return lua_error(L);        /* the reader's own error */
        }
    }
    if (bad_type != LUA_TNONE) {
        atomrun_writer_abort(w);
        return luaL_argerror(L, arg, lua_pushfstring(L, "the reader function "
            "must return strings, then nil or \"\"; it returned a %s",
            lua_typename(L, bad_type)));
    }
    if (r < 0) {
        atomrun_writer_abort(w);
        if (read_failed) {
            o->stage = AR_STAGE_READ;
            lua_pushnil(L);
            lua_pushfstring(L, "cannot %s %s: reading the new contents from "
                "the file failed: %s%s", replace ? "replace" : "create", path,
                atomrun_strerror(r), ar_left(replace, o));
            lua_pushstring(L, atomrun_err_name(r));
            lua_pushstring(L, "read");
            return 4;
        }
        return ar_failwrite(L, r, replace, path, o);
    }
    r = atomrun_writer_commit(w);
    if (r < 0)
        return ar_failwrite(L, r, replace, path, o);
    lua_pushboolean(L, 1);
    return 1;
}

/* ================================================ create / replace / read */

static int arL_create(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    const char *data = NULL;
    size_t len = 0;
    atomrun_write_opts o;
    int src = AR_SRC_STRING, r;

    if (!lua_isnoneornil(L, 2))
        src = ar_checksource(L, 2, "string, file, function or nil");
    ar_checkwriteopts(L, 3, &o, 0);
    if (src != AR_SRC_STRING)
        return ar_stream(L, path, 2, src, ATOMRUN_WRITE_CREATE, &o);
    if (!lua_isnoneornil(L, 2))
        data = lua_tolstring(L, 2, &len);
    r = atomrun_create(path, data, len, &o);
    if (r < 0)
        return ar_failwrite(L, r, 0, path, &o);
    lua_pushboolean(L, 1);
    return 1;
}

static int arL_replace(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    size_t len;
    const char *data;
    atomrun_write_opts o;
    int src, r;

    src = ar_checksource(L, 2, "string, file or function");
    ar_checkwriteopts(L, 3, &o, 1);
    if (src != AR_SRC_STRING)
        return ar_stream(L, path, 2, src, ATOMRUN_WRITE_REPLACE, &o);
    data = lua_tolstring(L, 2, &len);
    r = atomrun_replace(path, data, len, &o);
    if (r < 0)
        return ar_failwrite(L, r, 1, path, &o);
    lua_pushboolean(L, 1);
    return 1;
}

static int arL_read(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    char *data;
    size_t len;
    int r = atomrun_read(path, &data, &len);
    if (r == -EINVAL || r == -EISDIR) {
        atomrun_stat st;
        if (atomrun_stat_path(path, 1, &st) == 0)
            return arL_fail(L, r, "cannot read %s: it is %s, not a regular "
                            "file", path, ar_statname(st.type));
        return arL_fail(L, r, "cannot read %s: not a regular file", path);
    }
    if (r < 0)
        return arL_failerrno(L, r, "cannot read", path);
    lua_pushlstring(L, data, len);
    free(data);
    return 1;
}

/* resolve(path) -> the path a chain of symlinks at path ends at (the file
 * need not exist): what update, status and replace{follow = true} act on. */
static int arL_resolve(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    char out[4096];
    int r = atomrun_resolve(path, out, sizeof out);
    if (r < 0)
        return arL_failerrno(L, r, "cannot follow the symlinks of", path);
    lua_pushstring(L, out);
    return 1;
}

/* ============================================================ run / exec */

/* argv table -> NULL-terminated array.  The strings (numbers converted)
 * are anchored in a table left on the stack for the duration of the call. */
static char **ar_check_argv(lua_State *L, int arg)
{
    lua_Integer n;
    char **argv;
    int anchor;
    luaL_checktype(L, arg, LUA_TTABLE);
    n = luaL_len(L, arg);
    if (n < 1)
        luaL_argerror(L, arg, "argv must have at least the command name");
    if (n > 1000000)     /* a __len can claim anything; n + 1 must not overflow */
        luaL_argerror(L, arg, "argv has too many elements");
    lua_createtable(L, (int)n, 0);
    anchor = lua_gettop(L);
    argv = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
    lua_rawseti(L, anchor, 0);                /* the array itself */
    for (lua_Integer i = 1; i <= n; i++) {
        size_t len;
        int t = lua_geti(L, arg, i);
        if (t != LUA_TSTRING && t != LUA_TNUMBER)
            luaL_argerror(L, arg, lua_pushfstring(L,
                "argv[%I] must be a string, not a %s", i, luaL_typename(L, -1)));
        argv[i - 1] = (char *)lua_tolstring(L, -1, &len);
        if (strlen(argv[i - 1]) != len)
            luaL_argerror(L, arg, lua_pushfstring(L,
                "argv[%I] contains a NUL byte", i));
        lua_rawseti(L, anchor, i);
    }
    argv[n] = NULL;
    return argv;
}

/* opts.env: a table merged over the current environment (false removes). */
static char **ar_build_env(lua_State *L, int arg)
{
    size_t count = 0;
    char **envp;
    int tbl;

    if (ar_opt(L, arg, "env", LUA_TTABLE) == LUA_TNIL)
        return NULL;
    tbl = lua_gettop(L);
    lua_newtable(L);                          /* name -> "name=value" */
    int merged = lua_gettop(L);
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        lua_pushlstring(L, *e, (size_t)(eq - *e));
        lua_pushstring(L, *e);
        lua_rawset(L, merged);
    }
    lua_pushnil(L);
    while (lua_next(L, tbl)) {                /* name, value */
        int vt = lua_type(L, -1);
        if (lua_type(L, -2) != LUA_TSTRING || !*lua_tostring(L, -2) ||
            strchr(lua_tostring(L, -2), '=') ||
            strlen(lua_tostring(L, -2)) != lua_rawlen(L, -2))
            luaL_argerror(L, arg, "opts.env keys must be variable names");
        if (vt == LUA_TSTRING &&
            strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1))
            luaL_argerror(L, arg, "opts.env values must not contain NUL");
        lua_pushvalue(L, -2);
        if (vt == LUA_TBOOLEAN && !lua_toboolean(L, -2))
            lua_pushnil(L);                   /* false: remove it */
        else if (vt == LUA_TSTRING || vt == LUA_TNUMBER)
            lua_pushfstring(L, "%s=%s", lua_tostring(L, -1),
                            lua_tostring(L, -2));
        else
            luaL_argerror(L, arg, "opts.env values must be strings or false");
        lua_rawset(L, merged);
        lua_pop(L, 1);
    }
    lua_pushnil(L);
    while (lua_next(L, merged)) {
        count++;
        lua_pop(L, 1);
    }
    envp = lua_newuserdatauv(L, sizeof(char *) * (count + 1), 1);
    lua_pushvalue(L, merged);
    lua_setiuservalue(L, -2, 1);               /* keeps the strings alive */
    count = 0;
    lua_pushnil(L);
    while (lua_next(L, merged)) {
        envp[count++] = (char *)lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    envp[count] = NULL;
    return envp;
}

/* Descriptors of every lock this state holds (for inheritance). */
static int *ar_held_fds(lua_State *L, int *n)
{
    ar_registry *reg = ar_get_registry(L);
    int count = 0, *fds;
    for (ar_held *h = reg->head.next; h != &reg->head; h = h->next)
        count++;
    fds = lua_newuserdatauv(L, sizeof(int) * (size_t)(count + 1), 0);
    count = 0;
    for (ar_held *h = reg->head.next; h != &reg->head; h = h->next)
        fds[count++] = h->fd;
    *n = count;
    return fds;
}

static void ar_check_spawnopts(lua_State *L, int arg, atomrun_spawn_opts *o,
                               int exec)
{
    static const char *const run_names[] = { "timeout", "kill_after",
        "close_locks", "env", "cwd", "forward_signals", NULL };
    static const char *const exec_names[] = { "close_locks", "env", "cwd",
                                              NULL };
    atomrun_spawn_opts_init(o);
    ar_check_option_names(L, arg, exec ? exec_names : run_names);
    if (ar_opt(L, arg, "cwd", LUA_TSTRING) != LUA_TNIL) {
        size_t len;
        o->cwd = lua_tolstring(L, -1, &len);   /* stays on the stack */
        if (strlen(o->cwd) != len)
            luaL_argerror(L, arg, "option 'cwd' contains a NUL byte");
    }
    if (!exec) {
        o->timeout = ar_opt_seconds(L, arg, "timeout", -1);
        o->kill_after = ar_opt_seconds(L, arg, "kill_after", 1);
        o->new_group = o->timeout >= 0;
        o->forward = ar_opt_bool(L, arg, "forward_signals", 0);
    }
    o->envp = ar_build_env(L, arg);
    if (!ar_opt_bool(L, arg, "close_locks", 0))
        o->keep_fds = ar_held_fds(L, &o->nkeep);
}

static int ar_l_run(lua_State *L)
{
    atomrun_spawn_opts o;
    char **argv;
    int is_signal = 0, code = 0, r;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);    /* ar_check_argv pushes: keep opts at index 2 */
    argv = ar_check_argv(L, 1);
    ar_check_spawnopts(L, 2, &o, 0);
    r = atomrun_run(argv, &o, &is_signal, &code);
    if (r < 0) {
        atomrun_stat st;
        /* The child reports one errno: say when chdir, not exec, failed. */
        if (o.cwd && (atomrun_stat_path(o.cwd, 1, &st) < 0 ||
                      strcmp(st.type, "directory") != 0))
            return ar_pushfail(L, r, "cannot run %s: cannot change to "
                               "directory %s: %s", argv[0], o.cwd,
                               atomrun_strerror(r));
        return ar_pushfail(L, r, "cannot run %s: %s", argv[0],
                           atomrun_strerror(r));
    }
    /* like os.execute: true|nil, "exit"|"signal", code */
    if (!is_signal && code == 0)
        lua_pushboolean(L, 1);
    else
        lua_pushnil(L);
    lua_pushstring(L, is_signal ? "signal" : "exit");
    lua_pushinteger(L, code);
    if (o.timed_out) {
        lua_pushstring(L, "timeout");
        return 4;
    }
    return 3;
}

static int ar_l_exec(lua_State *L)
{
    atomrun_spawn_opts o;
    char **argv;
    int r;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);    /* ar_check_argv pushes: keep opts at index 2 */
    argv = ar_check_argv(L, 1);
    ar_check_spawnopts(L, 2, &o, 1);
    fflush(NULL);
    r = atomrun_exec(argv, &o);
    return ar_pushfail(L, r, "cannot run %s: %s", argv[0],
                       atomrun_strerror(r));
}

/* ================================================================== misc */

static int ar_l_now(lua_State *L)
{
    lua_pushnumber(L, atomrun_now());
    return 1;
}

static int ar_l_sleep(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    if (isnan(s) || s < 0)
        luaL_argerror(L, 1, "seconds must be a number >= 0");
    atomrun_sleep(s);
    return 0;
}

static int ar_l_pid(lua_State *L)
{
    lua_pushinteger(L, getpid());
    return 1;
}

static int ar_l_uid(lua_State *L)
{
    lua_pushinteger(L, geteuid());
    return 1;
}

static int ar_l_stat(lua_State *L)
{
    const char *path = ar_check_path(L, 1);
    int follow = 1;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TBOOLEAN);
        follow = lua_toboolean(L, 2);
    }
    atomrun_stat st;
    int r = atomrun_stat_path(path, follow, &st);
    if (r < 0)
        return ar_pusherrno(L, r, "cannot stat", path);
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, (lua_Integer)st.dev);
    lua_setfield(L, -2, "dev");
    lua_pushinteger(L, (lua_Integer)st.ino);
    lua_setfield(L, -2, "ino");
    lua_pushinteger(L, (lua_Integer)st.size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, st.uid);
    lua_setfield(L, -2, "uid");
    lua_pushinteger(L, st.gid);
    lua_setfield(L, -2, "gid");
    lua_pushinteger(L, st.mode);
    lua_setfield(L, -2, "mode");
    lua_pushnumber(L, st.mtime);
    lua_setfield(L, -2, "mtime");
    lua_pushstring(L, st.type);
    lua_setfield(L, -2, "type");
    return 1;
}

static int arL_mkdir(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    lua_Integer mode = 0777;
    int isint = 1, r;

    /* Permission bits are a NUMBER: luaL_optinteger would convert the
     * string "755" as decimal 755 (= 01363, setgid and sticky set), the
     * same rule as every perm/mode option (arL_optperm, atomrun.check). */
    if (!lua_isnoneornil(L, 2)) {
        if (lua_type(L, 2) != LUA_TNUMBER)
            luaL_argerror(L, 2, lua_pushfstring(L, "mode must be permission "
                "bits (an integer 0 to 4095, i.e. 07777; e.g. "
                "tonumber('755', 8)), not a %s", luaL_typename(L, 2)));
        mode = lua_tointegerx(L, 2, &isint);
    }
    if (!isint || mode < 0 || mode > 07777)  /* -1: setuid|setgid|sticky */
        luaL_argerror(L, 2, "mode must be permission bits (an integer 0 to "
                      "4095, i.e. 07777)");
    r = atomrun_mkdir(path, (int)mode);
    if (r < 0)
        return arL_failerrno(L, r, "cannot create directory", path);
    lua_pushboolean(L, 1);
    return 1;
}

/* The number of locks this state holds (for tests and diagnostics). */
static int ar_l_held(lua_State *L)
{
    ar_registry *reg = ar_get_registry(L);
    lua_Integer n = 0;
    for (ar_held *h = reg->head.next; h != &reg->head; h = h->next)
        n++;
    lua_pushinteger(L, n);
    return 1;
}

static void ar_setfield_probe(lua_State *L, const char *key, int v)
{
    if (v < 0)
        lua_pushstring(L, atomrun_err_name(v));
    else
        lua_pushboolean(L, v);
    lua_setfield(L, -2, key);
}

/* probe(dir) -> { fstype=, remote=, volatile=, flock=, ofd=, tmpfile=,
 * noreplace=, dirsync= }: true, false (no effect) or the errno name. */
static int ar_l_probe(lua_State *L)
{
    const char *dir = ar_check_path(L, 1);
    atomrun_fsinfo fi;
    int r = atomrun_probe(dir, &fi);
    if (r < 0)
        return ar_pusherrno(L, r, "cannot probe", dir);
    lua_createtable(L, 0, 8);
    lua_pushstring(L, fi.fstype);
    lua_setfield(L, -2, "fstype");
    lua_pushboolean(L, fi.remote);
    lua_setfield(L, -2, "remote");
    lua_pushboolean(L, fi.volatile_);
    lua_setfield(L, -2, "volatile");
    ar_setfield_probe(L, "flock", fi.flock);
    ar_setfield_probe(L, "ofd", fi.ofd);
    ar_setfield_probe(L, "tmpfile", fi.tmpfile);
    ar_setfield_probe(L, "noreplace", fi.noreplace);
    ar_setfield_probe(L, "dirsync", fi.dirsync);
    if (fi.scratch < 0) {
        lua_pushstring(L, atomrun_err_name(fi.scratch));
        lua_setfield(L, -2, "scratch");
    }
    return 1;
}

static int ar_l_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

static int ar_l_errname(lua_State *L)
{
    lua_Integer e = luaL_checkinteger(L, 1);
    lua_pushstring(L, atomrun_err_name(e > 0 ? (int)-e : (int)e));
    return 1;
}

/* ============================================================== opening */

static void ar_newmetatable(lua_State *L, const char *name,
                            lua_CFunction index, lua_CFunction gc,
                            lua_CFunction tostring)
{
    luaL_newmetatable(L, name);
    lua_pushcfunction(L, index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

static int ar_file_gc(lua_State *L)
{
    ar_file_release(L, luaL_checkudata(L, 1, AR_FILE_MT));
    return 0;
}

/* Bundled Lua sources (generated from lua/ at build time). */
typedef struct ar_bundled { const char *name, *chunkname, *source; } ar_bundled;
extern const ar_bundled atomrun_bundle[];

static int ar_load_bundled(lua_State *L)
{
    const ar_bundled *m = lua_touserdata(L, lua_upvalueindex(1));
    if (luaL_loadbuffer(L, m->source, strlen(m->source), m->chunkname) != 0)
        return lua_error(L);
    lua_pushstring(L, m->name);
    lua_call(L, 1, 1);
    return 1;
}

/* package.preload["atomrun.x"] for every bundled module: require finds
 * them before any search path, so the binary is self-contained. */
static void ar_register_bundle(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (const ar_bundled *m = atomrun_bundle; m->name; m++) {
        lua_pushlightuserdata(L, (void *)m);
        lua_pushcclosure(L, ar_load_bundled, 1);
        lua_setfield(L, -2, m->name);
    }
    lua_pop(L, 1);
}

int luaopen_atomrun(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "lock", ar_l_lock },       { "open", ar_l_open },
        { "create", ar_l_create },   { "replace", ar_l_replace },
        { "read", ar_l_read },       { "run", ar_l_run },
        { "exec", ar_l_exec },       { "now", ar_l_now },
        { "sleep", ar_l_sleep },     { "pid", ar_l_pid },
        { "uid", ar_l_uid },         { "stat", ar_l_stat },
        { "mkdir", ar_l_mkdir },     { "held", ar_l_held },
        { "errname", ar_l_errname }, { "probe", ar_l_probe },
        { "resolve", ar_l_resolve },
        { "isatty", ar_l_isatty },   { NULL, NULL } };

    ar_newmetatable(L, AR_LOCK_MT, ar_lock_index, ar_lock_gc,
                    ar_lock_tostring);
    ar_newmetatable(L, AR_FILE_MT, ar_file_index, ar_file_gc,
                    ar_file_tostring);
    ar_newmetatable(L, AR_RANGE_MT, ar_range_index, ar_range_gc,
                    ar_range_tostring);
    ar_get_registry(L);
    ar_register_bundle(L);

    luaL_newlib(L, funcs);
    lua_pushstring(L, ATOMRUN_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, atomrun_range_mechanism());
    lua_setfield(L, -2, "range_mechanism");
    /* Recipes may `require "atomrun"` while we are still being loaded. */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "atomrun");
    lua_pop(L, 1);
    /* The Lua half (lua/atomrun/module.lua) adds the recipes, lazily. */
    lua_getglobal(L, "require");
    lua_pushstring(L, "atomrun.module");
    lua_call(L, 1, 1);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
    return 1;
}
