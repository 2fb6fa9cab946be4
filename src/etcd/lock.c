/*
 * etcd/lock.c -- locks, readers-writer locks and semaphores on etcd: the queue
 * of clientv3/concurrency's mutex, on etcd's own keys, with the holder
 * recorded in the key.
 *
 *   key    NAME "/" <lease hex> -- exactly the key clientv3's
 *          concurrency.NewMutex(session, NAME) and `etcdctl lock NAME`
 *          make -- bound to the session's lease, so a dead holder's key
 *          goes with its lease.  A second key of this process on the same
 *          lease and name (two slots of one semaphore, two threads) gets
 *          "-" <n> after it, <n> unique in the process (claim_key): etcd's
 *          own waiters look only at the create revisions under the
 *          prefix, never at the rest of the key.
 *   value  {"host", "pid", "cmd", "since", "mode"} as JSON ("slots" too
 *          for a semaphore's), for busy/timeout messages, `atomrun who`,
 *          `etcdctl get --prefix NAME/` and `etcdctl elect -l NAME` (which
 *          prints the holder's key and this value).  mode is the key's
 *          kind: "exclusive", "shared" or "semaphore".  Any other value
 *          (clientv3 writes an empty one) is a foreign key: exclusive, known
 *          only by its lease and create revision.
 *   queue  ALL the keys directly under NAME/, whoever wrote them, in
 *          create-revision order.  The kinds exclude each other (decide):
 *          an exclusive key holds when it is first; a shared (reader) key
 *          while every key ahead of it is shared; a semaphore's slot while
 *          every key ahead is a slot of the same semaphore and fewer than
 *          n are ahead.  So one name is never held by two kinds at once,
 *          and a clientv3 contender, which waits for every key created
 *          before its own, waits for our readers and slots too.  The create
 *          revision is the fencing token: etcd's revisions only grow, so
 *          each new holder's token is higher, whichever client it is.
 *
 * Acquire is one txn: "if my key does not exist, put it; in either case
 * read the queue".  Re-sent after a lost answer (the member died after the
 * put) it finds the key already there and does not queue twice.
 *
 * The trap is the copy that arrives LATE: a request that got no answer may
 * still be in the network or in a member's queue, and land after the lock
 * was taken through another member and released -- re-creating the key on
 * our live lease, where it would stand at the head of the queue for the
 * life of the process (everyone waits for it; we wait for ourselves).  So
 * each acquisition also has a ticket, AR_TICKET_PREFIX <lease hex> "-" <n>,
 * on the same lease, and the txn is "if neither the key nor the ticket
 * exists, put both".  A late copy finds the ticket and puts nothing.  The
 * release deletes the ticket with the key, in the same txn, only when
 * every copy of the enqueue was answered (ar_etcd_send_tracked: none can
 * be in flight); otherwise the ticket stays until the lease ends.  A waiter
 * that gives up without knowing whether its enqueue landed burns the
 * ticket ("if the ticket does not exist, put it; else delete the key"):
 * after that no copy can land.  Still two consensus writes a lock and
 * unlock: the ticket rides in the txns that were there anyway.
 *
 * A waiter
 * watches only the key it waits for -- the one just before it for a mutex,
 * the last writer before it for a reader -- from the revision of the read,
 * so no delete between the read and the watch is missed, and a release
 * wakes one waiter, not the herd.  A semaphore waiter watches the name's
 * keys (any release may be its turn).  After every wake the queue is read
 * again: that read is also the check that the key still exists with its
 * revision (the lease may have expired while waiting).
 *
 * Keys under NAME/ that are not directly under it ("NAME/sub/<lease hex>"
 * is a contender of the lock "NAME/sub") are skipped, so nested names are
 * separate locks: a holder of NAME/sub never holds NAME.  (clientv3's
 * waiters for NAME do count them -- they look at every key under the
 * prefix -- so an etcdctl contender of NAME also waits behind holders of
 * NAME/sub: slower, never two holders.)  atomrun's bookkeeping (tickets,
 * creator records) lives under ATOMRUN_ETCD_PREFIX, a name refused here.
 */
#define _GNU_SOURCE
#include "etcd/internal.h"
#include "core/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define AR_NAME_MAX     200
#define AR_WATCH_SLICE  2.0     /* re-read the queue at least this often */
#define AR_TICKET_PREFIX ATOMRUN_ETCD_PREFIX "ticket/"


struct atomrun_etcd_lock {
    atomrun_etcd *c;
    ar_session   *s;            /* NULL once the release is pending */
    char         *name;
    int           ttl;
    int64_t       lease;
    char         *key;
    char         *ticket;       /* its enqueue's ticket (see the top) */
    int           clean;        /* every copy of the enqueue was answered */
    int64_t       token;
    int           index;
    uint64_t      cluster;      /* the granting cluster's id */
    ar_guard     *guard;
    /* A release whose answer never came (atomrun_etcd_lock_release): who
     * retries it, and what happens next, for the messages. */
    ar_retry     *retry;
    char         *next;
};

static pthread_mutex_t seq_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned        seq;

/*
 * The contender keys of this process that may exist (under seq_mu): from
 * the enqueue until a member confirmed the key gone.  clientv3's key is
 * NAME/<lease hex>, one per lease; ours too while it is free, and
 * <lease hex>-<n> when this process has that one already -- another lock
 * of the name on the same lease, or a key whose release or leave was never
 * answered (its retry deletes that key by name: it must not meet a new
 * acquisition's).
 */
typedef struct claimed {
    struct claimed *next;
    char            key[];
} claimed;
static claimed *claimed_keys;

