/*
 * etcd/http.c -- one request to the cluster: a POST to etcd's JSON gateway
 * (/v3/...) with libcurl, its answer parsed with jansson and classified, auth
 * tokens, TLS, and the rotation to the next endpoint.  Also the transfer
 * handles the watch stream (etcd/watch.c) runs on, and the descriptor
 * hygiene that making one needs.
 *
 * The gateway maps gRPC onto HTTP/1.1 JSON: keys and values are base64,
 * int64 fields are JSON strings, errors come back as
 * {"error": ..., "message": ..., "code": <gRPC code>} with an HTTP status.
 * Streaming calls (lease/keepalive, watch) answer one {"result": {...}} per
 * line.
 */
#define _GNU_SOURCE
#include "etcd/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#define AR_ATTEMPT_CAP    2.0      /* one endpoint gets this long per try */
#define AR_CONNECT_CAP    1.0

/* ------------------------------------------------- answers in memory */

size_t ar_membuf_write(char *data, size_t size, size_t nmemb, void *ud)
{
    ar_membuf *b = ud;
    size_t add = size * nmemb;
    if (b->n + add + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *np;
        while (cap < b->n + add + 1)
            cap *= 2;
        /* An answer over 64 MiB is no answer of etcd's gateway we asked for. */
        if (cap > ((size_t)64 << 20))
            return 0;
        np = realloc(b->p, cap);
        if (!np)
            return 0;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, add);
    b->n += add;
    b->p[b->n] = '\0';
    return add;
}

/* ------------------------------------------------ descriptor hygiene */

static int int_cmp(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* The descriptors open now that would survive an exec, sorted (n in *n);
 * NULL when /proc/self/fd cannot be read or memory ran out. */
static int *inheritable_fds(size_t *n)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int *fds = NULL, *nf;
    size_t cap = 0;

    *n = 0;
    if (!d)
        return NULL;
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        int fl;
        if (e->d_name[0] < '0' || e->d_name[0] > '9' || fd == dirfd(d))
            continue;
        fl = fcntl(fd, F_GETFD);
        if (fl < 0 || (fl & FD_CLOEXEC))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            if (!(nf = realloc(fds, cap * sizeof *fds))) {
                free(fds);
                closedir(d);
                return NULL;
            }
            fds = nf;
        }
        fds[(*n)++] = fd;
    }
    closedir(d);
    if (!fds)
        fds = malloc(sizeof *fds);      /* none: an empty, non-NULL set */
    else
        qsort(fds, *n, sizeof *fds, int_cmp);
    return fds;
}

static int has_fd(const int *fds, size_t n, int fd)
{
    return bsearch(&fd, fds, n, sizeof *fds, int_cmp) != NULL;
}

/*
 * Mark close-on-exec the sockets that appeared since `before` (taken by
 * inheritable_fds) and would be inherited.
 *
 * Why this exists: libcurl before 8.8 creates each multi handle's wakeup
 * socketpair without SOCK_CLOEXEC, and offers no option to change it.
 * Left alone, every command a script runs (atomrun lock's command,
 * os.execute, io.popen) would inherit two sockets per handle -- flock(1)
 * passes nothing of its own.  The sockets to connect are opened by
 * open_cloexec below; only this pair needs the search.
 *
 * The trap: another thread of a C host may open a socket without
 * close-on-exec during curl_multi_init, and it would look the same.  So
 * nothing is marked unless at most the two a wakeup pair has appeared; a
 * busier moment leaves the pair inheritable rather than touch a descriptor
 * the host meant to pass on.
 */
static void cloexec_new_sockets(const int *before, size_t nbefore)
{
    size_t nafter, i, k = 0;
    int *after = inheritable_fds(&nafter), fresh[2];
    struct stat st;

    if (!after)
        return;
    for (i = 0; i < nafter; i++) {
        if (has_fd(before, nbefore, after[i]) || fstat(after[i], &st) != 0 ||
            !S_ISSOCK(st.st_mode))
            continue;
        if (k == 2) {
            free(after);
            return;
        }
        fresh[k++] = after[i];
    }
    for (i = 0; i < k; i++)
        fcntl(fresh[i], F_SETFD, FD_CLOEXEC);
    free(after);
}

