/*
 * bind/bind.h -- what the binding files (src/bind/, the only C that knows Lua)
 * share.  Not installed; `arL_` names are private to the binding.
 *
 * Conventions, after Lua's own liolib.c:
 *   - expected failures return  nil, message, code [, extra]
 *     (code: "busy", "timeout", "exists", "deadlock" or an errno name;
 *     extra: the holder table for locks, the failed stage for files);
 *   - programming mistakes (wrong types, unknown options, negative lengths)
 *     raise a Lua error that names the argument;
 *   - handles are userdata created BEFORE the resource they own (an
 *     out-of-memory error then cannot leak it), whose __gc is their
 *     __close, with a "closed" state checked by every method.
 */
#ifndef AR_LBIND_H
#define AR_LBIND_H

#include "atomrun.h"
#include "core/shared.h"
#include "bind/bundle.h"

#include <lauxlib.h>
#include <lua.h>

#define AR_LOCK_MT  "atomrun.lock"
#define AR_FILE_MT  "atomrun.file"
#define AR_RANGE_MT "atomrun.range"

/* ---------------------------------------------------------- bind/aux.c */

/* The locks this Lua state holds (one set per state, in the registry). */
ar_heldset *arL_heldset(lua_State *L);

/* nil, message, code  (like luaL_fileresult, with our code names) */
/* A lock's mode, timeout and wait options (bind/aux.c). */
void arL_optmodewait(lua_State *L, int arg, int *mode, double *timeout);
int arL_fail(lua_State *L, int result, const char *fmt, ...);
/* nil, "WHAT PATH: sentence", code */
int arL_failerrno(lua_State *L, int result, const char *what,
                  const char *path);
/* The same for a path the call walked (follow: through the links at its
 * last component too): an -EACCES that is the protected-symlink rule's
 * names the link, its owner and the directory instead. */
int arL_failpath(lua_State *L, int result, const char *what,
                 const char *path, int follow);
/* The failure of a lock request (busy or timeout), naming the holder when
 * it is known: nil, msg, code [, holder]; range: the holder table has
 * start and length. */
int arL_faillock(lua_State *L, int r, const char *what, double timeout,
                 const atomrun_holder *h, int range);
void arL_pushholder(lua_State *L, const atomrun_holder *h, int range);
const char *arL_modename(int mode);

/* A path argument: a string without NUL (no silent number->string). */
const char *arL_checkpath(lua_State *L, int arg);
int arL_checkmode(lua_State *L, int arg, const char *s);

/*
 * The option checker: every option table is first checked against the
 * names it may hold (a typo like timout = 5 must be an error, not a
 * silently infinite wait), then each option is read with its type.
 * arL_opt leaves opts[name] on the stack and returns its type, or
 * returns LUA_TNIL and pushes nothing when it is absent.
 */
void arL_checkoptnames(lua_State *L, int arg, const char *const *names);
int arL_opt(lua_State *L, int arg, const char *name, int type);
int arL_optbool(lua_State *L, int arg, const char *name, int dflt);
double arL_optseconds(lua_State *L, int arg, const char *name, double dflt);
/* opts[name] as an integer in [min, max] (dflt when absent); otherwise
 * "option 'NAME' must be WHAT". */
int arL_optrange(lua_State *L, int arg, const char *name, int dflt,
                 lua_Integer min, lua_Integer max, const char *what);
int arL_optperm(lua_State *L, int arg, const char *name, int dflt);

/* The options of lock() and f:lock(). */
typedef struct arL_lockopts {
    int    mode;
    double timeout;           /* ATOMRUN_FOREVER, 0, or seconds */
    int    perm;
    int    create;
    int    holder;            /* look up who holds it on busy/timeout */
} arL_lockopts;
void arL_checklockopts(lua_State *L, int arg, arL_lockopts *o);
/* The same options without the check of their names (for a caller that
 * checks a longer list itself: lock(), lockfd()). */
void arL_readlockopts(lua_State *L, int arg, arL_lockopts *o);

/* A metatable `name` whose __index finds methods first (one rawget: the
 * hot path of lk:unlock()), then getters (functions of the object, called
 * with it at index 1); __gc and __close are both gc. */
void arL_newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                  const luaL_Reg *getters, lua_CFunction gc,
                  lua_CFunction tostring);

/* ------------------------------------------- the functions of the module */

int arL_lock(lua_State *L);          /* bind/lock.c */
int arL_open(lua_State *L);
int arL_lockfd(lua_State *L);
int arL_unlockfd(lua_State *L);
int arL_who(lua_State *L);
int arL_holds(lua_State *L);
/* the handle metatables, and lock() into the module table on top */
void arL_openlock(lua_State *L);

