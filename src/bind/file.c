/*
 * bind/file.c -- whole files: create(), replace(), read(), resolve(), and the
 * path functions stat() and mkdir().
 *
 * create and replace take their contents as a string, an open Lua file
 * (io.open, io.stdin) or a reader function, the last two streamed into the
 * temp file through the core's atomrun_writer: a 10 GiB dump is never held
 * in memory, and all-or-nothing holds as for a string (any failure,
 * including an error raised by the reader, aborts the writer: the old file
 * stays, no temp file remains).
 */
#define _GNU_SOURCE
#include "bind/bind.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lualib.h>

/* ============================================================ messages */

static const char *stage_text(int stage)
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
static const char *stage_name(int stage)
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

static const char *type_text(unsigned fmt)
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

/* ar_stat's type names, as a sentence needs them. */
static const char *statname(const char *type)
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
static const char *pushdirname(lua_State *L, const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return lua_pushliteral(L, ".");
    if (slash == path)
        return lua_pushliteral(L, "/");
    return lua_pushlstring(L, path, (size_t)(slash - path));
}

/* What the failure leaves: said only when it is true. */
static const char *what_is_left(int replace, const atomrun_err *e)
{
    if (replace && e->found == S_IFREG)
        return " (the old contents are intact)";
    return replace ? " (nothing was written)" : " (nothing was created)";
}

static int pushwritemsg(lua_State *L, int r, int replace, const char *path,
                       const atomrun_write_opts *o, const atomrun_err *e)
{
    const char *verb = replace ? "replace" : "create";
    char target[4096];
    const char *where = path;

    /* With follow, the file in question is the end of the link chain. */
    if (o->follow && atomrun_resolve(path, target, sizeof target) == 0 &&
        strcmp(target, path) != 0)
        where = target;
    if (r == -EEXIST && (!e->stage || e->stage == ATOMRUN_STAGE_LINK))
        return arL_fail(L, r, "cannot create %s: it already exists", path);
    if (r == -EACCES && e->stage == ATOMRUN_STAGE_RESOLVE)
        return arL_failpath(L, r, replace ? "cannot replace" : "cannot create",
                            path, replace && o->follow);
    switch (e->stage) {
    case ATOMRUN_STAGE_DIRSYNC:
        return arL_fail(L, r, "%s: %s, but the directory entry may not be "
            "durable (fsync of the directory: %s)", path,
            !replace ? "created" : e->found == S_IFREG ? "replaced"
                                                       : "written",
            atomrun_strerror(r));
    case ATOMRUN_STAGE_OPEN:
        if (e->found && e->found != S_IFREG)
            return arL_fail(L, r, "cannot %s %s: %s%s is %s, not a regular "
                "file (left as it was)", verb, path,
                where != path ? "the symlink's target " : "",
                where != path ? where : "it", type_text(e->found));
        break;
    case ATOMRUN_STAGE_DIR: {
        const char *dir = pushdirname(L, where);
        return arL_fail(L, r, "cannot %s %s: %s %s: %s", verb, path,
            r == -ENOENT || r == -ENOTDIR ? "cannot create its directory"
                                          : "cannot create or open its directory",
            dir, atomrun_strerror(r));
    }
    case ATOMRUN_STAGE_TEMP: {
        const char *dir = pushdirname(L, where);
        return arL_fail(L, r, "cannot %s %s: cannot create a file in directory "
            "%s: %s%s", verb, path, dir, atomrun_strerror(r),
            what_is_left(replace, e));
    }
    default:
        break;
    }
    return arL_fail(L, r, "cannot %s %s: %s: %s%s", verb, path,
        stage_text(e->stage), atomrun_strerror(r), what_is_left(replace, e));
}

/* nil, message, code [, stage] */
static int failwrite(lua_State *L, int r, int replace, const char *path,
                     const atomrun_write_opts *o, const atomrun_err *e)
{
    const char *stage = stage_name(e->stage);
    int n = pushwritemsg(L, r, replace, path, o, e);
    if (!stage)
        return n;
    lua_pushstring(L, stage);
    return n + 1;
}