static int is_claimed(const char *key)
{
    for (const claimed *c = claimed_keys; c; c = c->next)
        if (strcmp(c->key, key) == 0)
            return 1;
    return 0;
}

/* Our key for a lease under prefix into key, claimed; n is the
 * acquisition's number (its ticket's).  -ENOMEM. */
static int claim_key(char *key, size_t size, const char *prefix, int64_t lease, unsigned n)
{
    claimed *c;
    int r = 0;
    pthread_mutex_lock(&seq_mu);
    snprintf(key, size, "%s%llx", prefix, (unsigned long long)lease);
    if (is_claimed(key))
        snprintf(key, size, "%s%llx-%u", prefix, (unsigned long long)lease, n);
    if ((c = malloc(sizeof *c + strlen(key) + 1)) != NULL) {
        strcpy(c->key, key);
        c->next = claimed_keys;
        claimed_keys = c;
    } else {
        r = -ENOMEM;
    }
    pthread_mutex_unlock(&seq_mu);
    return r;
}

/* A member confirmed key gone (or never written): free to use again. */
static void unclaim_key(const char *key)
{
    pthread_mutex_lock(&seq_mu);
    for (claimed **p = &claimed_keys; *p; p = &(*p)->next)
        if (strcmp((*p)->key, key) == 0) {
            claimed *c = *p;
            *p = c->next;
            free(c);
            break;
        }
    pthread_mutex_unlock(&seq_mu);
}

void atomrun_etcd_lock_opts_init(atomrun_etcd_lock_opts *o)
{
    memset(o, 0, sizeof *o);
    o->mode = ATOMRUN_EXCLUSIVE;
    o->slots = 1;
    o->timeout = ATOMRUN_FOREVER;
    o->ttl = 10;
}

int64_t atomrun_etcd_lock_token(const atomrun_etcd_lock *l) { return l->token; }

void atomrun_etcd_lock_info(const atomrun_etcd_lock *l, atomrun_etcd_lockinfo *info)
{
    info->token = l->token;
    info->index = l->index;
    info->key = l->key;
    info->lease = l->lease;
    info->ttl = l->ttl;
    info->cluster = l->cluster;
}

int atomrun_etcd_lock_lost(const atomrun_etcd_lock *l, atomrun_err *err)
{
    char *why = err ? err->msg : NULL;
    size_t len = err ? sizeof err->msg : 0;
    if (err)
        memset(err, 0, sizeof *err);
    if (!l->s) {                /* released (the answer pending): never a fence */
        if (why)
            snprintf(why, len, "the lock of %s was released", l->name);
        return ATOMRUN_ELOST;
    }
    return ar_session_lost(l->s, why, len);
}

/* ------------------------------------------------------------ guard */

/* The watchdog process that ends a command before the lease can expire
 * lives in etcd/guard.c; a lock has at most one. */
int atomrun_etcd_lock_guard(atomrun_etcd_lock *l, pid_t pgid, double kill_after)
{
    if (l->guard || !l->s)          /* !s: released, its answer pending */
        return -EINVAL;
    return ar_guard_start(l->s, pgid, kill_after, &l->guard);
}

/*
 * Stop the guard.  Call it as soon as the command has been waited for: the
 * kernel may give its pid to a new process after that (the window is the
 * time between the wait and this call).
 */
int atomrun_etcd_lock_unguard(atomrun_etcd_lock *l)
{
    int fired = ar_guard_stop(l->guard);
    l->guard = NULL;
    return fired;
}

/* The kinds of key; one with no record we can read (written by another
 * client) counts as exclusive. */
enum { K_EXCLUSIVE, K_SHARED, K_SLOT };

/* One key of the queue. */
typedef struct entry {
    char   *key;                /* decoded */
    int64_t rev, lease;
    int     kind;               /* K_* */
    int     slots;              /* K_SLOT: the semaphore's count */
    json_t *value;              /* decoded record, or NULL */
} entry;

typedef struct queue {
    entry   *e;
    int      n;
    int64_t  revision;          /* of the read */
    uint64_t cluster;           /* the answering cluster's id */
} queue;

static void queue_free(queue *q)
{
    for (int i = 0; i < q->n; i++) {
        free(q->e[i].key);
        json_decref(q->e[i].value);
    }
    free(q->e);
    q->e = NULL;
    q->n = 0;
}

static void fill_holder(const entry *e, atomrun_etcd_holder *h)
{
    memset(h, 0, sizeof *h);
    h->token = e->rev;
    h->lease = e->lease;
    h->mode = e->kind == K_SHARED ? ATOMRUN_SHARED : ATOMRUN_EXCLUSIVE;
    h->slots = e->kind == K_SLOT ? e->slots : 0;
    ar_strlcpy(h->key, e->key, sizeof h->key);
    ar_writer_of(e->value, h);
}

/* Is v a holder record as ar_writer_record writes it for a lock key (a
 * JSON object with host and pid; its mode, if it is one we know, says the
 * kind, else exclusive)?  Any other value is another client's key. */
static int is_lock_record(const json_t *v)
{
    return json_is_object(v) && json_is_string(json_object_get(v, "host")) &&
           json_is_integer(json_object_get(v, "pid"));
}

/* A key's record (its value as JSON), and from it the key's kind.  A key
 * without one (etcdctl lock and clientv3's Mutex write an empty value) is
 * K_EXCLUSIVE with no record: its holder is known by lease and token. */