/* ------------------------------------- transfer handles and the pool */

/* A new transfer handle; 0, or -ENOMEM.  One at a time in the process:
 * two of our threads making handles at once would each see the other's
 * pair as well, and mark neither. */
int ar_conn_new(ar_conn *k)
{
    static pthread_mutex_t making = PTHREAD_MUTEX_INITIALIZER;
    size_t nbefore;
    int *before;

    pthread_mutex_lock(&making);
    before = inheritable_fds(&nbefore);
    k->easy = ar_curl.easy_init();
    k->multi = k->easy ? ar_curl.multi_init() : NULL;
    if (before) {
        cloexec_new_sockets(before, nbefore);
        free(before);
    }
    pthread_mutex_unlock(&making);
    if (!k->multi) {
        if (k->easy)
            ar_curl.easy_cleanup(k->easy);
        return -ENOMEM;
    }
    return 0;
}

void ar_conn_free(ar_conn *k)
{
    ar_curl.multi_cleanup(k->multi);    /* closes its connections */
    ar_curl.easy_cleanup(k->easy);
}

static int conn_get(atomrun_etcd *c, ar_conn *k)
{
    int found = 0;
    pthread_mutex_lock(&c->mu);
    if (c->nidle > 0) {
        *k = c->idle[--c->nidle];
        found = 1;
    }
    pthread_mutex_unlock(&c->mu);
    return found ? 0 : ar_conn_new(k);
}

static void conn_put(atomrun_etcd *c, ar_conn *k)
{
    int kept = 0;
    pthread_mutex_lock(&c->mu);
    if (c->nidle < AR_ETCD_IDLE) {
        c->idle[c->nidle++] = *k;
        kept = 1;
    }
    pthread_mutex_unlock(&c->mu);
    if (!kept)
        ar_conn_free(k);
}

/* What curl_easy_perform does, on the handle's own multi: run the one
 * transfer to its end (its own timeouts bound it) and give its result. */
CURLcode ar_conn_perform(ar_conn *k)
{
    CURLcode result = CURLE_FAILED_INIT;
    CURLMcode mc;
    CURLMsg *msg;
    int running = 1, left;

    if ((mc = ar_curl.multi_add_handle(k->multi, k->easy)) != CURLM_OK)
        return mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_FAILED_INIT;
    while (running) {
        mc = ar_curl.multi_perform(k->multi, &running);
        if (mc == CURLM_OK && running)
            mc = ar_curl.multi_poll(k->multi, NULL, 0, 1000, NULL);
        if (mc != CURLM_OK) {
            result = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_FAILED_INIT;
            break;
        }
    }
    while ((msg = ar_curl.multi_info_read(k->multi, &left)) != NULL)
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == k->easy)
            result = msg->data.result;
    ar_curl.multi_remove_handle(k->multi, k->easy);
    return result;
}

/* Every socket libcurl connects with is opened close-on-exec at once (a
 * command started by another thread between socket() and an fcntl would
 * inherit it). */