int arL_create(lua_State *L);        /* bind/file.c */
int arL_replace(lua_State *L);
int arL_read(lua_State *L);
int arL_stat(lua_State *L);
int arL_mkdir(lua_State *L);
int arL_resolve(lua_State *L);

int arL_run(lua_State *L);           /* bind/proc.c */
int arL_exec(lua_State *L);
int arL_etcd_kill_after(lua_State *L);   /* bind/proc.c: the guard's kill_after for a TTL */
int arL_pid(lua_State *L);
int arL_uid(lua_State *L);
int arL_hostname(lua_State *L);
int arL_isatty(lua_State *L);

/* etcd names: bind/etcd.c (URLs, clients, _etcd_call/_lease/_endpoints/
 * _key), bind/etcd_lock.c (the lock handle, the guard), bind/etcd_kv.c
 * (create/replace/read on keys, _etcd_watch, _etcd_queue). */
int arL_isurl(const char *name);     /* bind/etcd.c: "scheme://..." */
/* 1 for a name that looks like a mistyped etcd URL ("etcd:/h:2379/x",
 * "etcd//h:2379/x"): lock, open, create, replace and read refuse it with
 * arL_failnearurl (nil, msg, "EINVAL") rather than make a local file. */
int arL_nearurl(const char *name);
int arL_failnearurl(lua_State *L, const char *name);
int arL_etcd_lock(lua_State *L);     /* lock() for such a name */
int arL_etcd_queue(lua_State *L);
int arL_etcd_call(lua_State *L);
int arL_etcd_endpoints(lua_State *L);
/* run()'s guard option: the remote lock of an etcd lock handle. */
atomrun_etcd_lock *arL_checkguard(lua_State *L, int i, int arg);
/* create/replace/read for such a name (keys, issue 16) */
int arL_etcd_create(lua_State *L);
int arL_etcd_replace(lua_State *L);
int arL_etcd_read(lua_State *L);
int arL_etcd_key(lua_State *L);
int arL_etcd_watch(lua_State *L);
/* bind/etcd.c: the etcd lock handle's metatable, and the _etcd_* functions
 * into the module table on top. */
void arL_openremote(lua_State *L);
/* core.etcd (bind/etcd_txn.c): txn, lease, revoke and PREFIX, as the field
 * "etcd" of the module table on top (from arL_openremote). */
void arL_openetcdtxn(lua_State *L);

/* ---------------------------- shared by bind/etcd.c, etcd_lock.c, etcd_kv.c */

/* An etcd URL taken apart (bind/etcd.c): the endpoints as written (or from
 * ATOMRUN_ETCD), the credentials, the name (a lock's or a key's: never
 * empty), and the URL as messages show it, without its userinfo. */
typedef struct arL_url {
    int         tls;
    char        endpoints[1024];
    char        user[128], password[256];
    const char *name;           /* inside the URL string */
    char        shown[1536];    /* the URL without userinfo */
} arL_url;
/* Parse url into u; NULL, or the reason it is refused (pushed on the
 * stack, naming the URL without its credentials). */
const char *arL_parse_url(lua_State *L, const char *url, arL_url *u);
/* The client of u's cluster, TLS files from the arguments or else the
 * environment; 0, or the count of nil, msg, code pushed. */
int arL_open_client(lua_State *L, const arL_url *u, const char *ca,
                    const char *cert, const char *key, atomrun_etcd **c);
/* opts[name] as a string (kept alive by the options table), or NULL. */
const char *arL_optstr(lua_State *L, int arg, const char *name);
/* A positive whole option (ttl, slots): 1 .. 1000000. */
int arL_optposint(lua_State *L, int arg, const char *name, int dflt,
                  const char *what);

/* ----------------------------------------------------- bind/etcd_lock.c */

/* The class of the etcd lock handle (for arL_openremote). */
void arL_openetcdlock(lua_State *L);
/* The etcd lock handle at index i: 1 and its remote lock in *l (NULL once
 * released), or 0 when it is something else. */
int arL_testetcdlock(lua_State *L, int i, const atomrun_etcd_lock **l);
/* A holder of an etcd lock as a table; its writer's fields (pid, host,
 * cmd, since) into the table on top (a key's creator too). */
void arL_pushrholder(lua_State *L, const atomrun_etcd_holder *h);
void arL_setwriter(lua_State *L, const atomrun_etcd_holder *h);
/* A holder's since (epoch seconds) as "2026-12-07T20:08:00Z" in buf, or
 * NULL when unknown (0). */
const char *arL_utc_text(char *buf, size_t size, int64_t since);

/* bind/bundle.c: put every bundled module, and atomrun.core, in
 * package.preload; load one entry as a chunk (LUA_OK or an error). */
void arL_preload_bundle(lua_State *L);
int arL_loadbundled(lua_State *L, const ar_bundled *m);
const ar_bundled *arL_findbundled(const char *name);

#endif