static void read_record(entry *e, const char *val, size_t vlen)
{
    json_error_t je;
    const char *m;
    int64_t n;
    e->value = vlen ? json_loadb(val, vlen, 0, &je) : NULL;
    if (e->value && !is_lock_record(e->value)) {
        json_decref(e->value);
        e->value = NULL;
    }
    if (!e->value)
        return;
    m = json_string_value(json_object_get(e->value, "mode"));
    n = ar_json_int64(e->value, "slots");
    if (m && strcmp(m, "shared") == 0)
        e->kind = K_SHARED;
    else if (m && strcmp(m, "semaphore") == 0 && n > 1 && n <= 1000000) {
        e->kind = K_SLOT;
        e->slots = (int)n;
    }
}

/* The kvs of op i of res (a read of the queue) into q: only keys directly
 * under prefix.  Their keys are taken over. */
static int parse_queue(atomrun_etcd_txn_result *res, size_t i, const char *prefix, queue *q)
{
    atomrun_etcd_op_result *rr = &res->ops[i];
    size_t plen = strlen(prefix);
    q->revision = res->revision;
    if (res->cluster)
        q->cluster = res->cluster;
    if (rr->nkvs == 0)
        return 0;
    q->e = calloc(rr->nkvs + 1, sizeof *q->e);
    if (!q->e)
        return -ENOMEM;
    for (size_t k = 0; k < rr->nkvs; k++) {
        atomrun_etcd_kv *kv = &rr->kvs[k];
        entry *e;
        if (kv->keylen <= plen || memchr(kv->key + plen, '/', kv->keylen - plen) ||
            memchr(kv->key, '\0', kv->keylen))
            continue;
        e = &q->e[q->n++];
        e->key = kv->key;
        kv->key = NULL;
        e->rev = kv->create_rev;
        e->lease = kv->lease;
        read_record(e, kv->value, kv->valuelen);
    }
    return 0;
}

/* A read of every key under prefix, oldest first. */
static atomrun_etcd_op queue_op(const char *prefix)
{
    atomrun_etcd_op o = { .type = ATOMRUN_ETCD_RANGE, .key = prefix, .keylen = strlen(prefix),
                          .prefix = 1, .sort = ATOMRUN_ETCD_SORT_CREATE };
    return o;
}

static int read_queue(atomrun_etcd *c, const char *prefix, double deadline,
                      queue *q, char *err, size_t errlen)
{
    atomrun_etcd_op op = queue_op(prefix);
    atomrun_etcd_txn_result *res;
    int r = ar_etcd_range(c, &op, deadline, &res, err, errlen);
    if (r < 0)
        return r;
    r = parse_queue(res, 0, prefix, q);
    atomrun_etcd_txn_free(res);
    return r;
}

/* A txn's body, to send (or send again, from the retry thread); NULL
 * only when out of memory -- the library's own txns are valid by
 * construction -- which sending turns into -ENOMEM. */
static json_t *txn_body(const atomrun_etcd_cmp *cmp, size_t ncmp, const atomrun_etcd_op *then,
                        size_t nthen, const atomrun_etcd_op *otherwise, size_t nelse)
{
    char err[ATOMRUN_ERRLEN];
    json_t *body;
    if (ar_txn_body(cmp, ncmp, then, nthen, otherwise, nelse, &body, err, sizeof err) < 0)
        return NULL;
    return body;
}

/*
 * Put key and its ticket (if neither is there) and read the queue, in one
 * txn.  The txn answers with the puts' responses (or none) and the
 * range's.  *unsure: a copy of it may still land (ar_etcd_send_tracked).
 */
static int enqueue(atomrun_etcd *c, const char *prefix, const char *key,
                   const char *ticket, const char *value, int64_t lease,
                   double deadline, int *unsure, queue *q, char *err, size_t errlen)
{
    atomrun_etcd_cmp absent[2] = { ar_cmp_equal(key, ATOMRUN_ETCD_CREATE, 0),
                                   ar_cmp_equal(ticket, ATOMRUN_ETCD_CREATE, 0) };
    atomrun_etcd_op join[3] = { ar_op_put(key, value, strlen(value), lease),
                                ar_op_put(ticket, key, strlen(key), lease), queue_op(prefix) };
    atomrun_etcd_op look = queue_op(prefix);
    atomrun_etcd_txn_result *res;
    int r = ar_etcd_txn_at(c, absent, 2, join, 3, &look, 1, deadline, unsure, &res,
                           err, errlen);
    if (r < 0)
        return r;
    r = -EPROTO;
    /* the txn's header revision is the one to watch from */
    for (size_t i = 0; i < res->nops; i++)
        if (res->ops[i].type == ATOMRUN_ETCD_RANGE)
            r = parse_queue(res, i, prefix, q);
    if (r == -EPROTO)
        snprintf(err, errlen, "%s: the lock txn answered without the queue",
                 atomrun_etcd_endpoints(c));
    atomrun_etcd_txn_free(res);
    return r;
}

/*
 * The release: delete key if it still has token.  Its ticket goes in the
 * same txn when clean (no copy of the enqueue can still land); otherwise
 * it stays, to stop such a copy, but is marked RELEASED.
 *
 * The failure side tells a release apart from a lock lost.  A release
 * whose answer was lost and which was sent again fails its compare (the
 * first copy deleted the key), and so does one whose key was deleted by
 * somebody else or went with the lease.  It reads the ticket and puts it
 * (RELEASED, on our lease): the put fails the whole txn with "lease not
 * found" when the lease is gone, and the read says whether the key went by
 * our own earlier copy (the ticket gone, clean, or RELEASED) or by somebody
 * else's hand (the ticket as the enqueue wrote it).  (etcd refuses a put
 * and a delete of one key in one txn, so that ticket stays until the lease
 * ends: one key, and only after such a failure.)
 */
#define RELEASED "released"

