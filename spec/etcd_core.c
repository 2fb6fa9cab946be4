/*
 * spec/etcd_core.c -- drives the C core's etcd client directly (no Lua),
 * for spec/etcd_core_spec.lua, which builds it against the libatomrun.a
 * under test and runs it as real processes against the spec cluster.
 *
 *   etcd_core ENDPOINTS try   NAME TIMEOUT [TTL [shared|N]]
 *       take the lock, print "ok TOKEN INDEX", release; or print
 *       "CODE|MESSAGE|HOLDER-PID|HOLDER-HOST" and exit 1
 *   etcd_core ENDPOINTS hold  NAME STOPFILE [TTL [shared|N]]
 *       take it, print "ok TOKEN INDEX", hold until STOPFILE exists
 *       (checking lost every 20 ms: then print "lost|WHY"), release and
 *       print "unlock CODE|MESSAGE"
 *   etcd_core ENDPOINTS incr  NAME FILE COUNT
 *       COUNT times: lock, read the number in FILE, write it + 1 (not
 *       atomically), unlock; print "VALUE TOKEN" each time
 *   etcd_core ENDPOINTS slot  NAME N DIR
 *       take one of N slots, make DIR/in.PID, count the in.* files there
 *       (print "inside K"), wait 200 ms, remove it, release
 *   etcd_core ENDPOINTS cycle NAME N
 *       N uncontended lock+unlock cycles on one session; print the mean
 *       seconds per cycle (for scripts/bench/etcd.lua)
 *   etcd_core ENDPOINTS queue NAME
 *   etcd_core ENDPOINTS get   KEY          print "REV VALUE" or CODE|MESSAGE
 *   etcd_core ENDPOINTS put   KEY VALUE [create] [rev=N] [ttl=N]
 *   etcd_core ENDPOINTS fenced NAME KEY VALUE STOPFILE [TTL]
 *       take lock NAME, print "ok TOKEN", wait for STOPFILE, then put
 *       KEY=VALUE fenced by the lock: print "put OK" or "put CODE|MSG"
 *   etcd_core ENDPOINTS txn [cmp KEY TARGET RESULT ARG]... [then OP...] [else OP...]
 *       one atomrun_etcd_txn.  TARGET version|create|mod|value|lease|N (a
 *       raw number), RESULT = != > < or N; OP is put KEY VALUE, get KEY or
 *       del KEY, then its words: prefix, end=KEY, lease=N, limit=N, keys,
 *       count, prevkv, sort=key|version|create|mod|value, desc, type=N.
 *       KEY (null) is a NULL key; keys and values take \xNN and \\.
 *       Prints "ok SUCCEEDED REVISION", then "op I TYPE COUNT MORE DELETED"
 *       per op, each followed by its "kv KEY VALUE CREATE MOD VERSION
 *       LEASE" and "prev ..." lines (bytes outside ! to ~ and \ as \xNN);
 *       or CODE|MESSAGE and exit 1
 * ETCD_CORE_TIME=1: try prints "granted T", hold "releasing T" (monotonic).
 * Environment: ETCD_TLS=1, ETCD_CA, ETCD_CERT, ETCD_KEY, ETCD_USER,
 * ETCD_PASSWORD.
 */
#define _GNU_SOURCE
#include "atomrun.h"

#include <time.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* CLOCK_MONOTONIC seconds, the clock atomrun's own deadlines run on. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The rank a lock was granted at (atomrun_etcd_lock_info's index). */
static int lock_index(const atomrun_etcd_lock *l)
{
    atomrun_etcd_lockinfo info;
    atomrun_etcd_lock_info(l, &info);
    return info.index;
}

static atomrun_etcd *client(const char *eps)
{
    atomrun_etcd_config cfg;
    atomrun_etcd *c;
    atomrun_err e;
    int r;
    atomrun_etcd_config_init(&cfg);
    cfg.endpoints = eps;
    cfg.tls = getenv("ETCD_TLS") != NULL;
    cfg.ca_file = getenv("ETCD_CA");
    cfg.cert_file = getenv("ETCD_CERT");
    cfg.key_file = getenv("ETCD_KEY");
    cfg.user = getenv("ETCD_USER");
    cfg.password = getenv("ETCD_PASSWORD");
    if (getenv("ETCD_OP_TIMEOUT"))
        cfg.op_timeout = atof(getenv("ETCD_OP_TIMEOUT"));
    r = atomrun_etcd_open(&cfg, &c, &e);
    if (r < 0) {
        printf("%s|%s||\n", atomrun_err_name(r), e.msg);
        exit(1);
    }
    return c;
}

