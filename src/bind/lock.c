/*
 * bind/lock.c -- whole-file lock handles (lock()), open files (open()) and the
 * byte-range locks taken through them (f:lock(), f:test()).
 *
 * Every lock taken here is in the state's held-lock set (arL_heldset), so
 * that a request only a release of our own could grant fails at once with
 * "deadlock" instead of hanging, and so that run() knows which descriptors
 * a child inherits.
 */
#define _GNU_SOURCE
#include "bind/bind.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ====================================================== lock() handles */

typedef struct lock {
    ar_held held;        /* in the held set while locked; held.dev and
                                 held.ino stay (0, 0) until a deadlock
                                 check needs them: whoever else reads them
                                 calls ensure_ids first */
    int     locked;
    int     closed;           /* no descriptor (yet, or any more) */
    int     fcntl;            /* an OFD lock of held.start/length */
    int     borrowed;         /* lockfd(): the caller's descriptor */
} lock;

static lock *checklock(lua_State *L, int arg)
{
    return luaL_checkudata(L, arg, AR_LOCK_MT);
}

/*
 * lock(path) + lk:unlock() is the binding's hot path, measured against raw
 * open+flock+close by make bench.  Two of its costs were the binding's own:
 *   - the held-lock set and the lock metatable were looked up in the
 *     registry on every call; lock() now has both as upvalues;
 *   - the fstat for the lock's (dev, ino), which only the deadlock check
 *     reads, and that only when this state already holds another lock.
 *     The id is looked up when a check needs it (ensure_ids); until
 *     then it is (0, 0), which no file has (inode 0 is never used).
 */
#define AR_UP_HELDSET lua_upvalueindex(1)
#define AR_UP_LOCK_MT lua_upvalueindex(2)

/* A file lock without its id yet (an etcd name has none to look up). */
static int id_unknown(const ar_held *h)
{
    return h->kind != AR_HELD_ETCD && h->dev == 0 && h->ino == 0;
}

/* Look up the (dev, ino) of req and of every lock in set that has none
 * yet (a lock() handle's, flock or fcntl): before an
 * ar_heldset_conflict on them. */
static int ensure_ids(ar_heldset *set, ar_held *req)
{
    if (id_unknown(req)) {
        int r = ar_file_id(req->fd, &req->dev, &req->ino);
        if (r < 0)
            return r;
    }
    for (ar_held *h = set->head.next; h != &set->head; h = h->next)
        if (id_unknown(h))
            ar_file_id(h->fd, &h->dev, &h->ino);
    return 0;
}

/* unlock: 1 for unlock(), 0 for __gc/__close. */
static void lock_release(lock *lk, int unlock)
{
    if (lk->closed)
        return;
    ar_heldset_remove(&lk->held);
    if (lk->borrowed) {
        /* lockfd(): the descriptor is the caller's, and so is the lock,
         * which belongs to its open file description and outlives us (as
         * `flock N` leaves it): only an explicit unlock() releases it. */
        if (unlock && lk->locked) {
            if (lk->fcntl)
                atomrun_range_unlock(lk->held.fd, lk->held.start,
                                     lk->held.length);
            else
                atomrun_funlock(lk->held.fd);
        }
    } else {
        /* Closing the descriptor releases the lock with it.  The lock
         * FILE stays: deleting it on release would let the next waiter,
         * who already opened the old inode, lock a file that is no longer
         * at the path while a newcomer creates and locks a new one. */
        ar_close(lk->held.fd);
    }
    lk->locked = 0;
    lk->closed = 1;
}

static int lock_unlock(lua_State *L)
{
    lock_release(checklock(L, 1), 1);
    lua_pushboolean(L, 1);
    return 1;
}

static int lock_gc(lua_State *L)
{
    lock_release(checklock(L, 1), 0);
    return 0;
}

static int lock_tostring(lua_State *L)
{
    lock *lk = checklock(L, 1);
    lua_getiuservalue(L, 1, 1);
    lua_pushfstring(L, "atomrun.lock (%s, %s, %s)", lua_tostring(L, -1),
                    arL_modename(lk->held.mode),
                    lk->locked ? "held" : "released");
    return 1;
}