static json_t *release_txn(const char *key, int64_t token, const char *ticket, int clean,
                           int64_t lease)
{
    atomrun_etcd_cmp mine = ar_cmp_equal(key, ATOMRUN_ETCD_CREATE, token);
    atomrun_etcd_op ok[2] = { ar_op_delete(key), clean ? ar_op_delete(ticket)
                              : ar_op_put(ticket, RELEASED, strlen(RELEASED), lease) };
    atomrun_etcd_op no[2] = { ar_op_get(ticket),
                              ar_op_put(ticket, RELEASED, strlen(RELEASED), lease) };
    return txn_body(&mine, 1, ok, 2, no, 2);
}

/* The release's verdict: 1 released (now or by an earlier copy of it), 0
 * the key was gone by someone else's hand or with the lease, < 0 no
 * answer. */
static int release_send(atomrun_etcd *c, const char *key, int64_t token, const char *ticket,
                        int clean, int64_t lease, char *err, size_t errlen)
{
    atomrun_etcd_txn_result *res;
    const atomrun_etcd_kv *t;
    int r = ar_txn_send(c, release_txn(key, token, ticket, clean, lease), 0, NULL, &res,
                        err, errlen);
    if (r == -ENOENT && strstr(err, "lease not found"))
        return 0;
    if (r < 0)
        return r;
    if (res->succeeded)
        r = 1;
    else if (!(t = ar_txn_kv(res, 0)))
        r = clean;                  /* the ticket went with the key, in our txn */
    else
        r = t->valuelen == strlen(RELEASED) && memcmp(t->value, RELEASED, t->valuelen) == 0;
    atomrun_etcd_txn_free(res);
    return r;
}

/* The txn of a waiter that leaves the queue (gives up, or queues again):
 * its key goes; and if its enqueue may not have landed, its ticket is put
 * so that no copy of the enqueue can land later ("burnt").  With clean
 * (every copy was answered) the ticket goes too. */
static json_t *leave_txn(const char *key, const char *ticket, int clean, int64_t lease)
{
    atomrun_etcd_cmp no_ticket = ar_cmp_equal(ticket, ATOMRUN_ETCD_CREATE, 0);
    atomrun_etcd_op burn = ar_op_put(ticket, key, strlen(key), lease);
    atomrun_etcd_op go[2] = { ar_op_delete(key), ar_op_delete(ticket) };
    return txn_body(&no_ticket, 1, &burn, 1, go, clean ? 2 : 1);
}

/* Send a txn's body (taken over); 1 its compares held, 0 they did not,
 * < 0 the cluster did not answer or refused. */
static int txn_send(atomrun_etcd *c, json_t *body, double deadline, char *err, size_t errlen)
{
    atomrun_etcd_txn_result *res;
    int r = ar_txn_send(c, body, deadline, NULL, &res, err, errlen);
    if (r < 0)
        return r;
    r = res->succeeded;
    atomrun_etcd_txn_free(res);
    return r;
}

/* ------------------------------------------------------------ waiting */

typedef struct deletewait {
    const char *key;            /* NULL: any delete under the prefix */
} deletewait;

static int on_watch(void *ud, json_t *result)
{
    deletewait *w = ud;
    json_t *events = json_object_get(result, "events"), *ev;
    size_t i;
    (void)w;
    json_array_foreach(events, i, ev) {
        const char *type = json_string_value(json_object_get(ev, "type"));
        if (type && strcmp(type, "DELETE") == 0)
            return 1;
    }
    return 0;
}

/* Wait until `target` (or, NULL, any key under prefix) is deleted after
 * revision rev, or until `until`. */
static int wait_delete(atomrun_etcd *c, const char *prefix, const char *target,
                       int64_t rev, double until, char *err, size_t errlen)
{
    char start[32];
    deletewait w = { target };
    json_t *req;
    int r;
    snprintf(start, sizeof start, "%lld", (long long)(rev + 1));
    if (target) {
        req = json_pack("{s:o, s:s}", "key", ar_json_b64(target, strlen(target)),
                        "start_revision", start);
    } else {
        size_t plen = strlen(prefix), elen;
        char *end = ar_prefix_end(prefix, plen, &elen);
        if (!end)
            return -ENOMEM;
        req = json_pack("{s:o, s:o, s:s}", "key", ar_json_b64(prefix, plen),
                        "range_end", ar_json_b64(end, elen), "start_revision", start);
        free(end);
    }
    if (!req)
        return -ENOMEM;
    r = ar_etcd_watch(c, req, until, on_watch, &w, err, errlen);
    json_decref(req);
    return r;
}

/* Is a of the same kind as e (a slot: of the same semaphore)? */
static int same_kind(const entry *a, const entry *e)
{
    return a->kind == e->kind && (e->kind != K_SLOT || a->slots == e->slots);
}

/*
 * Does the key at position me hold?  The kinds exclude each other: an
 * exclusive key holds when it is first; a shared key while every key ahead
 * is shared; a semaphore's slot while every key ahead is a slot of the same
 * semaphore and fewer than n are ahead.  When it does not, *wait_for is
 * the key whose delete may change that (NULL: any key of the name) and
 * *blocker the one in the way, for messages.
 */
static int decide(const queue *q, int me, const entry **wait_for, const entry **blocker)
{
    const entry *e = &q->e[me];
    int i, first_other = -1, last_other = -1;
    *wait_for = NULL;
    *blocker = NULL;
    for (i = 0; i < me; i++)
        if (!same_kind(&q->e[i], e)) {
            if (first_other < 0)
                first_other = i;
            last_other = i;
        }
    if (e->kind == K_EXCLUSIVE) {
        if (me == 0)
            return 1;
        *wait_for = &q->e[me - 1];
        *blocker = &q->e[0];
        return 0;
    }
    if (last_other < 0 && (e->kind == K_SHARED || me < e->slots))
        return 1;
    if (last_other >= 0) {
        *wait_for = &q->e[last_other];
        *blocker = &q->e[first_other];
    } else {
        *blocker = &q->e[0];        /* all n slots taken: any release may do */
    }
    return 0;
}