static curl_socket_t open_cloexec(void *ud, curlsocktype purpose,
                                  struct curl_sockaddr *a)
{
    (void)ud;
    (void)purpose;
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static int xfer_abort(void *ud, curl_off_t a, curl_off_t b, curl_off_t c_,
                      curl_off_t d)
{
    const volatile int *flag = ud;
    (void)a; (void)b; (void)c_; (void)d;
    return flag && *flag;
}

/* Options every request shares: endpoint URL, TLS, timeouts, headers. */
struct curl_slist *ar_setup_handle(atomrun_etcd *c, CURL *h, int ep,
                                   const char *path, double attempt,
                                   const char *token)
{
    char url[512];
    struct curl_slist *hdr = NULL;
    long ms = (long)(attempt * 1000.0);
    long cms;

    if (ms < 1)
        ms = 1;
    cms = ms < (long)(AR_CONNECT_CAP * 1000) ? ms : (long)(AR_CONNECT_CAP * 1000);
    snprintf(url, sizeof url, "%s://%s%s", c->tls ? "https" : "http",
             c->eps[ep], path);
    ar_curl.easy_reset(h);
    ar_curl.easy_setopt(h, CURLOPT_URL, url);
    /* Threads: never let curl use signals (SIGALRM for DNS timeouts). */
    ar_curl.easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    ar_curl.easy_setopt(h, CURLOPT_TIMEOUT_MS, ms);
    ar_curl.easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, cms);
    /* A cluster is reached directly: an http_proxy meant for the web would
     * otherwise carry lock traffic (and loopback clusters would break). */
    ar_curl.easy_setopt(h, CURLOPT_PROXY, "");
    ar_curl.easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    ar_curl.easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_cloexec);
    ar_curl.easy_setopt(h, CURLOPT_PROTOCOLS_STR, c->tls ? "https" : "http");
    if (c->tls) {
        if (c->ca_file)
            ar_curl.easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
        if (c->cert_file) {
            ar_curl.easy_setopt(h, CURLOPT_SSLCERT, c->cert_file);
            ar_curl.easy_setopt(h, CURLOPT_SSLKEY, c->key_file);
        }
    }
    hdr = ar_curl.slist_append(hdr, "Content-Type: application/json");
    /* No "Expect: 100-continue" round trip for larger bodies. */
    hdr = ar_curl.slist_append(hdr, "Expect:");
    if (token) {
        char auth[1024];
        snprintf(auth, sizeof auth, "Authorization: %s", token);
        hdr = ar_curl.slist_append(hdr, auth);
    }
    ar_curl.easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    return hdr;
}

/* ---------------------------------------- one attempt and its answer */

/* What became of one attempt. */
enum { AT_OK, AT_TRANSPORT, AT_REFUSED, AT_NOT_ETCD, AT_RETRY, AT_AUTH_TOKEN, AT_FATAL,
       AT_ABORTED };

/* A server error that a new leader or another member will not repeat. */
static int transient(int code, const char *msg)
{
    return code == 14 /* UNAVAILABLE */ || code == 4 /* DEADLINE_EXCEEDED */ ||
           strstr(msg, "leader changed") || strstr(msg, "no leader") ||
           strstr(msg, "timed out") || strstr(msg, "too many requests") ||
           strstr(msg, "not capable") || strstr(msg, "unhealthy cluster");
}