static void lock_opts(atomrun_etcd_lock_opts *o, int argc, char **argv, int at)
{
    atomrun_etcd_lock_opts_init(o);
    if (argc > at)
        o->ttl = atoi(argv[at]);
    if (argc > at + 1) {
        if (strcmp(argv[at + 1], "shared") == 0)
            o->mode = ATOMRUN_SHARED;
        else
            o->slots = atoi(argv[at + 1]);
    }
}

/* Take the lock NAME, or print "CODE|MESSAGE|PID|HOST" of the failure. */
static int take(atomrun_etcd *c, const char *name, const atomrun_etcd_lock_opts *o,
                atomrun_etcd_lock **l)
{
    atomrun_etcd_holder h;
    atomrun_err e;
    int r = atomrun_etcd_lock_acquire(c, name, o, l, &h, NULL, &e);
    if (r < 0)
        printf("%s|%s|%d|%s\n", atomrun_err_name(r), e.msg, (int)h.pid, h.host);
    return r;
}

static int cmd_try(atomrun_etcd *c, int argc, char **argv)
{
    atomrun_etcd_lock_opts o;
    atomrun_etcd_lock *l;
    atomrun_err e;
    int r;
    lock_opts(&o, argc, argv, 5);
    o.timeout = atof(argv[4]);
    if (take(c, argv[3], &o, &l) < 0)
    return 1;
    printf("ok %lld %d\n", (long long)atomrun_etcd_lock_token(l),
           lock_index(l));
    if (getenv("ETCD_CORE_TIME"))   /* the bench's hand-off: granted at */
        printf("granted %.9f\n", now_s());
    r = atomrun_etcd_lock_release(l, &e);
    return r < 0 ? 1 : 0;
}

static int cmd_hold(atomrun_etcd *c, int argc, char **argv)
{
    atomrun_etcd_lock_opts o;
    atomrun_etcd_lock *l;
    atomrun_err e, why;
    int r, said = 0;
    lock_opts(&o, argc, argv, 5);
    if (take(c, argv[3], &o, &l) < 0)
    return 1;
    printf("ok %lld %d\n", (long long)atomrun_etcd_lock_token(l),
           lock_index(l));
    fflush(stdout);
    while (access(argv[4], F_OK) != 0) {
        if (!said && atomrun_etcd_lock_lost(l, &why) < 0) {
            printf("lost|%s\n", why.msg);
            fflush(stdout);
            said = 1;
        }
        usleep(getenv("ETCD_CORE_TIME") ? 200 : 20000);
    }
    if (getenv("ETCD_CORE_TIME"))
        printf("releasing %.9f\n", now_s());
    r = atomrun_etcd_lock_release(l, &e);
    printf("unlock %s|%s\n", atomrun_err_name(r), e.msg);
    return 0;
}

static int cmd_incr(atomrun_etcd *c, int argc, char **argv)
{
    int n = argc > 5 ? atoi(argv[5]) : 10;
    for (int i = 0; i < n; i++) {
        atomrun_etcd_lock_opts o;
        atomrun_etcd_lock *l;
        atomrun_err e;
        long v = 0;
        FILE *f;
        int r;
        atomrun_etcd_lock_opts_init(&o);
        o.timeout = 60;
        if (take(c, argv[3], &o, &l) < 0)
        return 1;
        if ((f = fopen(argv[4], "r"))) {
            if (fscanf(f, "%ld", &v) != 1)
                v = 0;
            fclose(f);
        }
        usleep(1000);               /* widen the race a lock must close */
        if ((f = fopen(argv[4], "w"))) {
            fprintf(f, "%ld\n", v + 1);
            fclose(f);
        }
        printf("%ld %lld\n", v + 1, (long long)atomrun_etcd_lock_token(l));
        r = atomrun_etcd_lock_release(l, &e);
        if (r < 0) {
            printf("%s|%s||\n", atomrun_err_name(r), e.msg);
            return 1;
        }
    }
    return 0;
}