/* A slot of another count ahead of a slot at me: the first, or NULL.  One
 * name is one semaphore; two counts on it would each let in a different
 * number of holders. */
static const entry *other_count(const queue *q, int me)
{
    for (int i = 0; i < me; i++)
        if (q->e[i].kind == K_SLOT && q->e[i].slots != q->e[me].slots)
            return &q->e[i];
    return NULL;
}

/* ", as a shared lock": the kind of a holder, for busy messages. */
static void kind_phrase(const atomrun_etcd_holder *h, char *buf, size_t size)
{
    if (h->slots > 0)
        snprintf(buf, size, ", as a slot of a semaphore of %d", h->slots);
    else
        snprintf(buf, size, ", as %s lock",
                 h->mode == ATOMRUN_SHARED ? "a shared" : "an exclusive");
}

static int find_me(const queue *q, const char *key)
{
    for (int i = 0; i < q->n; i++)
        if (strcmp(q->e[i].key, key) == 0)
            return i;
    return -1;
}

static int valid_name(const char *name, char *err, size_t errlen)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0) {
        snprintf(err, errlen, "empty etcd lock name");
        return -EINVAL;
    }
    if (n > AR_NAME_MAX) {
        snprintf(err, errlen, "etcd lock name longer than %d bytes", AR_NAME_MAX);
        return -EINVAL;
    }
    /* "a/" would queue under "a//": the keys of no name; and "a//b" is
     * "a/" + "/b", a contender key of nothing with a "/" in its rest */
    if (name[n - 1] == '/' || name[0] == '/' || strstr(name, "//")) {
        snprintf(err, errlen, "etcd lock name \"%s\" has an empty path segment", name);
        return -EINVAL;
    }
    /* the keys under atomrun/ are our bookkeeping (tickets, creator
     * records): a lock there could meet them, or a ticket its name */
    if (strncmp(name, ATOMRUN_ETCD_PREFIX, sizeof ATOMRUN_ETCD_PREFIX - 2) == 0 &&
        (name[sizeof ATOMRUN_ETCD_PREFIX - 2] == '\0' ||
         name[sizeof ATOMRUN_ETCD_PREFIX - 2] == '/')) {
        /* (the name cut at 100 bytes: the sentence must fit) */
        snprintf(err, errlen, "etcd lock name \"%.100s\" is in atomrun's own key space ("
                 ATOMRUN_ETCD_PREFIX "): choose another name", name);
        return -EINVAL;
    }
    return 0;
}

/* ------------------------------------------------------------ acquire */

/*
 * One acquire as its steps see it: the caller's options (copied in) and
 * what it reports -- the holder in the way, the cluster's minimum TTL, the
 * message -- which atomrun_etcd_lock_acquire hands back through its own
 * out-parameters (the options are inputs only).
 */
typedef struct lock_req {
    int                 mode, slots;
    double              timeout;
    int                 ttl;
    const char         *cmd;
    atomrun_etcd_holder holder;
    int                 min_ttl;
    char                err[ATOMRUN_ERRLEN];
} lock_req;

/* One acquire's state, from the first enqueue to the handle or the give-up. */
typedef struct attempt {
    atomrun_etcd       *c;
    const char         *name;
    lock_req           *o;
    double              wait_until;      /* 1e300: no deadline */
    char                prefix[AR_NAME_MAX + 64];
    char                key[AR_NAME_MAX + 96];
    char                ticket[sizeof AR_TICKET_PREFIX + 32];
    char               *value;           /* our holder record */
    ar_session         *s;               /* NULL until joined */
    queue               q;               /* the queue as last read */
    int                 unsure;          /* the enqueue's outcome was not known */
    int                 requeues;
} attempt;

/* wait_turn's answer when our key is gone: queue again at the back. */
#define AR_REQUEUE 1

/* How long a network step may take: the caller's deadline when it has one;
 * otherwise (wait forever, or not at all) the client's op_timeout. */
static double op_deadline(const attempt *a)
{
    return a->o->timeout > 0 ? a->wait_until
                             : ar_now() + ar_etcd_op_timeout(a->c);
}

static int check_request(const char *name, lock_req *o)
{
    int r;
    if ((r = valid_name(name, o->err, sizeof o->err)) < 0)
        return r;
    if (o->slots < 1 || (o->mode == ATOMRUN_SHARED && o->slots != 1) ||
        (o->mode != ATOMRUN_SHARED && o->mode != ATOMRUN_EXCLUSIVE)) {
        snprintf(o->err, sizeof o->err, "etcd lock: bad mode or slot count");
        return -EINVAL;
    }
    if (o->ttl < 1) {
        snprintf(o->err, sizeof o->err, "etcd lock: ttl must be at least 1 second");
        return -ERANGE;
    }
    return 0;
}

/* A session (the lease) and our key in the queue, under a name of its own
 * (the lease and a per-process sequence number: a resend is never the same
 * key as the copy that got lost).  a->s is set once the session is. */