static int lock_path(lua_State *L)
{
    checklock(L, 1);
    lua_getiuservalue(L, 1, 1);
    return 1;
}

static int lock_mode(lua_State *L)
{
    lua_pushstring(L, arL_modename(checklock(L, 1)->held.mode));
    return 1;
}

static int lock_locked(lua_State *L)
{
    lua_pushboolean(L, checklock(L, 1)->locked);
    return 1;
}

/* dev, ino: the identity of the locked file, from the handle's own
 * descriptor (never a stat by path, which may name another file by now).
 * A lock() handle's id is lazy (see ensure_ids): filled here on first
 * read.  nil once released, if it was never needed while the descriptor
 * was open. */
static int lock_id(lua_State *L, int ino)
{
    lock *lk = checklock(L, 1);
    if (id_unknown(&lk->held) &&
        (lk->closed ||
         ar_file_id(lk->held.fd, &lk->held.dev, &lk->held.ino) < 0))
        return 0;
    lua_pushinteger(L, (lua_Integer)(ino ? lk->held.ino : lk->held.dev));
    return 1;
}

static int lock_dev(lua_State *L) { return lock_id(L, 0); }
static int lock_ino(lua_State *L) { return lock_id(L, 1); }

/* start, length: the range of an fcntl lock; nil for a flock lock */
static int lock_start(lua_State *L)
{
    lock *lk = checklock(L, 1);
    if (!lk->fcntl)
        return 0;
    lua_pushinteger(L, lk->held.start);
    return 1;
}

static int lock_length(lua_State *L)
{
    lock *lk = checklock(L, 1);
    if (!lk->fcntl)
        return 0;
    lua_pushinteger(L, lk->held.length);
    return 1;
}
/* ============================================ lock() extras: follow, fcntl */

/* What lock() and lockfd() take beyond f:lock()'s options. */
typedef struct lockx {
    int     follow;           /* ATOMRUN_NOFOLLOW / _FOLLOW / _PROTECTED */
    int     fcntl;            /* an OFD lock of [start, start+length) */
    int64_t start, length;
    int     literal;          /* the path is a file name, whatever it looks
                                 like (flock(1): "etcd:x" is a file) */
} lockx;

static int64_t optoffset(lua_State *L, int arg, const char *name)
{
    lua_Integer v;
    int isint;
    if (arL_opt(L, arg, name, LUA_TNUMBER) == LUA_TNIL)
        return 0;
    v = lua_tointegerx(L, -1, &isint);
    lua_pop(L, 1);
    if (!isint || v < 0)
        luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be a "
            "whole number of bytes >= 0%s", name,
            strcmp(name, "length") == 0 ? " (0 means to end of file)" : ""));
    return v;
}

static void checklockx(lua_State *L, int arg, arL_lockopts *o,
                       lockx *x, int fdform)
{
    static const char *const path_names[] = { "mode", "wait", "timeout",
        "perm", "create", "holder", "follow", "fcntl", "start", "length",
        "literal", NULL };
    static const char *const fd_names[] = { "mode", "wait", "timeout",
        "holder", "fcntl", "start", "length", NULL };
    int t;

    memset(x, 0, sizeof *x);
    arL_checkoptnames(L, arg, fdform ? fd_names : path_names);
    arL_readlockopts(L, arg, o);
    if (lua_isnoneornil(L, arg))
        return;
    t = lua_getfield(L, arg, "follow");
    if (t == LUA_TBOOLEAN)
        x->follow = lua_toboolean(L, -1) ? ATOMRUN_FOLLOW : ATOMRUN_NOFOLLOW;
    else if (t == LUA_TSTRING && strcmp(lua_tostring(L, -1), "protected") == 0)
        x->follow = ATOMRUN_FOLLOW_PROTECTED;
    else if (t != LUA_TNIL)
        luaL_argerror(L, arg, "option 'follow' must be false, true or "
                      "'protected'");
    lua_pop(L, 1);
    x->fcntl = arL_optbool(L, arg, "fcntl", 0);
    x->literal = !fdform && arL_optbool(L, arg, "literal", 0);
    x->start = optoffset(L, arg, "start");
    x->length = optoffset(L, arg, "length");
    if (!x->fcntl && (arL_opt(L, arg, "start", LUA_TNUMBER) != LUA_TNIL ||
                      arL_opt(L, arg, "length", LUA_TNUMBER) != LUA_TNIL))
        luaL_argerror(L, arg, "options 'start' and 'length' lock a byte "
                      "range: they need fcntl = true");
    if (x->length > 0 && x->start > INT64_MAX - x->length)
        luaL_argerror(L, arg, "start + length overflows a file offset");
}