static int cmd_slot(atomrun_etcd *c, char **argv)
{
    atomrun_etcd_lock_opts o;
    atomrun_etcd_lock *l;
    atomrun_err e;
    char path[4096], cmd[4200];
    int r, k = 0;
    FILE *f;
    atomrun_etcd_lock_opts_init(&o);
    o.slots = atoi(argv[4]);
    o.timeout = 60;
    if (take(c, argv[3], &o, &l) < 0)
    return 1;
    snprintf(path, sizeof path, "%s/in.%d", argv[5], (int)getpid());
    if ((f = fopen(path, "w")))
        fclose(f);
    snprintf(cmd, sizeof cmd, "ls %s | grep -c '^in\\.'", argv[5]);
    if ((f = popen(cmd, "r"))) {
        if (fscanf(f, "%d", &k) != 1)
            k = -1;
        pclose(f);
    }
    printf("inside %d index %d\n", k, lock_index(l));
    usleep(200000);
    unlink(path);
    r = atomrun_etcd_lock_release(l, &e);
    return r < 0 ? 1 : 0;
}

static int cmd_cycle(atomrun_etcd *c, char **argv)
{
    int n = atoi(argv[4]);
    double t0 = 0;
    for (int i = 0; i <= n; i++) {
        atomrun_etcd_lock_opts o;
        atomrun_etcd_lock *l;
        atomrun_err e;
        int r;
        if (i == 1)
            t0 = now_s();     /* the first cycle also grants the lease */
        atomrun_etcd_lock_opts_init(&o);
        o.timeout = 10;
        if (take(c, argv[3], &o, &l) < 0)
        return 1;
        r = atomrun_etcd_lock_release(l, &e);
        if (r < 0) {
            printf("%s|%s||\n", atomrun_err_name(r), e.msg);
            return 1;
        }
    }
    printf("%.9f\n", n > 0 ? (now_s() - t0) / n : 0.0);
    return 0;
}

static int cmd_get(atomrun_etcd *c, char **argv)
{
    atomrun_err e;
    char *data;
    size_t len;
    atomrun_etcd_kv_meta kv;
    int r = atomrun_etcd_get(c, argv[3], &data, &len, &kv, 0, &e);
    if (r < 0) {
        printf("%s|%s||\n", atomrun_err_name(r), e.msg);
        return 1;
    }
    printf("%lld %s\n", (long long)kv.mod_rev, data);
    free(data);
    return 0;
}

static int cmd_put(atomrun_etcd *c, int argc, char **argv)
{
    atomrun_err e;
    atomrun_etcd_put_opts o;
    atomrun_etcd_put_result out;
    int r;
    atomrun_etcd_put_opts_init(&o);
    for (int i = 5; i < argc; i++) {
        if (strcmp(argv[i], "create") == 0)
            o.create_only = 1;
        else if (strncmp(argv[i], "rev=", 4) == 0)
            o.if_mod_rev = atoll(argv[i] + 4);
        else if (strncmp(argv[i], "ttl=", 4) == 0)
            o.ttl = atoi(argv[i] + 4);
    }
    r = atomrun_etcd_put(c, argv[3], argv[4], strlen(argv[4]), &o, &out, 0, &e);
    if (r < 0) {
        printf("%s|%s|%lld|\n", atomrun_err_name(r), e.msg, (long long)out.existing.mod_rev);
        return 1;
    }
    printf("ok %lld\n", (long long)out.revision);
    if (o.ttl > 0) {                /* stay, so that the lease lives on */
        fflush(stdout);
        pause();
    }
    return 0;
}

static int cmd_fenced(atomrun_etcd *c, int argc, char **argv)
{
    atomrun_etcd_lock_opts lo;
    atomrun_etcd_lock *l;
    atomrun_etcd_put_opts po;
    atomrun_err e;
    int r;
    atomrun_etcd_lock_opts_init(&lo);
    if (argc > 7)
        lo.ttl = atoi(argv[7]);
    if (take(c, argv[3], &lo, &l) < 0)
    return 1;
    printf("ok %lld\n", (long long)atomrun_etcd_lock_token(l));
    fflush(stdout);
    while (access(argv[6], F_OK) != 0)
        usleep(20000);
    atomrun_etcd_put_opts_init(&po);
    po.fence = l;
    r = atomrun_etcd_put(c, argv[4], argv[5], strlen(argv[5]), &po, NULL, 0, &e);
    printf("put %s|%s\n", atomrun_err_name(r), e.msg);
    atomrun_etcd_lock_release(l, &e);
    return 0;
}

