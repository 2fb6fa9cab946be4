/*
 * bind/proc.c -- processes: run() and exec() (argv, environment, inherited
 * locks), and pid(), uid(), isatty().
 */
#define _GNU_SOURCE
#include "bind/bind.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

/* argv table -> NULL-terminated array.  The strings (numbers converted)
 * are anchored in a table left on the stack for the duration of the call. */
static char **checkargv(lua_State *L, int arg)
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

/* Check one opts.env entry (name, value on the stack) and push the name
 * and its "name=value" (nil for false: remove it). */
static void envpair(lua_State *L, int arg)
{
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
        lua_pushnil(L);
    else if (vt == LUA_TSTRING || vt == LUA_TNUMBER)
        lua_pushfstring(L, "%s=%s", lua_tostring(L, -1), lua_tostring(L, -2));
    else
        luaL_argerror(L, arg, "opts.env values must be strings or false");
}

/* opts.env: a table merged over the current environment (false removes). */
static char **buildenv(lua_State *L, int arg)
{
    size_t count = 0;
    char **envp;
    int tbl, merged;

    if (arL_opt(L, arg, "env", LUA_TTABLE) == LUA_TNIL)
        return NULL;
    tbl = lua_gettop(L);
    lua_newtable(L);                          /* name -> "name=value" */
    merged = lua_gettop(L);
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
        envpair(L, arg);
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

/* Descriptors of every lock this state holds (for inheritance), in a
 * userdata left on the stack. */
static int *heldfds(lua_State *L, int *n)
{
    ar_heldset *set = arL_heldset(L);
    size_t count = ar_heldset_fds(set, NULL, 0);
    int *fds = lua_newuserdatauv(L, sizeof(int) * (count + 1), 0);
    ar_heldset_fds(set, fds, count);
    *n = (int)count;
    return fds;
}

/* opts.close_fds = {fd, ...}: the caller's descriptors the command must
 * not get (closed in the command only; the caller's stay open).  The
 * array is a userdata left on the stack. */
static const int *checkclosefds(lua_State *L, int arg, int *n)
{
    lua_Integer len;
    int *fds, count;
    *n = 0;
    if (arL_opt(L, arg, "close_fds", LUA_TTABLE) == LUA_TNIL)
        return NULL;
    len = luaL_len(L, -1);
    if (len < 0 || len > 4096)
        luaL_argerror(L, arg, "option 'close_fds' must be a list of at most 4096 descriptors");
    count = (int)len;
    fds = lua_newuserdatauv(L, sizeof(int) * (size_t)(count + 1), 0);
    for (int i = 0; i < count; i++) {
        int isint;
        lua_Integer fd;
        lua_geti(L, -2, i + 1);
        fd = lua_tointegerx(L, -1, &isint);
        lua_pop(L, 1);
        if (!isint || fd < 0 || fd > INT_MAX)
            luaL_argerror(L, arg, lua_pushfstring(L, "option 'close_fds': item %d is not a "
                                                  "descriptor number (an integer >= 0)", i + 1));
        fds[i] = (int)fd;
    }
    lua_remove(L, -2);       /* the list; the userdata stays */
    *n = count;
    return fds;
}

static void checkspawnopts(lua_State *L, int arg, atomrun_spawn_opts *o,
                           int exec)
{
    static const char *const run_names[] = { "timeout", "kill_after",
        "close_locks", "env", "cwd", "forward_signals", "on_start",
        "die_with_parent", "guard", "close_fds", NULL };
    static const char *const exec_names[] = { "close_locks", "env", "cwd",
                                              NULL };
    atomrun_spawn_opts_init(o);
    arL_checkoptnames(L, arg, exec ? exec_names : run_names);
    if (arL_opt(L, arg, "cwd", LUA_TSTRING) != LUA_TNIL) {
        size_t len;
        o->cwd = lua_tolstring(L, -1, &len);   /* stays on the stack */
        if (strlen(o->cwd) != len)
            luaL_argerror(L, arg, "option 'cwd' contains a NUL byte");
    }
    if (!exec) {
        o->timeout = arL_optseconds(L, arg, "timeout", -1);
        o->kill_after = arL_optseconds(L, arg, "kill_after", 1);
        o->new_group = o->timeout >= 0;
        o->forward = arL_optbool(L, arg, "forward_signals", 0);
        /* SIGKILL, not SIGTERM: the point is that no orphan keeps running
         * with the lock, and a TERM can be caught or ignored while the
         * parent that would follow up with KILL is dead. */
        if (arL_optbool(L, arg, "die_with_parent", 0))
            o->die_with_parent = SIGKILL;
        o->hide_fds = checkclosefds(L, arg, &o->nhide);
    }
    o->envp = buildenv(L, arg);
    if (!arL_optbool(L, arg, "close_locks", 0))
        o->keep_fds = heldfds(L, &o->nkeep);
}

/* opts.on_start, called by atomrun_run once the command runs.  An error
 * in it must not longjmp through the core (the command would be left
 * running, the signal mask changed): it is caught here, kept on the
 * stack, and raised again once atomrun_run has killed and reaped. */
typedef struct onstart {
    lua_State *L;
    int        fn;           /* stack index of the function; 0: none */
    int        failed;
    atomrun_etcd_lock *guard;   /* opts.guard: armed once the pid is known */
    double     kill_after;
} onstart;

static int call_onstart(void *ctx, pid_t pid)
{
    onstart *s = ctx;
    if (s->guard) {
        /* The command leads its own group (new_group), so its pid is the
         * group the guard ends if the lock is lost. */
        int r = atomrun_etcd_lock_guard(s->guard, pid, s->kill_after);
        if (r < 0) {
            lua_pushfstring(s->L, "run: cannot guard the command with its lock: %s",
                            atomrun_strerror(r));
            s->failed = 1;
            return 1;
        }
    }
    if (!s->fn)
        return 0;
    lua_pushvalue(s->L, s->fn);
    lua_pushinteger(s->L, pid);
    if (lua_pcall(s->L, 1, 0, 0) != LUA_OK) {
        s->failed = 1;
        return 1;                  /* the error object stays on top */
    }
    return 0;
}

/*
 * opts.guard = lk (an etcd lock): the command runs as under `atomrun lock
 * etcd://...`: ATOMRUN_LOCK_TOKEN in its environment, its own process
 * group, PR_SET_PDEATHSIG SIGKILL (it dies with us, however we die), and a
 * watchdog process (etcd/guard.c) that ends it and its tree before the lease
 * can expire -- also while we are stopped -- with SIGTERM, then SIGKILL
 * kill_after s later (default: TTL/4, at most 5; at most TTL/2 - 0.25).
 * opts is replaced by a copy whose env also holds the token, so the one
 * environment builder serves.
 */
static atomrun_etcd_lock *guardopts(lua_State *L, int arg)
{
    atomrun_etcd_lock *l;
    int copy, env;
    if (lua_type(L, arg) != LUA_TTABLE)
        return NULL;
    if (lua_getfield(L, arg, "guard") == LUA_TNIL) {
        lua_pop(L, 1);
        return NULL;
    }
    l = arL_checkguard(L, -1, arg);
    lua_pop(L, 1);
    lua_newtable(L);
    copy = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, copy);
    }
    lua_getfield(L, arg, "env");
    if (lua_isnil(L, -1) || lua_istable(L, -1)) {   /* else the checker says */
        lua_newtable(L);
        env = lua_gettop(L);
        if (lua_istable(L, -2)) {
            lua_pushnil(L);
            while (lua_next(L, -3)) {
                lua_pushvalue(L, -2);
                lua_insert(L, -2);
                lua_rawset(L, env);
            }
        }
        lua_pushfstring(L, "%I", (lua_Integer)atomrun_etcd_lock_token(l));
        lua_setfield(L, env, "ATOMRUN_LOCK_TOKEN");
        lua_setfield(L, copy, "env");
    }
    lua_pop(L, 1);
    lua_replace(L, arg);
    return l;
}