static int join_queue(attempt *a)
{
    lock_req *o = a->o;
    unsigned n;
    int r;
    for (;;) {
        r = ar_session_get(a->c, o->ttl, op_deadline(a), &a->s, &o->min_ttl,
                           o->err, sizeof o->err);
        if (r < 0) {
            a->s = NULL;
            return r;
        }
        pthread_mutex_lock(&seq_mu);
        n = ++seq;
        pthread_mutex_unlock(&seq_mu);
        if (claim_key(a->key, sizeof a->key, a->prefix, ar_session_lease(a->s), n) < 0)
            return -ENOMEM;     /* the caller's give_up: nothing was sent */
        snprintf(a->ticket, sizeof a->ticket, "%s%llx-%u", AR_TICKET_PREFIX,
                 (unsigned long long)ar_session_lease(a->s), n);
        a->unsure = 0;
        r = enqueue(a->c, a->prefix, a->key, a->ticket, a->value, ar_session_lease(a->s),
                    op_deadline(a), &a->unsure, &a->q, o->err, sizeof o->err);
        if (!(r == -ENOENT && strstr(o->err, "lease not found") && a->requeues++ < 3))
            return r;
        /* The cluster no longer has our lease (revoked by someone, or a
         * cluster rebuilt on the same endpoints): a new session.  No copy
         * of the txn can put the key on a lease that is gone. */
        unclaim_key(a->key);
        ar_session_abandon(a->s, o->err);
        ar_session_put(a->s);
        a->s = NULL;
    }
}

/* Our key gone (the lease expired while we waited -- a stopped process, a
 * partition -- or someone deleted it): leave what may be left and let the
 * session go.  0 to queue again at the back, ATOMRUN_ELOST after the third
 * time or past the deadline. */
static int requeue(attempt *a)
{
    char derr[ATOMRUN_ERRLEN] = "";
    queue_free(&a->q);
    /* best effort: the lease takes them anyway (then the put of the ticket
     * fails the txn: "lease not found") */
    if (txn_send(a->c, leave_txn(a->key, a->ticket, !a->unsure, ar_session_lease(a->s)),
                 ar_now() + 1.0, derr, sizeof derr) >= 0 ||
        strstr(derr, "lease not found"))
        unclaim_key(a->key);
    ar_session_put(a->s);
    a->s = NULL;
    if (++a->requeues > 3 || ar_now() >= a->wait_until) {
        snprintf(a->o->err, sizeof a->o->err, "lost the place in the queue of %s "
                 "while waiting (the lease expired)", a->name);
        return ATOMRUN_ELOST;
    }
    return 0;
}

/* A slot ahead of ours counts another number of slots: -EINVAL, naming it. */
static int refuse_other_count(attempt *a, const entry *blocker)
{
    const entry *ignore;
    atomrun_etcd_holder h;
    fill_holder(blocker, &h);
    snprintf(a->o->err, sizeof a->o->err, "%s is a semaphore of %d slots (pid %d on %s "
             "%s a slot), not of %d: every user of one semaphore asks for the "
             "same count", a->name, blocker->slots, (int)h.pid, h.host[0] ? h.host : "?",
             decide(&a->q, (int)(blocker - a->q.e), &ignore, &ignore) ? "holds" : "waits for",
             a->o->slots);
    a->o->holder = h;
    return -EINVAL;
}

/* Our key holds, at position me: the handle, which takes the session over. */
static int make_handle(attempt *a, int me, atomrun_etcd_lock **out)
{
    atomrun_etcd_lock *l = calloc(1, sizeof *l);
    if (!l || !(l->key = strdup(a->key)) || !(l->ticket = strdup(a->ticket)) ||
        !(l->name = strdup(a->name))) {
        if (l) {
            free(l->key);
            free(l->ticket);
        }
        free(l);
        return -ENOMEM;
    }
    l->c = a->c;
    l->s = a->s;
    l->ttl = a->o->ttl;
    l->lease = ar_session_lease(a->s);
    l->clean = !a->unsure;
    l->cluster = a->q.cluster;
    l->token = a->q.e[me].rev;
    l->index = me + 1;
    a->s = NULL;
    *out = l;
    return 0;
}

/* Wait for the delete that may give us the turn (a slice at most), then
 * read the queue again: that also catches a delete the watch did not see
 * (a compaction, a broken stream). */
static int wait_and_reread(attempt *a, const entry *wait_for, double left)
{
    lock_req *o = a->o;
    int r = wait_delete(a->c, a->prefix, wait_for ? wait_for->key : NULL, a->q.revision,
                        ar_now() + (left < AR_WATCH_SLICE ? left : AR_WATCH_SLICE),
                        o->err, sizeof o->err);
    if (r < 0)
        return r;
    queue_free(&a->q);
    r = read_queue(a->c, a->prefix, o->timeout > 0 ? a->wait_until : op_deadline(a),
                   &a->q, o->err, sizeof o->err);
    if (r == ATOMRUN_EUNAVAILABLE && o->timeout > 0 && ar_now() >= a->wait_until)
        r = ATOMRUN_ETIMEOUT;
    return r;
}

/* Until our key holds: 0 with *out, AR_REQUEUE when the key is gone, or
 * busy, timeout and the errors (o->holder names who is in the way). */
static int wait_turn(attempt *a, atomrun_etcd_lock **out)
{
    lock_req *o = a->o;
    for (;;) {
        const entry *wait_for, *blocker, *ignore;
        int me = find_me(&a->q, a->key), r;
        char why[ATOMRUN_ERRLEN];
        double left;

        if (me < 0 || ar_session_lost(a->s, why, sizeof why) < 0)
            return AR_REQUEUE;
        if (a->q.e[me].kind == K_SLOT && (blocker = other_count(&a->q, me)) != NULL)
            return refuse_other_count(a, blocker);
        if (decide(&a->q, me, &wait_for, &blocker))
            return make_handle(a, me, out);
        if (blocker) {
            fill_holder(blocker, &o->holder);
            o->holder.waiting = !decide(&a->q, (int)(blocker - a->q.e), &ignore, &ignore);
        }
        left = a->wait_until - ar_now();
        if (o->timeout == 0 || left <= 0)
            return o->timeout == 0 ? ATOMRUN_EBUSY : ATOMRUN_ETIMEOUT;
        if ((r = wait_and_reread(a, wait_for, left)) < 0)
            return r;
    }
}