/* Classify a gateway answer; on AT_OK *answer is set. */
static int classify(atomrun_etcd *c, int ep, long http, ar_membuf *b,
                    json_t **answer, int *rc, char *err, size_t errlen)
{
    json_error_t je;
    json_t *j, *e;
    const char *msg;
    int code;

    j = b->p ? json_loadb(b->p, b->n, JSON_DISABLE_EOF_CHECK, &je) : NULL;
    if (!j || !json_is_object(j)) {
        /* Quote the start of a short text answer: etcd itself answers some
         * refusals in plain text (a client certificate with a CommonName
         * sent to the gateway of a cluster with auth on). */
        char text[120] = "";
        size_t i, n = b->p ? b->n : 0;
        for (i = 0; i < n && i < sizeof text - 1; i++) {
            unsigned char ch = (unsigned char)b->p[i];
            if (ch == '\n' || ch == '<')
                break;
            text[i] = ch >= 32 && ch < 127 ? (char)ch : '?';
        }
        text[i] = '\0';
        json_decref(j);
        if (text[0] && http >= 400 && http < 500 && b->p[0] != '<')
            ar_seterr(err, errlen, "%s answered HTTP %ld: %s", c->eps[ep], http, text);
        else
            ar_seterr(err, errlen, "%s answered HTTP %ld, which is not etcd's JSON gateway "
                   "(is it an etcd 3.4+ client URL?)", c->eps[ep], http);
        return AT_NOT_ETCD;
    }
    e = json_object_get(j, "error");
    if (http == 200 && !e) {
        /* A streamed answer wraps the message in "result". */
        json_t *r = json_object_get(j, "result");
        if (r && json_is_object(r)) {
            json_incref(r);
            json_decref(j);
            j = r;
        }
        *answer = j;
        return AT_OK;
    }
    if (!e) {
        json_decref(j);
        ar_seterr(err, errlen, "%s answered HTTP %ld without an etcd error", c->eps[ep], http);
        return AT_NOT_ETCD;
    }
    msg = json_is_string(e) ? json_string_value(e) : "";
    if (json_is_object(e))          /* streaming calls: {"error": {...}} */
        msg = json_string_value(json_object_get(e, "message"));
    if (!msg)
        msg = "";
    code = (int)ar_json_int64(json_is_object(e) ? e : j, "code");
    ar_seterr(err, errlen, "%s: %s", c->eps[ep], msg);
    if (strstr(msg, "invalid auth token") || strstr(msg, "user name is empty") ||
        strstr(msg, "revision of auth store is old"))
        *rc = AT_AUTH_TOKEN;
    else if (strstr(msg, "authentication failed") || strstr(msg, "permission denied") ||
             code == 16 || code == 7)
        *rc = -EACCES;
    else if (transient(code, msg))
        *rc = AT_RETRY;
    else if (code == 5)
        *rc = -ENOENT;
    else
        *rc = -EINVAL;
    json_decref(j);
    return *rc == AT_RETRY ? AT_RETRY : *rc == AT_AUTH_TOKEN ? AT_AUTH_TOKEN : AT_FATAL;
}

/* Did the failed transfer on h send its request?  curl counts the bytes of
 * the requests it issued: 0 when it never got that far (no connection, a
 * refused one, a TLS handshake that failed), so no member can act on it. */
static int request_sent(CURL *h)
{
    long size = 0;
    if (ar_curl.easy_getinfo(h, CURLINFO_REQUEST_SIZE, &size) != CURLE_OK)
        return 1;                      /* cannot tell: assume it went */
    return size > 0;
}

/* ATOMRUN_DEBUG=etcd (a comma-separated list may name other subjects
 * too): a line on stderr per request attempt -- endpoint, path, the
 * request's size, what came back, how long it took.  Never a body, a
 * password or a token: values are users' data and credentials stay
 * secret.  Read once; a C host sets it before its first etcd call. */
static int debug_etcd(void)
{
    static atomic_int state;                  /* 0 unread, 1 off, 2 on */
    int v = atomic_load(&state);
    if (v == 0) {
        const char *d = getenv("ATOMRUN_DEBUG");
        v = 1;
        while (d && *d) {                     /* "etcd" as one word of the list */
            size_t n = strcspn(d, ",");
            if (n == 4 && strncmp(d, "etcd", 4) == 0)
                v = 2;
            d += n + (d[n] == ',');
        }
        atomic_store(&state, v);
    }
    return v == 2;
}

static void trace_attempt(const atomrun_etcd *c, int ep, const char *path, const char *body,
                          CURLcode cr, long http, double t0)
{
    size_t len;
    if (!debug_etcd())
        return;
    len = strlen(body);
    if (cr == CURLE_OK)
        fprintf(stderr, "atomrun: etcd: %s %s (%zu bytes): HTTP %ld in %.1f ms\n",
                c->eps[ep], path, len, http, (ar_now() - t0) * 1e3);
    else
        fprintf(stderr, "atomrun: etcd: %s %s (%zu bytes): %s after %.1f ms\n",
                c->eps[ep], path, len, ar_curl.easy_strerror(cr), (ar_now() - t0) * 1e3);
}

