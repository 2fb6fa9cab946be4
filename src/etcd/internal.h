/*
 * etcd/internal.h -- the private interface of src/etcd/: libcurl's table
 * (curl.c), the codec (codec.c), the client (client.c), its requests
 * (http.c) and watch stream (watch.c), the session/keepalive thread
 * (session.c), the keys (kv.c) and the lock queue (lock.c, guard.c).  With
 * the .c files beside it, the only code that knows libcurl and jansson; nothing here
 * is installed.
 */
#ifndef AR_ETCD_INTERNAL_H
#define AR_ETCD_INTERNAL_H

#include "atomrun.h"
#include "core/shared.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

typedef struct ar_session ar_session;

/* --- the client's private parts (etcd/client.c, etcd/http.c, etcd/watch.c) --- */

#define AR_ETCD_MAX_EPS   16
#define AR_ETCD_IDLE      4        /* curl handles kept for connection reuse */

/* One transfer handle: an easy handle driven by a multi handle of its own
 * (ar_conn_new says why not curl_easy_perform).  The multi keeps the
 * connection between requests. */
typedef struct ar_conn {
    CURL  *easy;
    CURLM *multi;
} ar_conn;

struct atomrun_etcd {
    atomrun_etcd   *next;          /* the process-wide list */
    char           *ident;         /* the configuration, for sharing */
    char           *eplist;        /* "h1:p1,h2:p2" for messages */
    char           *eps[AR_ETCD_MAX_EPS];
    int             neps;
    int             tls;
    char           *ca_file, *cert_file, *key_file;
    char           *user, *password;
    double          op_timeout;

    pthread_mutex_t mu;            /* cur, token, idle */
    int             cur;           /* the endpoint that answered last */
    char           *token;         /* auth token, NULL until authenticated */
    ar_conn         idle[AR_ETCD_IDLE];
    int             nidle;

    pthread_mutex_t smu;           /* the sessions (etcd/session.c) */
    ar_session     *sessions;
};

/* --- libcurl, opened with dlopen (etcd/curl.c says why) --- */

/* The libcurl functions atomrun calls; the types and constants are
 * <curl/curl.h>'s. */
typedef struct ar_curl_api {
    CURLcode (*global_init)(long flags);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *h, CURLoption opt, ...);
    CURLcode (*easy_getinfo)(CURL *h, CURLINFO info, ...);
    void (*easy_reset)(CURL *h);
    void (*easy_cleanup)(CURL *h);
    const char *(*easy_strerror)(CURLcode code);
    struct curl_slist *(*slist_append)(struct curl_slist *l, const char *s);
    void (*slist_free_all)(struct curl_slist *l);
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_cleanup)(CURLM *m);
    CURLMcode (*multi_add_handle)(CURLM *m, CURL *h);
    CURLMcode (*multi_remove_handle)(CURLM *m, CURL *h);
    CURLMcode (*multi_perform)(CURLM *m, int *running);
    CURLMcode (*multi_poll)(CURLM *m, struct curl_waitfd *extra, unsigned n,
                            int timeout_ms, int *numfds);
    CURLMsg *(*multi_info_read)(CURLM *m, int *left);
} ar_curl_api;
/* Filled by ar_curl_load; call nothing in it before that returned 0. */
extern ar_curl_api ar_curl;
/* Load libcurl once per process: 0, or -ELIBACC and err (the library this
 * machine lacks, and its Debian package). */
int ar_curl_load(char *err, size_t errlen);

/* --- requests (etcd/http.c) --- */

/* What one POST may do beyond the defaults. */
typedef struct ar_post_opts {
    /* Set (from another thread) to make a call in progress give up with
     * -ECANCELED: the keepalive thread at exit. */
    const volatile int *abort_flag;
    /* The longest one attempt on one endpoint may take before the next is
     * tried (0: the default, 2 s). */
    double attempt_cap;
    /* 1: a connection refused by every endpoint is retried until the
     * deadline, as a timeout is (the keepalive, for a restart of the whole
     * cluster); 0: it ends the call at once, ATOMRUN_EUNAVAILABLE. */
    int ride_out;
} ar_post_opts;