/* "5 s does not fit in a TTL of 2 s: at most 0.75 s (why)", said the same
 * by run() and by the CLI's check. */
static const char *pushfit(lua_State *L, const char *what, double asked, int ttl)
{
    char a[32], most[32], margin[32];
    snprintf(a, sizeof a, "%g", asked);
    snprintf(most, sizeof most, "%g", ttl / 2.0 - ATOMRUN_ETCD_GUARD_MARGIN);
    snprintf(margin, sizeof margin, "%g", ATOMRUN_ETCD_GUARD_MARGIN);
    return lua_pushfstring(L, "%s%s s does not fit in a TTL of %d s: at most %s s (the "
        "command must be dead %s s before the lease can expire, and the keepalive needs "
        "half the TTL)", what, a, ttl, most, margin);
}

/* The guarded command's SIGTERM-to-SIGKILL time, checked against the
 * lock's TTL before anything runs (a bad value is the caller's mistake). */
static double guard_kill_after(lua_State *L, int arg, atomrun_etcd_lock *l)
{
    double asked = arL_optseconds(L, arg, "kill_after", -1), ka;
    int ttl = ar_etcd_lockinfo(l).ttl;
    if (ar_etcd_kill_after(ttl, asked, &ka) < 0)
        luaL_argerror(L, arg, pushfit(L, "option 'kill_after': ", asked, ttl));
    return ka;
}

/* What the guard did, for the message: fired is atomrun_etcd_lock_unguard's. */
static const char *fired_text(int fired)
{
    switch (fired) {
    case 1:  return "sent SIGTERM";
    case 2:  return "sent SIGKILL";
    case 3:  return "sent SIGTERM, then SIGKILL";
    default: return "it had just finished";
    }
}

