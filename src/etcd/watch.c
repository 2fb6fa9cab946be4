/*
 * etcd/watch.c -- the watch stream, and on it a watch on one etcd key or on
 * every key under a prefix, for atomrun.watch (issue 16).
 *
 * ar_etcd_watch holds one POST to /v3/watch open and reads its answer line by
 * line, on a transfer handle of etcd/http.c's.  atomrun_etcd_watch only
 * builds the create_request and hands each result on as JSON text, so the
 * binding needs neither jansson nor the client's internals.
 */
#define _GNU_SOURCE
#include "etcd/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------- the stream */

typedef struct watchctx {
    ar_membuf    line;
    ar_watch_fn  fn;
    void        *ud;
    int          done;      /* 1: fn said stop; 2: server cancelled */
    int          error;     /* < 0: an error answer */
    char         msg[ATOMRUN_ERRLEN];
} watchctx;

static int watch_line(watchctx *w, const char *s, size_t n)
{
    json_error_t je;
    json_t *j = json_loadb(s, n, 0, &je), *r;
    int stop = 0;
    if (!j) {
        w->error = -EPROTO;
        ar_strlcpy(w->msg, "the watch stream is not etcd's JSON", sizeof w->msg);
        return 1;
    }
    r = json_object_get(j, "result");
    if (!r) {
        json_t *e = json_object_get(j, "error");
        const char *m = json_is_object(e) ? json_string_value(json_object_get(e, "message"))
                                          : json_string_value(e);
        snprintf(w->msg, sizeof w->msg, "watch: %s", m ? m : "error");
        w->error = m && strstr(m, "auth") ? -EACCES : -EAGAIN;
        json_decref(j);
        return 1;
    }
    if (json_is_true(json_object_get(r, "canceled"))) {
        w->done = 2;
        stop = 1;
    } else if (w->fn(w->ud, r) == 1) {
        w->done = 1;
        stop = 1;
    }
    json_decref(j);
    return stop;
}

static size_t watch_write(char *data, size_t size, size_t nmemb, void *ud)
{
    watchctx *w = ud;
    size_t add = size * nmemb, start = 0, i;
    if (ar_membuf_write(data, 1, add, &w->line) != add)
        return 0;
    for (i = 0; i < w->line.n; i++) {
        if (w->line.p[i] != '\n')
            continue;
        if (i > start && watch_line(w, w->line.p + start, i - start))
            return 0;           /* stop the transfer: we have what we wanted */
        start = i + 1;
    }
    memmove(w->line.p, w->line.p + start, w->line.n - start);
    w->line.n -= start;
    return add;
}

int ar_etcd_watch(atomrun_etcd *c, json_t *create_request, double until,
                  ar_watch_fn fn, void *ctx, char *err, size_t errlen)
{
    json_t *body = json_pack("{s:O}", "create_request", create_request);
    watchctx w;
    ar_conn k;
    CURL *h;
    struct curl_slist *hdr;
    char *text, *token = NULL;
    double left = until - ar_now();
    int ep;
    CURLcode cr;

    if (!(text = ar_dumps_taken(body)))
        return -ENOMEM;
    if (left <= 0) {
        free(text);
        return 0;
    }
    memset(&w, 0, sizeof w);
    w.fn = fn;
    w.ud = ctx;
    if (ar_conn_new(&k) != 0) {       /* a stream: its connection is not reused */
        free(text);
        return -ENOMEM;
    }
    h = k.easy;
    ep = ar_current_endpoint(c, &token);
    hdr = ar_setup_handle(c, h, ep, "/v3/watch", left, token);
    free(token);
    ar_curl.easy_setopt(h, CURLOPT_POSTFIELDS, text);
    ar_curl.easy_setopt(h, CURLOPT_WRITEFUNCTION, watch_write);
    ar_curl.easy_setopt(h, CURLOPT_WRITEDATA, &w);
    cr = ar_conn_perform(&k);
    ar_curl.slist_free_all(hdr);
    ar_conn_free(&k);
    free(text);
    free(w.line.p);
    if (w.done)
        return w.done == 1 ? 1 : 0;
    if (w.error == -EPROTO || w.error == -EACCES) {
        ar_seterr(err, errlen, "%s: %s", c->eps[ep], w.msg);
        return w.error;
    }
    if (cr != CURLE_OK && cr != CURLE_OPERATION_TIMEDOUT) {
        /* The member went away mid-watch: the caller's next request
         * rotates; point it at the next endpoint now. */
        ar_leave_endpoint(c, ep);
        ar_sleep(0.02);
    }
    return 0;
}

/* ------------------------------------------------ one key or prefix */

typedef struct rwatch {
    atomrun_etcd_watch_fn fn;
    void                   *ud;
} rwatch;

/* One result of the stream: its events, typed, to fn.  An event that
 * cannot be read (no memory, not base64) stops the watch rather than skip
 * a change. */
static int on_result(void *ctx, json_t *result)
{
    rwatch *w = ctx;
    json_t *events = json_object_get(result, "events");
    size_t n = json_array_size(events), i, got = 0;
    atomrun_etcd_event *ev;
    int stop = 1;

    if (n == 0)
        return 0;                   /* a progress notice, or the creation */
    if (!(ev = calloc(n, sizeof *ev)))
        return 1;
    for (i = 0; i < n; i++, got++) {
        json_t *e = json_array_get(events, i);
        const char *type = json_string_value(json_object_get(e, "type"));
        ev[i].deleted = type && strcmp(type, "DELETE") == 0;
        if (ar_kv_from(json_object_get(e, "kv"), &ev[i].kv) < 0)
            break;
    }
    if (got == n)
        stop = w->fn(w->ud, ev, n) ? 1 : 0;
    for (i = 0; i < n; i++)         /* calloc'd: the unread ones are empty */
        ar_kv_clear(&ev[i].kv);
    free(ev);
    return stop;
}

int atomrun_etcd_watch(atomrun_etcd *c, const char *key, int64_t start_rev,
                       double timeout, atomrun_etcd_watch_fn fn, void *ud, atomrun_err *e)
{
    /* No forever: the stream's transfer needs a finite time for curl, and
     * a watch returns on any break anyway (the caller looks again). */
    double until = ar_now() + (timeout > 0 ? timeout : 0);
    atomrun_err own;
    char *err = ar_err_start(e, &own)->msg;
    size_t errlen = sizeof own.msg;
    char num[32];
    json_t *req;
    rwatch w = { fn, ud };
    size_t n = key ? strlen(key) : 0;
    int r;

    if (n == 0) {
        snprintf(err, errlen, "empty etcd key");
        return -EINVAL;
    }
    snprintf(num, sizeof num, "%lld", (long long)start_rev);
    req = json_pack("{s:o, s:s}", "key", ar_json_b64(key, n), "start_revision", num);
    if (req && key[n - 1] == '/') {         /* a prefix: every key under it */
        size_t endlen;
        char *end = ar_prefix_end(key, n, &endlen);
        if (!end) {
            json_decref(req);
            return -ENOMEM;
        }
        json_object_set_new(req, "range_end", ar_json_b64(end, endlen));
        free(end);
    }
    if (!req)
        return -ENOMEM;
    r = ar_etcd_watch(c, req, until, on_result, &w, err, errlen);
    json_decref(req);
    return r;
}