/* Why the lock file would not open, in words for the symlink cases. */
static int failopen(lua_State *L, int r, const char *path,
                    const lockx *x)
{
    ar_stat st;
    int link = ar_stat_path(path, 0, &st) == 0 &&
               strcmp(st.type, "link") == 0;
    if (r == -ELOOP && x->follow == ATOMRUN_NOFOLLOW && link)
        return arL_fail(L, r, "cannot open lock file %s: it is a symlink, "
                        "which lock() follows only with follow = true", path);
    return arL_failpath(L, r, "cannot open lock file", path,
                        x->follow != ATOMRUN_NOFOLLOW);
}

/* Take the lock (flock, or with x->fcntl an OFD range) on lk's descriptor;
 * on busy/timeout push the failure naming the holder. */
static int take_lock(lua_State *L, lock *lk, const arL_lockopts *o,
                     const lockx *x, const char *what, int *nret)
{
    atomrun_holder h;
    int r, known = 0;

    if (x->fcntl)
        r = atomrun_range_lock(lk->held.fd, o->mode, x->start, x->length,
                               o->timeout);
    else
        r = atomrun_flock(lk->held.fd, o->mode, o->timeout);
    if (r == ATOMRUN_EBUSY || r == ATOMRUN_ETIMEOUT) {
        if (o->holder)
            known = (x->fcntl ? atomrun_range_test(lk->held.fd, o->mode,
                                                   x->start, x->length, &h)
                              : atomrun_flock_holder(lk->held.fd, o->mode,
                                                     &h)) == 1;
        *nret = arL_faillock(L, r, what, o->timeout, known ? &h : NULL,
                             x->fcntl);
    } else if (r < 0) {
        *nret = arL_failerrno(L, r, "cannot lock", what);
    }
    return r;
}

static void lock_fill(lock *lk, const arL_lockopts *o,
                      const lockx *x)
{
    lk->held.kind = x->fcntl ? AR_HELD_RANGE : AR_HELD_FLOCK;
    lk->held.mode = o->mode;
    /* The handle itself: an OFD lock of its own description conflicts
     * with any other handle's range of the file, and unlockfd finds the
     * lockfd handles by it (only a lock handle has itself as owner). */
    lk->held.owner = lk;
    lk->held.start = x->start;
    lk->held.length = x->length;
    lk->fcntl = x->fcntl;
}