/* One attempt; *unsure (when not NULL) is set if it failed after its
 * request may have reached the member (ar_etcd_send_tracked). */
static int attempt_once(atomrun_etcd *c, int ep, const char *path,
                        const char *body, double attempt, const char *token,
                        const ar_post_opts *po, int *unsure, json_t **answer,
                        int *rc, char *err, size_t errlen)
{
    ar_conn k;
    CURL *h;
    struct curl_slist *hdr;
    ar_membuf b = { 0 };
    CURLcode cr;
    long http = 0;
    double t0;
    int how;

    if (conn_get(c, &k) != 0) {
        *rc = -ENOMEM;
        return AT_FATAL;
    }
    h = k.easy;
    hdr = ar_setup_handle(c, h, ep, path, attempt, token);
    ar_curl.easy_setopt(h, CURLOPT_POSTFIELDS, body);
    ar_curl.easy_setopt(h, CURLOPT_WRITEFUNCTION, ar_membuf_write);
    ar_curl.easy_setopt(h, CURLOPT_WRITEDATA, &b);
    if (po && po->abort_flag) {
        ar_curl.easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        ar_curl.easy_setopt(h, CURLOPT_XFERINFOFUNCTION, xfer_abort);
        ar_curl.easy_setopt(h, CURLOPT_XFERINFODATA, (void *)po->abort_flag);
    }
    t0 = ar_now();
    cr = ar_conn_perform(&k);
    ar_curl.easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http);
    trace_attempt(c, ep, path, body, cr, http, t0);
    ar_curl.slist_free_all(hdr);
    if (cr != CURLE_OK && unsure && request_sent(h))
        *unsure = 1;
    if (cr == CURLE_ABORTED_BY_CALLBACK) {
        ar_conn_free(&k);
        free(b.p);
        ar_seterr(err, errlen, "cancelled");
        *rc = -ECANCELED;
        return AT_ABORTED;
    }
    if (cr == CURLE_COULDNT_CONNECT) {
        /* Nothing listens there (or the host cannot be reached): unlike a
         * timeout, this cannot be a slow member or an election. */
        ar_conn_free(&k);
        free(b.p);
        ar_seterr(err, errlen, "%s: connection refused", c->eps[ep]);
        return AT_REFUSED;
    }
    if (cr != CURLE_OK) {
        ar_conn_free(&k);              /* the connection is in an unknown state */
        free(b.p);
        ar_seterr(err, errlen, "%s: %s", c->eps[ep], ar_curl.easy_strerror(cr));
        return AT_TRANSPORT;
    }
    conn_put(c, &k);
    how = classify(c, ep, http, &b, answer, rc, err, errlen);
    free(b.p);
    /* "request timed out", "leader changed": the member took the request
     * and may yet apply it. */
    if (how == AT_RETRY && unsure)
        *unsure = 1;
    return how;
}

/* ---------------------------------------------------- authentication */

static int authenticate(atomrun_etcd *c, int ep, double attempt,
                        const ar_post_opts *po, char *err, size_t errlen)
{
    json_t *body = json_pack("{s:s, s:s}", "name", c->user,
                             "password", c->password ? c->password : "");
    json_t *ans = NULL;
    char *text;
    int rc = 0, how;
    if (!(text = ar_dumps_taken(body)))
        return -ENOMEM;
    how = attempt_once(c, ep, "/v3/auth/authenticate", text, attempt, NULL, po, NULL,
                       &ans, &rc, err, errlen);
    explicit_bzero(text, strlen(text));
    free(text);
    if (how == AT_OK) {
        const char *tok = json_string_value(json_object_get(ans, "token"));
        if (!tok) {
            json_decref(ans);
            ar_seterr(err, errlen, "%s: authentication answered without a token",
                   c->eps[ep]);
            return -EPROTO;
        }
        pthread_mutex_lock(&c->mu);
        free(c->token);
        c->token = strdup(tok);
        pthread_mutex_unlock(&c->mu);
        json_decref(ans);
        return 0;
    }
    if (how == AT_FATAL) {
        if (rc == -EINVAL && err && strstr(err, "authentication is not enabled")) {
            /* A user given for a cluster without auth: go on without. */
            return 1;
        }
        if (rc == -EACCES && err) {
            char tmp[ATOMRUN_ERRLEN];
            ar_strlcpy(tmp, err, sizeof tmp);
            ar_seterr(err, errlen, "etcd user \"%s\" could not log in: %s", c->user, tmp);
        }
        return rc;
    }
    if (how == AT_ABORTED)
        return -ECANCELED;
    return how == AT_NOT_ETCD ? -EPROTO : -EAGAIN;   /* try the next one */
}