/*
 * POST body to path on the cluster and parse the answer.  Rotates to the
 * next endpoint on a transport error, a timeout or an answer that says the
 * cluster has no leader, until deadline (absolute, ar_now() clock;
 * <= 0: now + op_timeout).  0 and *answer (a new reference; for the
 * streaming keepalive, the "result" object), or a negative result and err.
 * Server errors: -ENOENT (gRPC NotFound: a lease that is gone), -EACCES
 * (authentication), -EINVAL (rejected, err has etcd's message).
 */
int ar_etcd_post(atomrun_etcd *c, const char *path, json_t *body,
                 double deadline, const ar_post_opts *po, json_t **answer,
                 char *err, size_t errlen);

/* ar_etcd_post that takes the body over (and frees it): a NULL body -- a
 * json_pack that ran out of memory -- is -ENOMEM. */
int ar_etcd_send(atomrun_etcd *c, const char *path, json_t *body,
                 double deadline, const ar_post_opts *po, json_t **answer,
                 char *err, size_t errlen);

/*
 * ar_etcd_send that also says whether the request may have been delivered
 * more than once: *unsure (zeroed by the caller) is set to 1 when an
 * attempt that got no answer may have reached a member -- its request was
 * sent (a cut connection, a timeout after sending, "etcdserver: request
 * timed out").  That copy may be applied, now or later, besides the one
 * answered, or instead of the answer that never came.  A write that must
 * not land after the caller has moved on (the lock queue's enqueue) needs
 * to know whether a copy can still be in flight.
 */
int ar_etcd_send_tracked(atomrun_etcd *c, const char *path, json_t *body,
                         double deadline, const ar_post_opts *po, int *unsure,
                         json_t **answer, char *err, size_t errlen);

/* Transfer handles, for a call that is not one request and one answer (the
 * watch stream): made, set up for path on endpoint ep, run, freed. */
int ar_conn_new(ar_conn *k);
void ar_conn_free(ar_conn *k);
/* The request headers, for the caller to free after the transfer. */
struct curl_slist *ar_setup_handle(atomrun_etcd *c, CURL *h, int ep,
                                   const char *path, double attempt,
                                   const char *token);
CURLcode ar_conn_perform(ar_conn *k);
/* The endpoint to ask now, with a copy of the auth token (NULL: none; the
 * caller frees it); after ep failed, ar_leave_endpoint points the next
 * request at the next endpoint.  POST rotates so, and the watch stream. */
int ar_current_endpoint(atomrun_etcd *c, char **token);
void ar_leave_endpoint(atomrun_etcd *c, int ep);
/* An answer collected in memory: ar_membuf_write is the CURLOPT_WRITEFUNCTION
 * for one given as CURLOPT_WRITEDATA (an answer over 64 MiB stops it). */
typedef struct ar_membuf {
    char  *p;
    size_t n, cap;
} ar_membuf;
size_t ar_membuf_write(char *data, size_t size, size_t nmemb, void *ud);

/* --- the watch stream (etcd/watch.c) --- */

/*
 * Watch: open /v3/watch with create_request and call fn with each "result"
 * object until fn returns 1 (-> 1), `until` passes, the stream breaks or
 * the server cancels the watch (-> 0: the caller looks again and decides),
 * or an error that looking again cannot fix (< 0).
 */
typedef int (*ar_watch_fn)(void *ctx, json_t *result);
int ar_etcd_watch(atomrun_etcd *c, json_t *create_request, double until,
                  ar_watch_fn fn, void *ctx, char *err, size_t errlen);

/* --- clients (etcd/client.c) --- */

double ar_etcd_op_timeout(const atomrun_etcd *c);
/* The session list and its lock live in the client. */
pthread_mutex_t *ar_etcd_session_mutex(atomrun_etcd *c);
ar_session **ar_etcd_sessions(atomrun_etcd *c);
/* Every client made so far, for the exit handler (a NULL-terminated walk). */
atomrun_etcd *ar_etcd_first(void);
atomrun_etcd *ar_etcd_next(atomrun_etcd *c);

/* --- helpers (etcd/codec.c) --- */