int arL_lock(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    arL_lockopts o;
    ar_heldset *set;
    lock *lk;
    lockx x;
    int fd, r, writable, held_any, n = 0;

    if (arL_isurl(path))             /* "etcd://...": bind/etcd_lock.c */
        return arL_etcd_lock(L);
    checklockx(L, 2, &o, &x, 0);
    if (!x.literal && arL_nearurl(path))
        return arL_failnearurl(L, path);
    lua_settop(L, 2);
    set = lua_touserdata(L, AR_UP_HELDSET);
    /* The handle first, closed: from the moment the descriptor exists its
     * __gc owns it, whatever error (out of memory) comes next. */
    lk = lua_newuserdatauv(L, sizeof *lk, 1);
    memset(lk, 0, sizeof *lk);
    lk->closed = 1;
    lk->held.fd = -1;
    lua_pushvalue(L, AR_UP_LOCK_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);

    fd = atomrun_lockfile_open(path, o.create, o.perm, x.follow,
                                      &writable);
    if (fd < 0)
        return failopen(L, fd, path, &x);
    lk->held.fd = fd;
    lk->closed = 0;
    lock_fill(lk, &o, &x);
    if (x.fcntl && o.mode == ATOMRUN_EXCLUSIVE && !writable) {
        lock_release(lk, 0);
        return arL_fail(L, -EBADF, "cannot lock %s exclusive with fcntl: "
            "the file is open read-only (no write permission), and fcntl "
            "locks allow only shared locks then", path);
    }
    /* Nothing else held (the usual case): no deadlock to find, and no id
     * to look up. */
    held_any = set->head.next != &set->head;
    if (o.timeout != 0 && held_any) {
        r = ensure_ids(set, &lk->held);
        if (r < 0) {
            lock_release(lk, 0);
            return arL_failerrno(L, r, "cannot stat lock file", path);
        }
    }
    if (o.timeout != 0 && held_any && ar_heldset_conflict(set, &lk->held)) {
        lock_release(lk, 0);
        return arL_fail(L, -EDEADLK,
            "%s is already locked by this script; waiting for it to be "
            "released would wait forever", path);
    }
    r = take_lock(L, lk, &o, &x, path, &n);
    if (r < 0) {
        lock_release(lk, 0);
        return n;
    }
    lk->locked = 1;
    ar_heldset_add(set, &lk->held);
    lua_settop(L, 3);
    return 1;
}

/* ======================================================= open() handles */

typedef struct file {
    int fd;                   /* -1 once closed (or before it is open) */
    int writable;
    uint64_t dev, ino;
    ar_heldset *set;     /* the state's (arL_heldset): it never moves,
                                 and f:lock() is a hot path */
} file;

typedef struct range {
    ar_held held;        /* held.owner: the file */
    int     locked;
} range;

static file *checkfile(lua_State *L, int arg)
{
    file *f = luaL_checkudata(L, arg, AR_FILE_MT);
    if (f->fd < 0)
        luaL_error(L, "attempt to use a closed atomrun file");
    return f;
}

/* Closing the description drops every range it holds: forget them. */
static int forget_range(ar_held *h, void *f)
{
    if (h->kind == AR_HELD_RANGE && h->owner == f) {
        ar_heldset_remove(h);
        ((range *)h)->locked = 0;
    }
    return 0;
}

static void file_release(file *f)
{
    if (f->fd < 0)
        return;
    ar_heldset_foreach(f->set, forget_range, f);
    ar_close(f->fd);
    f->fd = -1;
}

static int file_close(lua_State *L)
{
    file_release(luaL_checkudata(L, 1, AR_FILE_MT));
    lua_pushboolean(L, 1);
    return 1;
}

static int file_gc(lua_State *L)
{
    file_release(luaL_checkudata(L, 1, AR_FILE_MT));
    return 0;
}

static int file_tostring(lua_State *L)
{
    file *f = luaL_checkudata(L, 1, AR_FILE_MT);
    lua_getiuservalue(L, 1, 1);
    lua_pushfstring(L, "atomrun.file (%s%s)", lua_tostring(L, -1),
                    f->fd < 0 ? ", closed" : "");
    return 1;
}

static int file_path(lua_State *L)
{
    luaL_checkudata(L, 1, AR_FILE_MT);
    lua_getiuservalue(L, 1, 1);
    return 1;
}

/* dev, ino: taken by open() from the descriptor; they stay after close */
static int file_dev(lua_State *L)
{
    file *f = luaL_checkudata(L, 1, AR_FILE_MT);
    lua_pushinteger(L, (lua_Integer)f->dev);
    return 1;
}

static int file_ino(lua_State *L)
{
    file *f = luaL_checkudata(L, 1, AR_FILE_MT);
    lua_pushinteger(L, (lua_Integer)f->ino);
    return 1;
}

static int file_writable(lua_State *L)
{
    file *f = luaL_checkudata(L, 1, AR_FILE_MT);
    lua_pushboolean(L, f->writable);
    return 1;
}

/* A byte offset or length: an integer, named in the error otherwise
 * (luaL_checkinteger would take "10" and say only "no integer
 * representation" for 1.5). */
static int64_t checkoffset(lua_State *L, int arg, const char *name)
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