/* Auth is on and we have no token: log in on ep.  AT_OK when there is a
 * token now (or auth turned out to be off: the user is dropped), else how
 * it failed (AT_FATAL with *rc). */
static int log_in(atomrun_etcd *c, int ep, double attempt, const ar_post_opts *po,
                  int *rc, char *last, size_t lastlen)
{
    int r = authenticate(c, ep, attempt, po, last, lastlen);
    if (r < 0 && r != -EAGAIN && r != -EPROTO) {
        *rc = r;
        return AT_FATAL;
    }
    if (r == 1) {                    /* auth is off: stop asking */
        pthread_mutex_lock(&c->mu);
        free(c->user);
        c->user = NULL;
        pthread_mutex_unlock(&c->mu);
    }
    return r == -EAGAIN ? AT_TRANSPORT : r == -EPROTO ? AT_NOT_ETCD : AT_OK;
}

/* ---------------------------------------- endpoint rotation and POST */

/* The endpoint to ask now, and a copy of the auth token (NULL: none). */
int ar_current_endpoint(atomrun_etcd *c, char **token)
{
    int ep;
    pthread_mutex_lock(&c->mu);
    ep = c->cur;
    *token = c->token ? strdup(c->token) : NULL;
    pthread_mutex_unlock(&c->mu);
    return ep;
}

/* Endpoint ep failed: the next request goes to the next one (unless
 * another thread has moved on already). */
void ar_leave_endpoint(atomrun_etcd *c, int ep)
{
    pthread_mutex_lock(&c->mu);
    if (c->cur == ep)
        c->cur = (ep + 1) % c->neps;
    pthread_mutex_unlock(&c->mu);
}

static void forget_token(atomrun_etcd *c)
{
    pthread_mutex_lock(&c->mu);
    free(c->token);
    c->token = NULL;
    pthread_mutex_unlock(&c->mu);
}

/* Endpoint ep failed (how): the next one.  After a whole round of
 * failures, pause a little: an election takes a few heartbeats, and a dead
 * cluster should not be hammered. */
static void next_endpoint(atomrun_etcd *c, int ep, int how, int *fails, double deadline)
{
    ar_leave_endpoint(c, ep);
    if (++*fails % c->neps == 0 || how == AT_RETRY) {
        double nap = 0.05 * (*fails / c->neps + 1), left = deadline - ar_now();
        if (nap > 0.5)
            nap = 0.5;
        if (nap > left)
            nap = left;
        ar_sleep(nap);
    }
}