/* base64 (etcd's keys and values in JSON).  malloc'd, NUL-terminated. */
char *ar_b64_encode(const void *data, size_t len);
int   ar_b64_decode(const char *s, char **out, size_t *len);
/* json_t holding base64 of a C string / of bytes. */
json_t *ar_json_b64(const void *data, size_t len);
/* The gateway prints int64 as strings; either form is accepted.  0 when
 * missing. */
int64_t ar_json_int64(const json_t *obj, const char *key);
/* The key just past every key that starts with prefix (etcd's range_end). */
char *ar_prefix_end(const char *prefix, size_t len, size_t *outlen);
/* Copy at most size-1 bytes, always terminated. */
void ar_strlcpy(char *dst, const char *src, size_t size);
/* A public call's relative timeout as the absolute deadline the internal
 * calls take: > 0 seconds from now; 0 stays 0 (ar_etcd_post's default,
 * now + op_timeout); ATOMRUN_FOREVER (< 0) no deadline (1e300). */
double ar_deadline_in(double timeout);
/* The caller's atomrun_err (or own, when the caller passed NULL), cleared:
 * the buffer a public call's steps write their message into, as char *err,
 * size_t errlen -- the internal calls keep that pair. */
atomrun_err *ar_err_start(atomrun_err *err, atomrun_err *own);
/* printf into err (when not NULL and errlen > 0). */
void ar_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Compact JSON text of body (malloc'd), body freed; NULL (no memory) when
 * body is NULL or cannot be printed. */
char *ar_dumps_taken(json_t *body);

/* --- kv requests and their answers (etcd/txn.c) --- */

/*
 * The only builder of /v3/kv/txn and /v3/kv/range bodies and the only
 * reader of their answers; lock.c and kv.c describe their requests with
 * atomrun_etcd_cmp and atomrun_etcd_op (atomrun.h) and read the results.
 */
/* The txn's JSON body into *body (new): 0, -EINVAL (err says which
 * argument) or -ENOMEM.  For a caller that may send it again (lock.c's
 * retry thread). */
int ar_txn_body(const atomrun_etcd_cmp *cmp, size_t ncmp, const atomrun_etcd_op *then,
                size_t nthen, const atomrun_etcd_op *otherwise, size_t nelse,
                json_t **body, char *err, size_t errlen);
/* POST a body made by ar_txn_body (taken over; NULL: -ENOMEM) and read
 * its answer into *out.  unsure: as ar_etcd_send_tracked's (NULL: not
 * tracked).  deadline as ar_etcd_post's. */
int ar_txn_send(atomrun_etcd *c, json_t *body, double deadline, int *unsure,
                atomrun_etcd_txn_result **out, char *err, size_t errlen);
/* ar_txn_body then ar_txn_send: atomrun_etcd_txn on an absolute deadline. */
int ar_etcd_txn_at(atomrun_etcd *c, const atomrun_etcd_cmp *cmp, size_t ncmp,
                   const atomrun_etcd_op *then, size_t nthen,
                   const atomrun_etcd_op *otherwise, size_t nelse, double deadline,
                   int *unsure, atomrun_etcd_txn_result **out, char *err, size_t errlen);
/* One RANGE op outside a txn (/v3/kv/range, the request a txn's
 * request_range carries): a result of one op, succeeded 1. */
int ar_etcd_range(atomrun_etcd *c, const atomrun_etcd_op *op, double deadline,
                  atomrun_etcd_txn_result **out, char *err, size_t errlen);
/* Ops and compares on C-string keys: a put (lease 0: none), a read of one
 * key, a delete of one key; "key's target is number". */
atomrun_etcd_op  ar_op_put(const char *key, const void *value, size_t valuelen,
                           int64_t lease);
atomrun_etcd_op  ar_op_get(const char *key);
atomrun_etcd_op  ar_op_delete(const char *key);
atomrun_etcd_cmp ar_cmp_equal(const char *key, int target, int64_t number);
/* The first kv of op i's answer, or NULL (no such op, no kvs). */
const atomrun_etcd_kv *ar_txn_kv(const atomrun_etcd_txn_result *res, size_t i);
/* A KeyValue of the gateway's JSON into kv (its key and value malloc'd,
 * NUL after them), and the free of those: a txn's answers and the watch
 * stream's events are read by the same code. */
int ar_kv_from(const json_t *j, atomrun_etcd_kv *kv);
void ar_kv_clear(atomrun_etcd_kv *kv);

/* --- writer records (etcd/lock.c) --- */

/* JSON text (malloc'd) naming this process as a key's writer: host, pid,
 * cmd (NULL: this process's command line), since; mode when not NULL, and
 * slots when mode is "semaphore". */
char *ar_writer_record(const char *cmd, const char *mode, int slots);
/* host, pid, cmd, since of such a record into h (the rest untouched). */
void ar_writer_of(const json_t *record, atomrun_etcd_holder *h);

/* --- sessions (etcd/session.c) --- */

/*
 * The process's session for (client, ttl): granted now if there is none
 * (or the last one was lost).  A reference the caller drops with
 * ar_session_unref.  -ERANGE with *min_ttl when the cluster's minimum TTL
 * is above ttl.
 */
int  ar_session_get(atomrun_etcd *c, int ttl, double deadline,
                    ar_session **out, int *min_ttl, char *err, size_t errlen);
void ar_session_unref(ar_session *s);
/* Keep s (the caller's reference from ar_session_get) for the life of the
 * process: keys bound to it must live as long.  The first pin keeps the
 * reference; later ones give theirs back, so counts do not grow per call. */
void ar_session_pin(ar_session *s);
/* The caller's reference from ar_session_get back; the users left. */
int  ar_session_put(ar_session *s);
int  ar_session_users(ar_session *s);
/* Stop keeping the lease alive and never hand it out again: its keys go
 * when the TTL runs out (a key we could not delete, a lease the cluster no
 * longer has).  Every lock on it reports lost. */
void ar_session_abandon(ar_session *s, const char *why);
int64_t ar_session_lease(const ar_session *s);
int     ar_session_ttl(const ar_session *s);
/*
 * What a session shares with the watchdog processes of its guards
 * (etcd/guard.c): one page mapped MAP_SHARED, so a process forked from this one
 * sees every later store.  Written under the session's lock by the
 * keepalive thread, read without locks.
 */
typedef struct ar_lease_view {
    _Atomic int64_t until_ns;   /* confirmed until then: CLOCK_BOOTTIME ns */
    _Atomic int     lost;       /* the lost rule has fired (sticky) */
} ar_lease_view;
const ar_lease_view *ar_session_view(const ar_session *s);

/* --- the guard's watchdog (etcd/guard.c) --- */

typedef struct ar_guard ar_guard;
/* Fork the watchdog that ends process group pgid (0: every child of this
 * process) before s's lease can expire; kill_after < 0: the default.
 * -ERANGE when kill_after does not fit in s's TTL (ar_etcd_kill_after). */
int ar_guard_start(ar_session *s, pid_t pgid, double kill_after, ar_guard **out);
/* Stop and reap it: what it sent, bits 1 (TERM) and 2 (KILL); 0: nothing. */
int ar_guard_stop(ar_guard *g);
/* 0 or ATOMRUN_ELOST (why filled).  Sticky. */
int  ar_session_lost(ar_session *s, char *why, size_t len);

/* --- requests sent again until answered (etcd/retry.c) --- */

typedef struct ar_retry ar_retry;
/*
 * A txn that had to reach the cluster (a release, a give-up's leave) got
 * no answer, or was refused: if no other lock uses s, its lease is let go
 * (*let_go 1: keepalives stop, the lease is revoked as soon as a member
 * answers), else the txn is sent again until one does.  txn taken over;
 * the retry, referenced (NULL: out of memory or threads).
 */
ar_retry *ar_not_answered(atomrun_etcd *c, ar_session *s, json_t *txn, const char *err,
                          const char *why, int *let_go);
/* 1 once a member answered; why: the last failure. */
int ar_retry_done(ar_retry *t, char *why, size_t len);
void ar_retry_unref(ar_retry *t);

#endif