/*
 * A waiter that gives up leaves no key, and no way for a late copy of its
 * enqueue to make one (leave_txn): a moment more for that, past the
 * deadline if need be -- a key left behind would stand in the queue, ahead
 * of everyone after it, for as long as the lease lives.  When the cluster
 * did not answer and no other lock of ours uses the lease, the lease is
 * let go: the key, if any, then goes within the TTL.
 */
static void give_up(attempt *a, int r)
{
    char derr[ATOMRUN_ERRLEN];
    double grace = r == ATOMRUN_EUNAVAILABLE ? 1.0 : 2.0;
    int64_t lease = ar_session_lease(a->s);
    if (grace > ar_etcd_op_timeout(a->c))
        grace = ar_etcd_op_timeout(a->c);
    if (txn_send(a->c, leave_txn(a->key, a->ticket, !a->unsure, lease),
                 ar_now() + grace, derr, sizeof derr) >= 0)
        unclaim_key(a->key);
    else    /* the key stays claimed: the retry may delete it by name */
        ar_retry_unref(ar_not_answered(a->c, a->s, leave_txn(a->key, a->ticket, !a->unsure, lease),
                                 derr, "given up: the cluster did not answer", NULL));
}

/* "NAME is locked by pid 4121 on web-3, as a shared lock" into o->err. */
static void busy_message(const char *name, lock_req *o, int r)
{
    char who[200] = "", kind[64] = "";
    if (o->holder.token && o->holder.pid == 0 && !o->holder.host[0]) {
        snprintf(who, sizeof who, " by an etcd client without an atomrun record, lease %llx "
                 "(token %lld)", (unsigned long long)o->holder.lease,
                 (long long)o->holder.token);
    } else if (o->holder.token) {
        snprintf(who, sizeof who, " by pid %d on %s", (int)o->holder.pid,
                 o->holder.host[0] ? o->holder.host : "?");
        /* the kind, unless an exclusive lock meets one */
        if (o->holder.slots > 0 || o->holder.mode == ATOMRUN_SHARED ||
            o->slots > 1 || o->mode == ATOMRUN_SHARED)
            kind_phrase(&o->holder, kind, sizeof kind);
    }
    /* a 200-byte name and a long host may not all fit: cut, not lost */
    if (snprintf(o->err, sizeof o->err, "%s is %s%s%s", name,
                 r == ATOMRUN_EBUSY ? "locked" : "still locked after the timeout",
                 who, kind) >= (int)sizeof o->err)
        o->err[sizeof o->err - 2] = '.';
}

static int acquire(atomrun_etcd *c, const char *name, lock_req *o,
                   atomrun_etcd_lock **out)
{
    attempt a;
    int r;

    *out = NULL;
    if ((r = check_request(name, o)) < 0)
        return r;
    memset(&a, 0, sizeof a);
    a.c = c;
    a.name = name;
    a.o = o;
    a.wait_until = o->timeout < 0 ? 1e300 : ar_now() + o->timeout;
    snprintf(a.prefix, sizeof a.prefix, "%s%s/", ATOMRUN_ETCD_LOCK_PREFIX, name);
    a.value = ar_writer_record(o->cmd, o->slots > 1 ? "semaphore"
                               : o->mode == ATOMRUN_SHARED ? "shared" : "exclusive",
                               o->slots);
    if (!a.value)
        return -ENOMEM;
    do {
        if ((r = join_queue(&a)) == 0 && (r = wait_turn(&a, out)) == AR_REQUEUE)
            r = requeue(&a) == 0 ? AR_REQUEUE : ATOMRUN_ELOST;
    } while (r == AR_REQUEUE);
    if (r < 0 && a.s)
        give_up(&a, r);
    if (r == ATOMRUN_EBUSY || r == ATOMRUN_ETIMEOUT)
        busy_message(name, o, r);
    queue_free(&a.q);
    ar_session_put(a.s);
    free(a.value);
    return r;
}

int atomrun_etcd_lock_acquire(atomrun_etcd *c, const char *name,
                              const atomrun_etcd_lock_opts *o, atomrun_etcd_lock **out,
                              atomrun_etcd_holder *holder, int *min_ttl, atomrun_err *err)
{
    lock_req q = { .mode = o->mode, .slots = o->slots, .timeout = o->timeout,
                   .ttl = o->ttl, .cmd = o->cmd };
    int r = acquire(c, name, &q, out);
    if (holder)
        *holder = q.holder;
    if (min_ttl)
        *min_ttl = q.min_ttl;
    if (err) {
        memset(err, 0, sizeof *err);
        ar_strlcpy(err->msg, q.err, sizeof err->msg);
    }
    return r;
}

static void lock_free(atomrun_etcd_lock *l)
{
    ar_retry_unref(l->retry);
    ar_session_put(l->s);
    free(l->name);
    free(l->key);
    free(l->ticket);
    free(l->next);
    free(l);
}

/* The release's answer never came: not_answered takes it on, and l stays
 * so that its caller can ask again.  The bounds: with the lease let go,
 * its last keepalive may still be on its way (sent up to a TTL after the
 * last confirmed one, arriving up to an attempt later) and the cluster
 * counts a TTL from there; otherwise, the process's exit revokes the lease
 * or stops its keepalives. */