/* nil, "lost the lock URL while CMD ran (why); what was done", "lost". */
static int lostresult(lua_State *L, const char *cmd, int fired, const char *why)
{
    const char *url;
    lua_getfield(L, 2, "guard");          /* in opts' copy: the handle */
    lua_getfield(L, -1, "path");
    url = lua_tostring(L, -1);
    lua_pushnil(L);
    lua_pushfstring(L, "lost the lock %s while %s ran (%s); %s", url ? url : "?", cmd,
                    why, fired_text(fired));
    lua_pushliteral(L, "lost");
    return 3;
}

int arL_run(lua_State *L)
{
    atomrun_spawn_opts o;
    char **argv;
    int is_signal = 0, code = 0, r;
    onstart start = { L, 0, 0, NULL, 0 };

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);    /* checkargv pushes: keep opts at index 2 */
    start.guard = guardopts(L, 2);
    argv = checkargv(L, 1);
    checkspawnopts(L, 2, &o, 0);
    if (arL_opt(L, 2, "on_start", LUA_TFUNCTION) != LUA_TNIL)
        start.fn = lua_gettop(L);          /* stays on the stack */
    if (start.guard) {
        o.new_group = 1;
        o.die_with_parent = SIGKILL;
        start.kill_after = guard_kill_after(L, 2, start.guard);
    }
    if (start.fn || start.guard) {
        o.on_start = call_onstart;
        o.on_start_ctx = &start;
    }
    r = atomrun_run(argv, &o, &is_signal, &code);
    if (start.guard) {
        atomrun_err why;
        int fired = atomrun_etcd_lock_unguard(start.guard);
        int lost = atomrun_etcd_lock_lost(start.guard, &why) < 0;
        if (start.failed)
            return lua_error(L);
        if (r == 0 && (fired || lost))
            return lostresult(L, argv[0], fired, lost ? why.msg :
                "its lease was not confirmed in time, so the command was ended "
                "before the lease could expire");
    }
    if (start.failed)
        return lua_error(L);
    if (r < 0) {
        ar_stat st;
        /* The child reports one errno: say when chdir, not exec, failed. */
        if (o.cwd && (ar_stat_path(o.cwd, 1, &st) < 0 ||
                      strcmp(st.type, "directory") != 0))
            return arL_fail(L, r, "cannot run %s: cannot change to "
                            "directory %s: %s", argv[0], o.cwd,
                            atomrun_strerror(r));
        return arL_fail(L, r, "cannot run %s: %s", argv[0],
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

int arL_exec(lua_State *L)
{
    atomrun_spawn_opts o;
    char **argv;
    int r;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);    /* checkargv pushes: keep opts at index 2 */
    argv = checkargv(L, 1);
    checkspawnopts(L, 2, &o, 1);
    fflush(NULL);
    r = atomrun_exec(argv, &o);
    return arL_fail(L, r, "cannot run %s: %s", argv[0], atomrun_strerror(r));
}

/* _etcd_kill_after(ttl [, seconds]) -> the guarded command's SIGTERM-to-
 * SIGKILL time for a lock of ttl s (seconds, or the default) | nil, msg,
 * "ERANGE": the CLI checks --kill-after before it takes any lock. */
int arL_etcd_kill_after(lua_State *L)
{
    lua_Integer ttl = luaL_checkinteger(L, 1);
    double asked = luaL_optnumber(L, 2, -1), ka;
    luaL_argcheck(L, ttl >= 1 && ttl <= 1000000, 1, "a whole number of seconds >= 1");
    luaL_argcheck(L, lua_isnoneornil(L, 2) || asked >= 0, 2, "seconds >= 0 expected");
    if (ar_etcd_kill_after((int)ttl, asked, &ka) < 0) {
        lua_pushnil(L);
        pushfit(L, "", asked, (int)ttl);
        lua_pushliteral(L, "ERANGE");
        return 3;
    }
    lua_pushnumber(L, ka);
    return 1;
}

int arL_pid(lua_State *L)
{
    lua_pushinteger(L, getpid());
    return 1;
}

int arL_uid(lua_State *L)
{
    lua_pushinteger(L, geteuid());
    return 1;
}

/* hostname() -> the host's name (gethostname), as holder and status
 * records name it; "localhost" when the kernel has none to give. */
int arL_hostname(lua_State *L)
{
    char host[256];
    if (gethostname(host, sizeof host) != 0 || !host[0]) {
        lua_pushliteral(L, "localhost");
        return 1;
    }
    host[sizeof host - 1] = '\0';   /* a truncated name may lack it */
    lua_pushstring(L, host);
    return 1;
}

int arL_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}