static void checkrangeargs(lua_State *L, int64_t *start, int64_t *length)
{
    *start = checkoffset(L, 2, "start");
    *length = checkoffset(L, 3, "length");
    if (*start < 0)
        luaL_argerror(L, 2, "start must be >= 0");
    if (*length < 0)
        luaL_argerror(L, 3, "length must be >= 0 (0 means to end of file)");
    if (*length > 0 && *start > INT64_MAX - *length)
        luaL_argerror(L, 3, "start + length overflows a file offset");
}

/* "bytes 10+5" / "bytes 10 to end of file", for messages */
static const char *rangetext(lua_State *L, int64_t start, int64_t length)
{
    if (length == 0)
        return lua_pushfstring(L, "bytes %I to end of file", (lua_Integer)start);
    return lua_pushfstring(L, "bytes %I+%I", (lua_Integer)start,
                           (lua_Integer)length);
}

/* "PATH (bytes 10+5)" for messages.  Built only when a message needs it:
 * formatting it on every call cost a third of a lock+unlock pair. */
static const char *rangewhat(lua_State *L, int64_t start, int64_t length)
{
    const char *path;
    lua_getiuservalue(L, 1, 1);
    path = lua_tostring(L, -1);
    return lua_pushfstring(L, "%s (%s)", path, rangetext(L, start, length));
}

/* A range of the request's handle that overlaps it. */
static int same_owner_overlap(const ar_held *h,
                              const ar_held *req)
{
    return h->kind == AR_HELD_RANGE && h->owner == req->owner &&
           ar_ranges_overlap(h->start, h->length, req->start,
                                  req->length);
}

static int file_lock(lua_State *L)
{
    file *f = checkfile(L, 1);
    int64_t start, length;
    arL_lockopts o;
    atomrun_holder h;
    const ar_held *c;
    ar_heldset *set;
    range *rg;
    int r;

    checkrangeargs(L, &start, &length);
    arL_checklockopts(L, 4, &o);
    lua_settop(L, 4);
    set = f->set;
    /* The handle first (see arL_lock), not yet locked. */
    rg = lua_newuserdatauv(L, sizeof *rg, 1);
    memset(rg, 0, sizeof *rg);
    rg->held.kind = AR_HELD_RANGE;
    rg->held.mode = o.mode;
    rg->held.fd = f->fd;
    rg->held.dev = f->dev;
    rg->held.ino = f->ino;
    rg->held.owner = f;
    rg->held.start = start;
    rg->held.length = length;
    luaL_setmetatable(L, AR_RANGE_MT);
    lua_pushvalue(L, 1);              /* keeps the file alive */
    lua_setiuservalue(L, -2, 1);

    /* The kernel merges overlapping ranges of one description into one
     * lock, so a later unlock of either would silently free both.  We
     * refuse the overlap instead: it is always a bug in the script. */
    for (ar_held *hd = set->head.next; hd != &set->head; hd = hd->next)
        if (same_owner_overlap(hd, &rg->held))
            return luaL_error(L, "%s overlaps %s already locked through "
                "this handle (unlock it first, or use another handle)",
                rangewhat(L, start, length),
                rangetext(L, hd->start, hd->length));
    if (o.mode == ATOMRUN_EXCLUSIVE && !f->writable)
        return arL_fail(L, -EBADF, "cannot lock %s exclusive: the file is "
            "open read-only (no write permission), which allows only "
            "shared locks", rangewhat(L, start, length));
    /* lock(p, {fcntl = true}) handles hold ranges too, their ids looked
     * up lazily: give them theirs before comparing */
    ensure_ids(set, &rg->held);
    c = ar_heldset_conflict(set, &rg->held);
    if (c && o.timeout != 0)
        return arL_fail(L, -EDEADLK, "%s conflicts with %s held through "
            "another handle of this script; waiting would wait forever",
            rangewhat(L, start, length),
            rangetext(L, c->start, c->length));
    r = atomrun_range_lock(f->fd, o.mode, start, length, o.timeout);
    if (r == ATOMRUN_EBUSY || r == ATOMRUN_ETIMEOUT) {
        int known = o.holder &&
                    atomrun_range_test(f->fd, o.mode, start, length, &h) == 1;
        return arL_faillock(L, r, rangewhat(L, start, length), o.timeout,
                            known ? &h : NULL, 1);
    }
    if (r < 0)
        return arL_failerrno(L, r, "cannot lock",
                             rangewhat(L, start, length));
    rg->locked = 1;
    ar_heldset_add(set, &rg->held);
    lua_settop(L, 5);
    return 1;
}