static int unlock_unanswered(atomrun_etcd_lock *l, char *err, size_t errlen)
{
    char first[ATOMRUN_ERRLEN], next[512];
    int let_go = 0;
    ar_strlcpy(first, err, sizeof first);
    l->retry = ar_not_answered(l->c, l->s, release_txn(l->key, l->token, l->ticket, l->clean,
                                                    ar_session_lease(l->s)),
                            first, "released without an answer: the lease was let go", &let_go);
    if (let_go)
        snprintf(next, sizeof next, "the lease %llx was let go, so %s is free within %d s at "
                 "the latest%s", (unsigned long long)l->lease, l->name, 2 * l->ttl + 2,
                 l->retry ? " (sooner once a member answers: its revoke is retried)" : "");
    else if (l->retry)
        snprintf(next, sizeof next, "the release is retried in the background, so %s is free "
                 "once a member answers, or within %d s after this process ends at the latest",
                 l->name, l->ttl + 2);
    else
        snprintf(next, sizeof next, "nothing can retry it (no thread), so %s stays locked "
                 "until this process ends, and %d s more at the latest", l->name, l->ttl + 2);
    l->next = strdup(next);
    ar_session_put(l->s);
    l->s = NULL;
    ar_seterr(err, errlen, "the release of %s was not confirmed (%s): %s", l->name, first, next);
    return ATOMRUN_EUNAVAILABLE;
}

/* Asked again after unlock_unanswered: how it went since. */
static int unlock_again(atomrun_etcd_lock *l, char *err, size_t errlen)
{
    char why[ATOMRUN_ERRLEN] = "";
    int done = 0;
    if (l->retry)
        done = ar_retry_done(l->retry, why, sizeof why);
    if (done) {
        unclaim_key(l->key);
        lock_free(l);
        return 0;
    }
    /* ar_seterr: a long name and reason are cut, as every message is */
    ar_seterr(err, errlen, "the release of %s is still not confirmed (%s): %s", l->name, why,
              l->next ? l->next : "");
    return ATOMRUN_EUNAVAILABLE;
}

int atomrun_etcd_lock_release(atomrun_etcd_lock *l, atomrun_err *e)
{
    atomrun_err own;
    char *err = ar_err_start(e, &own)->msg, why[ATOMRUN_ERRLEN];
    size_t errlen = sizeof own.msg;
    int lost, r;
    if (!l->s)
        return unlock_again(l, err, errlen);
    atomrun_etcd_lock_unguard(l);
    lost = ar_session_lost(l->s, why, sizeof why) < 0;
    r = release_send(l->c, l->key, l->token, l->ticket, l->clean, ar_session_lease(l->s),
                     err, errlen);
    if (r < 0 && !lost)
        return unlock_unanswered(l, err, errlen);
    if (r >= 0)                 /* a member said: the key is gone */
        unclaim_key(l->key);
    if (lost) {
        /* the keepalives stopped when it was lost: the key goes with the
         * lease, whatever became of the delete */
        snprintf(err, errlen, "%s", why);
        r = ATOMRUN_ELOST;
    } else if (r == 0) {
        snprintf(err, errlen, "%s was no longer held (token %lld): the lease "
                 "expired or the key was removed", l->key, (long long)l->token);
        r = ATOMRUN_ELOST;
    } else {
        r = 0;
    }
    lock_free(l);
    return r;
}

void atomrun_etcd_lock_free(atomrun_etcd_lock *l)
{
    if (l && l->s && atomrun_etcd_lock_release(l, NULL) != ATOMRUN_EUNAVAILABLE)
        return;
    if (l)
        lock_free(l);
}

int atomrun_etcd_cluster_id(atomrun_etcd *c, double timeout, uint64_t *id,
                            atomrun_err *e)
{
    double deadline = ar_deadline_in(timeout);
    atomrun_err own;
    char *err = ar_err_start(e, &own)->msg;
    size_t errlen = sizeof own.msg;
    /* A count of one ticket key: any answer's header names the cluster, and
     * this read needs only the permission a lock needs anyway. */
    const char *k = AR_TICKET_PREFIX;
    atomrun_etcd_op count = { .type = ATOMRUN_ETCD_RANGE, .key = k, .keylen = strlen(k),
                              .count_only = 1 };
    atomrun_etcd_txn_result *res;
    int r;
    *id = 0;
    r = ar_etcd_range(c, &count, deadline, &res, err, errlen);
    if (r < 0)
        return r;
    *id = res->cluster;
    atomrun_etcd_txn_free(res);
    if (*id == 0) {
        snprintf(err, errlen, "%s answered without a cluster id", atomrun_etcd_endpoints(c));
        return -EPROTO;
    }
    return 0;
}

int atomrun_etcd_queue(atomrun_etcd *c, const char *name,
                       atomrun_etcd_holder *h, int max, int *count, atomrun_err *e)
{
    atomrun_err own;
    char *err = ar_err_start(e, &own)->msg;
    size_t errlen = sizeof own.msg;
    char prefix[AR_NAME_MAX + 64];
    queue q = { 0 };
    int r, i;
    *count = 0;
    if ((r = valid_name(name, err, errlen)) < 0)
        return r;
    snprintf(prefix, sizeof prefix, "%s%s/", ATOMRUN_ETCD_LOCK_PREFIX, name);
    r = read_queue(c, prefix, 0, &q, err, errlen);
    if (r < 0)
        return r;
    for (i = 0; i < q.n && i < max; i++) {
        const entry *ignore;
        fill_holder(&q.e[i], &h[i]);
        h[i].waiting = !decide(&q, i, &ignore, &ignore);
    }
    *count = q.n;
    queue_free(&q);
    return 0;
}