static void checkwriteopts(lua_State *L, int arg, atomrun_write_opts *o,
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
static int checksource(lua_State *L, int arg, const char *expected)
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
static int copyfile(atomrun_writer *w, FILE *f, int *read_failed, atomrun_err *e)
{
    char buf[AR_CHUNK];
    for (;;) {
        size_t n;
        errno = 0;              /* ferror() below: this read's errno only */
        n = fread(buf, 1, sizeof buf, f);
        if (n > 0) {
            int r = atomrun_writer_write(w, buf, n, e);
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
static int copyreader(lua_State *L, int fn, atomrun_writer *w, int *res,
                      int *bad_type, atomrun_err *e)
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
        *res = len ? atomrun_writer_write(w, s, len, e) : 0;
        lua_pop(L, 1);
        if (*res < 0 || len == 0)
            return LUA_OK;
    }
}

/* create/replace from a file or reader (the string forms go straight to
 * atomrun_create/atomrun_replace). */
static int stream(lua_State *L, const char *path, int arg, int src,
                     int how, const atomrun_write_opts *o)
{
    atomrun_writer *w;
    atomrun_err e;
    int replace = how == ATOMRUN_WRITE_REPLACE;
    int r, read_failed = 0, bad_type = LUA_TNONE;

    r = atomrun_writer_open(&w, path, how, o, &e);
    if (r < 0)
        return failwrite(L, r, replace, path, o, &e);
    if (src == AR_SRC_FILE) {
        luaL_Stream *p = luaL_checkudata(L, arg, LUA_FILEHANDLE);
        r = copyfile(w, p->f, &read_failed, &e);
    } else {
        int st = copyreader(L, arg, w, &r, &bad_type, &e);
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
            e.stage = AR_STAGE_READ;
            lua_pushnil(L);
            lua_pushfstring(L, "cannot %s %s: reading the new contents from "
                "the file failed: %s%s", replace ? "replace" : "create", path,
                atomrun_strerror(r), what_is_left(replace, &e));
            lua_pushstring(L, atomrun_err_name(r));
            lua_pushstring(L, "read");
            return 4;
        }
        return failwrite(L, r, replace, path, o, &e);
    }
    r = atomrun_writer_commit(w, &e);
    if (r < 0)
        return failwrite(L, r, replace, path, o, &e);
    lua_pushboolean(L, 1);
    return 1;
}

/* ================================================ create / replace / read */

int arL_create(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    if (arL_isurl(path))             /* "etcd://...": bind/etcd_kv.c */
        return arL_etcd_create(L);
    if (arL_nearurl(path))
        return arL_failnearurl(L, path);
    const char *data = NULL;
    size_t len = 0;
    atomrun_write_opts o;
    atomrun_err e;
    int src = AR_SRC_STRING, r;

    if (!lua_isnoneornil(L, 2))
        src = checksource(L, 2, "string, file, function or nil");
    checkwriteopts(L, 3, &o, 0);
    if (src != AR_SRC_STRING)
        return stream(L, path, 2, src, ATOMRUN_WRITE_CREATE, &o);
    if (!lua_isnoneornil(L, 2))
        data = lua_tolstring(L, 2, &len);
    r = atomrun_create(path, data, len, &o, &e);
    if (r < 0)
        return failwrite(L, r, 0, path, &o, &e);
    lua_pushboolean(L, 1);
    return 1;
}

int arL_replace(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    if (arL_isurl(path))             /* "etcd://...": bind/etcd_kv.c */
        return arL_etcd_replace(L);
    if (arL_nearurl(path))
        return arL_failnearurl(L, path);
    size_t len;
    const char *data;
    atomrun_write_opts o;
    atomrun_err e;
    int src, r;

    src = checksource(L, 2, "string, file or function");
    checkwriteopts(L, 3, &o, 1);
    if (src != AR_SRC_STRING)
        return stream(L, path, 2, src, ATOMRUN_WRITE_REPLACE, &o);
    data = lua_tolstring(L, 2, &len);
    r = atomrun_replace(path, data, len, &o, &e);
    if (r < 0)
        return failwrite(L, r, 1, path, &o, &e);
    lua_pushboolean(L, 1);
    return 1;
}

int arL_read(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    if (arL_isurl(path))             /* "etcd://...": bind/etcd_kv.c */
        return arL_etcd_read(L);
    if (arL_nearurl(path))
        return arL_failnearurl(L, path);
    char *data;
    size_t len;
    int r = atomrun_read(path, &data, &len);
    if (r == -EINVAL || r == -EISDIR) {
        ar_stat st;
        if (ar_stat_path(path, 1, &st) == 0)
            return arL_fail(L, r, "cannot read %s: it is %s, not a regular "
                            "file", path, statname(st.type));
        return arL_fail(L, r, "cannot read %s: not a regular file", path);
    }
    if (r < 0)
        return arL_failpath(L, r, "cannot read", path, 1);
    lua_pushlstring(L, data, len);
    free(data);
    return 1;
}

/* resolve(path) -> the path a chain of symlinks at path ends at (the file
 * need not exist): what update, status and replace{follow = true} act on. */
int arL_resolve(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    char out[4096];
    int r = atomrun_resolve(path, out, sizeof out);
    if (r < 0)
        return arL_failpath(L, r, "cannot follow the symlinks of", path, 1);
    lua_pushstring(L, out);
    return 1;
}

/* ======================================================== stat / mkdir */

static void setint(lua_State *L, const char *key, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, key);
}

int arL_stat(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    ar_stat st;
    int follow = 1, r;

    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TBOOLEAN);
        follow = lua_toboolean(L, 2);
    }
    r = ar_stat_path(path, follow, &st);
    if (r < 0)
        return arL_failerrno(L, r, "cannot stat", path);
    lua_createtable(L, 0, 8);
    setint(L, "dev", (lua_Integer)st.dev);
    setint(L, "ino", (lua_Integer)st.ino);
    setint(L, "size", (lua_Integer)st.size);
    setint(L, "uid", st.uid);
    setint(L, "gid", st.gid);
    setint(L, "mode", st.mode);
    lua_pushnumber(L, st.mtime);
    lua_setfield(L, -2, "mtime");
    lua_pushstring(L, st.type);
    lua_setfield(L, -2, "type");
    return 1;
}

int arL_mkdir(lua_State *L)
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
    r = ar_mkdir(path, (int)mode);
    if (r < 0)
        return arL_failpath(L, r, "cannot create directory", path, 0);
    lua_pushboolean(L, 1);
    return 1;
}