static int file_test(lua_State *L)
{
    file *f = checkfile(L, 1);
    int64_t start, length;
    atomrun_holder h;
    int mode = ATOMRUN_EXCLUSIVE, r;

    checkrangeargs(L, &start, &length);
    if (!lua_isnoneornil(L, 4))
        mode = arL_checkmode(L, 4, luaL_checkstring(L, 4));
    r = atomrun_range_test(f->fd, mode, start, length, &h);
    if (r < 0) {
        lua_getiuservalue(L, 1, 1);
        return arL_failerrno(L, r, "cannot test a lock on",
                             lua_tostring(L, -1));
    }
    if (r == 0) {
        lua_pushnil(L);
        return 1;
    }
    arL_pushholder(L, &h, 1);
    return 1;
}

int arL_open(lua_State *L)
{
    static const char *const names[] = { "create", "perm", NULL };
    const char *path = arL_checkpath(L, 1);
    int create, perm, fd, r;
    file *f;

    if (arL_nearurl(path))
        return arL_failnearurl(L, path);

    arL_checkoptnames(L, 2, names);
    create = arL_optbool(L, 2, "create", 1);
    perm = arL_optperm(L, 2, "perm", 0666);
    lua_settop(L, 2);
    f = lua_newuserdatauv(L, sizeof *f, 1);   /* the handle first */
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->set = arL_heldset(L);
    luaL_setmetatable(L, AR_FILE_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    fd = atomrun_lockfile_open(path, create, perm, ATOMRUN_NOFOLLOW,
                               &f->writable);
    if (fd < 0)
        return arL_failpath(L, fd, "cannot open", path, 0);
    f->fd = fd;
    r = ar_file_id(fd, &f->dev, &f->ino);
    if (r < 0) {
        file_release(f);
        return arL_failerrno(L, r, "cannot stat", path);
    }
    return 1;
}

/* ===================================================== range handles */

static range *checkrange(lua_State *L, int arg)
{
    return luaL_checkudata(L, arg, AR_RANGE_MT);
}

static void range_release(lua_State *L, int arg, range *rg)
{
    file *f;
    if (!rg->locked)
        return;
    lua_getiuservalue(L, arg, 1);
    f = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (f && f->fd >= 0)
        atomrun_range_unlock(f->fd, rg->held.start, rg->held.length);
    ar_heldset_remove(&rg->held);
    rg->locked = 0;
}

static int range_unlock(lua_State *L)
{
    range_release(L, 1, checkrange(L, 1));
    lua_pushboolean(L, 1);
    return 1;
}

static int range_gc(lua_State *L)
{
    range_release(L, 1, checkrange(L, 1));
    return 0;
}

static int range_tostring(lua_State *L)
{
    range *rg = checkrange(L, 1);
    lua_pushfstring(L, "atomrun.range (%s, %s, %s)",
                    rangetext(L, rg->held.start, rg->held.length),
                    arL_modename(rg->held.mode),
                    rg->locked ? "held" : "released");
    return 1;
}

static int range_start(lua_State *L)
{
    lua_pushinteger(L, checkrange(L, 1)->held.start);
    return 1;
}

static int range_length(lua_State *L)
{
    lua_pushinteger(L, checkrange(L, 1)->held.length);
    return 1;
}

static int range_mode(lua_State *L)
{
    lua_pushstring(L, arL_modename(checkrange(L, 1)->held.mode));
    return 1;
}

static int range_locked(lua_State *L)
{
    lua_pushboolean(L, checkrange(L, 1)->locked);
    return 1;
}

static int range_file(lua_State *L)
{
    checkrange(L, 1);
    lua_getiuservalue(L, 1, 1);
    return 1;
}

/* ================================================ lockfd() / unlockfd() */

static int checkfdarg(lua_State *L, int arg)
{
    lua_Integer fd;
    int isint;
    if (lua_type(L, arg) != LUA_TNUMBER)
        luaL_typeerror(L, arg, "integer (a descriptor)");
    fd = lua_tointegerx(L, arg, &isint);
    if (!isint || fd < 0 || fd > INT32_MAX)
        luaL_argerror(L, arg, "a descriptor is an integer >= 0");
    return (int)fd;
}

/* nil, "descriptor 9 is not open", "EBADF" and the like */
static int failfd(lua_State *L, int fd, int why)
{
    const char *text =
        why == ATOMRUN_FD_CLOSED ? "is not open"
        : why == ATOMRUN_FD_PATH ? "is an O_PATH descriptor, which cannot "
                                   "be locked"
        : why == ATOMRUN_FD_READONLY ? "is open read-only: an exclusive "
                                       "fcntl lock needs it open for writing"
        : "is open write-only: a shared fcntl lock needs it open for reading";
    return arL_fail(L, -EBADF, "descriptor %d %s", fd, text);
}

/* lockfd(fd [, opts]): lock a descriptor the caller gave us (`flock N`).
 * The handle does not own fd: unlock() releases the lock, but __gc and
 * __close leave it -- it belongs to the caller's open file description
 * and outlives us, as with flock(1). */
int arL_lockfd(lua_State *L)
{
    int fd = checkfdarg(L, 1), why, r, n = 0;
    arL_lockopts o;
    lockx x;
    ar_heldset *set;
    lock *lk;
    const char *what;

    checklockx(L, 2, &o, &x, 1);
    lua_settop(L, 2);
    set = arL_heldset(L);
    if (atomrun_fd_lockable(fd, o.mode, x.fcntl, &why) < 0)
        return failfd(L, fd, why);
    lk = lua_newuserdatauv(L, sizeof *lk, 1);
    memset(lk, 0, sizeof *lk);
    lk->held.fd = fd;
    lk->borrowed = 1;
    luaL_setmetatable(L, AR_LOCK_MT);
    what = lua_pushfstring(L, "descriptor %d", fd);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, -3, 1);               /* its "path" */
    lua_pop(L, 1);         /* the string stays alive in the uservalue */
    r = ar_file_id(fd, &lk->held.dev, &lk->held.ino);
    if (r < 0)
        return arL_failerrno(L, r, "cannot stat", what);
    lock_fill(lk, &o, &x);
    if (o.timeout != 0)
        ensure_ids(set, &lk->held);       /* the lock() handles' ids */
    if (o.timeout != 0 && ar_heldset_conflict(set, &lk->held))
        return arL_fail(L, -EDEADLK, "%s: its file is already locked by "
            "this script; waiting for it to be released would wait forever",
            what);
    if (take_lock(L, lk, &o, &x, what, &n) < 0)
        return n;
    lk->closed = 0;
    lk->locked = 1;
    ar_heldset_add(set, &lk->held);
    lua_settop(L, 3);
    return 1;
}