static int cmd_queue(atomrun_etcd *c, char **argv)
{
    atomrun_etcd_holder h[32];
    atomrun_err e;
    int n, r = atomrun_etcd_queue(c, argv[3], h, 32, &n, &e);
    if (r < 0) {
        printf("%s|%s||\n", atomrun_err_name(r), e.msg);
        return 1;
    }
    printf("%d\n", n);
    for (int i = 0; i < n && i < 32; i++)
        printf("%lld %d %s %s %lld|%s\n", (long long)h[i].token, (int)h[i].pid,
               h[i].host, h[i].mode == ATOMRUN_SHARED ? "shared" : "exclusive",
               (long long)h[i].since, h[i].cmd);
    return 0;
}

/* ------------------------------------------------------------ txn */

#define TXN_MAX 16

/* A txn as the words of the command line describe it; the bytes of the
 * keys and values live in argv (unescaped in place). */
typedef struct txn_args {
    atomrun_etcd_cmp cmp[TXN_MAX];
    atomrun_etcd_op  ops[2][TXN_MAX];           /* then, else */
    size_t           ncmp, nops[2];
} txn_args;

static int hexval(int ch)
{
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
         : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

/* \xNN and \\ in s, in place: its length (it may hold NUL bytes now). */
static size_t unescape(char *s)
{
    size_t o = 0;
    for (size_t i = 0; s[i]; i++) {
        if (s[i] == '\\' && s[i + 1] == '\\') {
            s[o++] = '\\';
            i++;
        } else if (s[i] == '\\' && s[i + 1] == 'x' && hexval(s[i + 2]) >= 0 &&
                   hexval(s[i + 3]) >= 0) {
            s[o++] = (char)(hexval(s[i + 2]) << 4 | hexval(s[i + 3]));
            i += 3;
        } else {
            s[o++] = s[i];
        }
    }
    return o;
}

static void bytes_arg(char *word, const void **p, size_t *len)
{
    if (strcmp(word, "(null)") == 0) {
        *p = NULL;
        *len = 0;
        return;
    }
    *len = unescape(word);
    *p = word;
}

static int word_of(const char *w, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(w, names[i]) == 0)
            return i + 1;
    return atoi(w);             /* a raw number: what an unknown one does */
}

static const char *const targets[] = { "version", "create", "mod", "value", "lease" };
static const char *const results[] = { "=", "!=", ">", "<" };
static const char *const sorts[] = { "key", "version", "create", "mod", "value" };
static const char *const optypes[] = { "put", "get", "del" };

/* cmp KEY TARGET RESULT ARG at argv[i]: the words used. */
static int cmp_words(txn_args *t, char **argv, int i)
{
    atomrun_etcd_cmp *c = &t->cmp[t->ncmp++];
    bytes_arg(argv[i + 1], &c->key, &c->keylen);
    c->target = word_of(argv[i + 2], targets, 5);
    c->result = word_of(argv[i + 3], results, 4);
    if (c->target == ATOMRUN_ETCD_VALUE)
        bytes_arg(argv[i + 4], &c->value, &c->valuelen);
    else
        c->number = atoll(argv[i + 4]);
    return 5;
}

/* A word after an op: 1 if it was one of its modifiers. */
static int op_modifier(atomrun_etcd_op *o, char *w)
{
    if (strcmp(w, "prefix") == 0)
        o->prefix = 1;
    else if (strncmp(w, "end=", 4) == 0)
        bytes_arg(w + 4, &o->range_end, &o->range_end_len);
    else if (strncmp(w, "lease=", 6) == 0)
        o->lease = atoll(w + 6);
    else if (strncmp(w, "limit=", 6) == 0)
        o->limit = atoll(w + 6);
    else if (strcmp(w, "keys") == 0)
        o->keys_only = 1;
    else if (strcmp(w, "count") == 0)
        o->count_only = 1;
    else if (strcmp(w, "prevkv") == 0)
        o->prev_kv = 1;
    else if (strncmp(w, "sort=", 5) == 0)
        o->sort = word_of(w + 5, sorts, 5);
    else if (strcmp(w, "desc") == 0)
        o->descend = 1;
    else if (strncmp(w, "type=", 5) == 0)
        o->type = atoi(w + 5);
    else
        return 0;
    return 1;
}

