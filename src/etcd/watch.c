/*
 * etcd/watch.c -- a watch on one etcd key or on every key under a prefix, for
 * atomrun.watch (issue 16).  The core of it is ar_etcd_watch (etcd/client.c); this
 * file only builds the create_request and hands each result on as JSON
 * text, so the binding needs neither jansson nor the client's internals.
 */
#define _GNU_SOURCE
#include "etcd/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rwatch {
    atomrun_remote_watch_fn fn;
    void                   *ud;
} rwatch;

static int on_result(void *ctx, json_t *result)
{
    rwatch *w = ctx;
    char *text = json_dumps(result, JSON_COMPACT);
    int stop;
    if (!text)
        return 1;           /* out of memory: stop rather than skip a result */
    stop = w->fn(w->ud, text);
    free(text);
    return stop ? 1 : 0;
}

int atomrun_remote_watch(atomrun_etcd *c, const char *key, int64_t start_rev,
                         double until, atomrun_remote_watch_fn fn, void *ud,
                         char *err, size_t errlen)
{
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
    if (req && key[n - 1] == '/') {
        /* A prefix: the range ends at the prefix with its last byte + 1
         * ('/' + 1 is '0', never an overflow). */
        char *end = strdup(key);
        if (!end) {
            json_decref(req);
            return -ENOMEM;
        }
        end[n - 1]++;
        json_object_set_new(req, "range_end", ar_json_b64(end, n));
        free(end);
    }
    if (!req)
        return -ENOMEM;
    r = ar_etcd_watch(c, req, until, on_result, &w, err, errlen);
    json_decref(req);
    return r;
}