/* lockfd handles of fd (kind): released behind their back by unlockfd */
typedef struct fdkind { int fd, kind; } fdkind;

static int forget_fd(ar_held *h, void *ctx)
{
    const fdkind *k = ctx;
    lock *lk = (lock *)h;      /* held is the first member */
    if (h->fd == k->fd && h->kind == k->kind && h->owner == lk &&
        lk->borrowed) {
        ar_heldset_remove(h);
        lk->locked = 0;
    }
    return 0;
}

/* unlockfd(fd [, opts]): `flock -u N`.  opts: fcntl, start, length. */
int arL_unlockfd(lua_State *L)
{
    static const char *const names[] = { "fcntl", "start", "length", NULL };
    int fd = checkfdarg(L, 1), why, r, fcntl_;
    int64_t start, length;
    fdkind k;

    arL_checkoptnames(L, 2, names);
    fcntl_ = arL_optbool(L, 2, "fcntl", 0);
    start = optoffset(L, 2, "start");
    length = optoffset(L, 2, "length");
    if (!fcntl_ && (start || length))
        luaL_argerror(L, 2, "options 'start' and 'length' need fcntl = true");
    if (atomrun_fd_lockable(fd, 0, 0, &why) < 0)
        return failfd(L, fd, why);
    r = fcntl_ ? atomrun_range_unlock(fd, start, length)
               : atomrun_funlock(fd);
    if (r < 0)
        return arL_fail(L, r, "cannot unlock descriptor %d: %s", fd,
                        atomrun_strerror(r));
    k.fd = fd;
    k.kind = fcntl_ ? AR_HELD_RANGE : AR_HELD_FLOCK;
    ar_heldset_foreach(arL_heldset(L), forget_fd, &k);
    lua_pushboolean(L, 1);
    return 1;
}