/* put KEY VALUE | get KEY | del KEY, and its modifiers: the words used. */
static int op_words(atomrun_etcd_op *o, int argc, char **argv, int i)
{
    int n = 2;
    o->type = word_of(argv[i], optypes, 3);
    bytes_arg(argv[i + 1], &o->key, &o->keylen);
    if (o->type == ATOMRUN_ETCD_PUT && i + 2 < argc)
        bytes_arg(argv[i + n++], &o->value, &o->valuelen);
    while (i + n < argc && op_modifier(o, argv[i + n]))
        n++;
    return n;
}

static int parse_txn(txn_args *t, int argc, char **argv)
{
    int i = 3, branch = 0;
    memset(t, 0, sizeof *t);
    while (i < argc) {
        if (strcmp(argv[i], "then") == 0 || strcmp(argv[i], "else") == 0) {
            branch = argv[i++][0] == 'e';
        } else if (strcmp(argv[i], "cmp") == 0 && i + 4 < argc && t->ncmp < TXN_MAX) {
            i += cmp_words(t, argv, i);
        } else if (i + 1 < argc && t->nops[branch] < TXN_MAX) {
            i += op_words(&t->ops[branch][t->nops[branch]++], argc, argv, i);
        } else {
            fprintf(stderr, "etcd_core txn: cannot read '%s'\n", argv[i]);
            return -1;
        }
    }
    return 0;
}

static void print_bytes(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch > ' ' && ch < 0x7f && ch != '\\')
            putchar(ch);
        else
            printf("\\x%02x", ch);
    }
}

static void print_kvs(const char *tag, const atomrun_etcd_kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++, kv++) {
        printf("%s ", tag);
        print_bytes(kv->key, kv->keylen);
        putchar(' ');
        print_bytes(kv->value, kv->valuelen);
        printf(" %lld %lld %lld %lld\n", (long long)kv->create_rev, (long long)kv->mod_rev,
               (long long)kv->version, (long long)kv->lease);
    }
}

static int cmd_txn(atomrun_etcd *c, int argc, char **argv)
{
    static const char *const types[] = { "?", "put", "range", "delete" };
    atomrun_etcd_txn_result *res;
    atomrun_err e;
    txn_args t;
    int r;
    if (parse_txn(&t, argc, argv) < 0)
        return 2;
    r = atomrun_etcd_txn(c, t.cmp, t.ncmp, t.ops[0], t.nops[0], t.ops[1], t.nops[1], &res,
                         0, &e);
    if (r < 0) {
        printf("%s|%s\n", atomrun_err_name(r), e.msg);
        return 1;
    }
    printf("ok %d %lld\n", res->succeeded, (long long)res->revision);
    for (size_t i = 0; i < res->nops; i++) {
        const atomrun_etcd_op_result *o = &res->ops[i];
        printf("op %zu %s %lld %d %lld\n", i + 1, types[o->type >= 1 && o->type <= 3 ? o->type : 0],
               (long long)o->count, o->more, (long long)o->deleted);
        print_kvs("kv", o->kvs, o->nkvs);
        print_kvs("prev", o->prev_kvs, o->nprev);
    }
    atomrun_etcd_txn_free(res);
    return 0;
}

int main(int argc, char **argv)
{
    atomrun_etcd *c;
    int r = 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 4) {
        fprintf(stderr, "usage: etcd_core ENDPOINTS try|hold|incr|queue|txn ...\n");
        return 2;
    }
    c = client(argv[1]);
    if (strcmp(argv[2], "try") == 0 && argc >= 5)
        r = cmd_try(c, argc, argv);
    else if (strcmp(argv[2], "hold") == 0 && argc >= 5)
        r = cmd_hold(c, argc, argv);
    else if (strcmp(argv[2], "incr") == 0 && argc >= 5)
        r = cmd_incr(c, argc, argv);
    else if (strcmp(argv[2], "slot") == 0 && argc >= 6)
        r = cmd_slot(c, argv);
    else if (strcmp(argv[2], "cycle") == 0 && argc >= 5)
        r = cmd_cycle(c, argv);
    else if (strcmp(argv[2], "get") == 0)
        r = cmd_get(c, argv);
    else if (strcmp(argv[2], "put") == 0 && argc >= 5)
        r = cmd_put(c, argc, argv);
    else if (strcmp(argv[2], "fenced") == 0 && argc >= 7)
        r = cmd_fenced(c, argc, argv);
    else if (strcmp(argv[2], "queue") == 0)
        r = cmd_queue(c, argv);
    else if (strcmp(argv[2], "txn") == 0)
        r = cmd_txn(c, argc, argv);
    return r;
}