static int post(atomrun_etcd *c, const char *path, json_t *body, double deadline,
                const ar_post_opts *po, int *unsure, json_t **answer,
                char *err, size_t errlen)
{
    char *text = json_dumps(body, JSON_COMPACT);
    char last[ATOMRUN_ERRLEN] = "";
    double cap = po && po->attempt_cap > 0 ? po->attempt_cap : AR_ATTEMPT_CAP;
    int not_etcd = 0, refused = 0, fails = 0, token_retries = 0, result;

    *answer = NULL;
    if (!text)
        return -ENOMEM;
    if (!(deadline > 0))
        deadline = ar_now() + c->op_timeout;
    for (;;) {
        double left = deadline - ar_now(), attempt;
        char *token;
        int ep, how, rc = 0;

        if (po && po->abort_flag && *po->abort_flag) {
            result = -ECANCELED;
            break;
        }
        if (left <= 0) {
            ar_seterr(err, errlen, "no etcd endpoint of %s answered in time (last error: %s)",
                   c->eplist, last[0] ? last : "none");
            result = ATOMRUN_EUNAVAILABLE;
            break;
        }
        attempt = left < cap ? left : cap;
        ep = ar_current_endpoint(c, &token);
        if (c->user && !token) {
            if ((how = log_in(c, ep, attempt, po, &rc, last, sizeof last)) == AT_OK)
                continue;                   /* with the token now */
        } else {
            how = attempt_once(c, ep, path, text, attempt, token, po, unsure, answer,
                               &rc, last, sizeof last);
        }
        free(token);
        if (how == AT_OK) {
            result = 0;
            break;
        }
        if (how == AT_FATAL || how == AT_ABORTED) {
            ar_seterr(err, errlen, "%s", last);
            result = rc;
            break;
        }
        if (how == AT_AUTH_TOKEN && c->user && token_retries++ < 3) {
            forget_token(c);
            continue;
        }
        if (how == AT_AUTH_TOKEN) {
            ar_seterr(err, errlen, "%s (the cluster needs a user and password)", last);
            result = -EACCES;
            break;
        }
        if (how != AT_NOT_ETCD)
            not_etcd = 0;
        else if (++not_etcd >= c->neps) {
            ar_seterr(err, errlen, "%s", last);
            result = -EPROTO;
            break;
        }
        /* Every endpoint refused in a row: no etcd runs there, and waiting
         * out the deadline would only make `lock -n` slow to say so.  The
         * keepalive rides a full restart out instead (ride_out): its
         * "unavailable" means the lease is lost. */
        if (how != AT_REFUSED)
            refused = 0;
        else if (++refused >= c->neps && !(po && po->ride_out)) {
            ar_seterr(err, errlen, "no etcd endpoint of %s accepts connections (%s)",
                      c->eplist, last);
            result = ATOMRUN_EUNAVAILABLE;
            break;
        }
        next_endpoint(c, ep, how == AT_REFUSED ? AT_TRANSPORT : how, &fails, deadline);
    }
    free(text);
    return result;
}

int ar_etcd_post(atomrun_etcd *c, const char *path, json_t *body,
                 double deadline, const ar_post_opts *po, json_t **answer,
                 char *err, size_t errlen)
{
    return post(c, path, body, deadline, po, NULL, answer, err, errlen);
}

int ar_etcd_send_tracked(atomrun_etcd *c, const char *path, json_t *body,
                         double deadline, const ar_post_opts *po, int *unsure,
                         json_t **answer, char *err, size_t errlen)
{
    int r;
    *answer = NULL;
    if (!body)
        return -ENOMEM;
    r = post(c, path, body, deadline, po, unsure, answer, err, errlen);
    json_decref(body);
    return r;
}

int ar_etcd_send(atomrun_etcd *c, const char *path, json_t *body,
                 double deadline, const ar_post_opts *po, json_t **answer,
                 char *err, size_t errlen)
{
    return ar_etcd_send_tracked(c, path, body, deadline, po, NULL, answer, err, errlen);
}

int ar_etcd_call(atomrun_etcd *c, const char *path, const char *json,
                 double deadline, char **out, char *err, size_t errlen)
{
    json_error_t je;
    json_t *body = json_loads(json, 0, &je), *ans = NULL;
    int r;
    *out = NULL;
    if (!body) {
        ar_seterr(err, errlen, "request is not JSON: %s", je.text);
        return -EINVAL;
    }
    r = ar_etcd_send(c, path, body, deadline, NULL, &ans, err, errlen);
    if (r < 0)
        return r;
    *out = json_dumps(ans, JSON_COMPACT);
    json_decref(ans);
    return *out ? 0 : -ENOMEM;
}