/* ================================================== who() and holds() */

static void pushlockinfo(lua_State *L, const atomrun_lockinfo *e)
{
    arL_pushholder(L, &e->h, 1);
    lua_pushboolean(L, e->waiting);
    lua_setfield(L, -2, "waiting");
}

/* who(path) -> { {pid=, cmd=, mode=, kind=, start=, length=, since=,
 * waiting=}, ... } | nil, msg, code */
int arL_who(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    atomrun_lockinfo *list;
    int n = atomrun_who(path, &list);
    if (n < 0)
        return arL_failerrno(L, n, "cannot look at", path);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        pushlockinfo(L, &list[i]);
        lua_rawseti(L, -2, i + 1);
    }
    free(list);
    return 1;
}

/* holds(path, pid) -> boolean | nil, msg, code */
int arL_holds(lua_State *L)
{
    const char *path = arL_checkpath(L, 1);
    lua_Integer pid = luaL_checkinteger(L, 2);
    ar_stat st;
    int r;
    if (pid <= 0 || pid > INT32_MAX)
        luaL_argerror(L, 2, "a pid is an integer > 0");
    r = ar_stat_path(path, 1, &st);
    if (r < 0)
        return arL_failerrno(L, r, "cannot look at", path);
    r = atomrun_pid_holds((pid_t)pid, st.dev, st.ino);
    if (r < 0)
        return arL_failerrno(L, r, "cannot look at", path);
    lua_pushboolean(L, r);
    return 1;
}

void arL_openlock(lua_State *L)
{
    static const luaL_Reg lock_methods[] = {
        { "unlock", lock_unlock }, { NULL, NULL } };
    static const luaL_Reg lock_getters[] = {
        { "path", lock_path }, { "mode", lock_mode },
        { "locked", lock_locked }, { "start", lock_start },
        { "length", lock_length }, { "dev", lock_dev },
        { "ino", lock_ino }, { NULL, NULL } };
    static const luaL_Reg file_methods[] = {
        { "lock", file_lock }, { "test", file_test },
        { "close", file_close }, { NULL, NULL } };
    static const luaL_Reg file_getters[] = {
        { "path", file_path }, { "writable", file_writable },
        { "dev", file_dev }, { "ino", file_ino }, { NULL, NULL } };
    static const luaL_Reg range_methods[] = {
        { "unlock", range_unlock }, { NULL, NULL } };
    static const luaL_Reg range_getters[] = {
        { "start", range_start }, { "length", range_length },
        { "mode", range_mode }, { "locked", range_locked },
        { "file", range_file }, { NULL, NULL } };

    arL_newclass(L, AR_LOCK_MT, lock_methods, lock_getters, lock_gc,
                 lock_tostring);
    arL_newclass(L, AR_FILE_MT, file_methods, file_getters, file_gc,
                 file_tostring);
    arL_newclass(L, AR_RANGE_MT, range_methods, range_getters, range_gc,
                 range_tostring);
    /* lock() into the module table on top, with its upvalues (see
     * arL_lock); the set is anchored in the registry for the state's life */
    lua_pushlightuserdata(L, arL_heldset(L));
    luaL_getmetatable(L, AR_LOCK_MT);
    lua_pushcclosure(L, arL_lock, 2);
    lua_setfield(L, -2, "lock");
}
