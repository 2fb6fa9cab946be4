/*
 * etcd/client.c -- the clients: one per configuration (endpoints, TLS files,
 * user, op_timeout), checked, its endpoint list parsed, and kept in a
 * process-wide registry.  The requests themselves are etcd/http.c's, the
 * watch stream etcd/watch.c's.
 *
 * Clients are shared per configuration and live until the process exits:
 * they own the sessions (one lease per process and TTL), and a lease must
 * outlive any one lock handle or the next lock would pay for a new grant
 * and the old lease's revoke -- two more consensus writes per cycle.
 */
#define _GNU_SOURCE
#include "etcd/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static atomrun_etcd   *registry;

double ar_etcd_op_timeout(const atomrun_etcd *c) { return c->op_timeout; }
pthread_mutex_t *ar_etcd_session_mutex(atomrun_etcd *c) { return &c->smu; }
ar_session **ar_etcd_sessions(atomrun_etcd *c) { return &c->sessions; }
const char *atomrun_etcd_endpoints(const atomrun_etcd *c) { return c->eplist; }

atomrun_etcd *ar_etcd_first(void)
{
    atomrun_etcd *c;
    pthread_mutex_lock(&registry_mu);
    c = registry;
    pthread_mutex_unlock(&registry_mu);
    return c;
}

atomrun_etcd *ar_etcd_next(atomrun_etcd *c)
{
    atomrun_etcd *n;
    pthread_mutex_lock(&registry_mu);
    n = c->next;
    pthread_mutex_unlock(&registry_mu);
    return n;
}

/* ------------------------------------------------------------- clients */

void atomrun_etcd_config_init(atomrun_etcd_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->op_timeout = 5.0;
}

static char *dup_or_null(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

/* host:port with a non-empty host (a name, IPv4, or [IPv6]) and a port
 * 1..65535; nothing else (no scheme, no path, no userinfo). */
static int endpoint_ok(const char *ep, size_t n)
{
    const char *colon = NULL;
    size_t i;
    long port;
    char *end, buf[8];
    if (n == 0)
        return 0;
    if (ep[0] == '[') {
        const char *rb = memchr(ep, ']', n);
        if (!rb || rb == ep + 1 || (size_t)(rb - ep) + 1 >= n || rb[1] != ':')
            return 0;
        colon = rb + 1;
    } else {
        for (i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)ep[i];
            if (ch == ':') {
                if (colon)
                    return 0;
                colon = ep + i;
            } else if (!(ch == '.' || ch == '-' || ch == '_' ||
                         (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
                         (ch >= 'A' && ch <= 'Z'))) {
                return 0;
            }
        }
        if (!colon || colon == ep)
            return 0;
    }
    i = n - (size_t)(colon + 1 - ep);
    if (i == 0 || i > 5)
        return 0;
    memcpy(buf, colon + 1, i);
    buf[i] = '\0';
    for (size_t k = 0; k < i; k++)
        if (buf[k] < '0' || buf[k] > '9')
            return 0;
    port = strtol(buf, &end, 10);
    return port >= 1 && port <= 65535;
}

static void client_free(atomrun_etcd *c)
{
    int i;
    for (i = 0; i < c->neps; i++)
        free(c->eps[i]);
    for (i = 0; i < c->nidle; i++)
        ar_conn_free(&c->idle[i]);
    free(c->ident);
    free(c->eplist);
    free(c->ca_file);
    free(c->cert_file);
    free(c->key_file);
    free(c->user);
    if (c->password)
        explicit_bzero(c->password, strlen(c->password));
    free(c->password);
    free(c->token);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->smu);
    free(c);
}

static int parse_endpoints(atomrun_etcd *c, const char *list, char *err,
                           size_t errlen)
{
    const char *p = list;
    size_t total = 0;
    if (!list || !*list) {
        ar_seterr(err, errlen, "no etcd endpoints given");
        return -EINVAL;
    }
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (!endpoint_ok(p, n)) {
            ar_seterr(err, errlen, "bad etcd endpoint \"%.*s\" (want HOST:PORT)",
                   (int)(n > 80 ? 80 : n), p);
            return -EINVAL;
        }
        if (c->neps == AR_ETCD_MAX_EPS) {
            ar_seterr(err, errlen, "more than %d etcd endpoints", AR_ETCD_MAX_EPS);
            return -EINVAL;
        }
        c->eps[c->neps] = strndup(p, n);
        if (!c->eps[c->neps])
            return -ENOMEM;
        c->neps++;
        total += n + 1;
        p += n;
        if (*p == ',') {
            p++;
            if (!*p) {
                ar_seterr(err, errlen, "empty etcd endpoint at the end of \"%s\"", list);
                return -EINVAL;
            }
        }
    }
    c->eplist = malloc(total + 1);
    if (!c->eplist)
        return -ENOMEM;
    c->eplist[0] = '\0';
    for (int i = 0; i < c->neps; i++) {
        if (i)
            strcat(c->eplist, ",");
        strcat(c->eplist, c->eps[i]);
    }
    return 0;
}

/* The settings no endpoint can fix: 0, or -EINVAL and err. */
static int config_ok(const atomrun_etcd_config *cfg, char *err, size_t errlen)
{
    if (!(cfg->op_timeout > 0)) {
        ar_seterr(err, errlen, "etcd op_timeout must be > 0");
        return -EINVAL;
    }
    if ((cfg->cert_file && *cfg->cert_file) != (cfg->key_file && *cfg->key_file)) {
        ar_seterr(err, errlen, "a TLS client certificate needs its key, and a key its certificate");
        return -EINVAL;
    }
    if (cfg->password && *cfg->password && !(cfg->user && *cfg->user)) {
        ar_seterr(err, errlen, "an etcd password without a user name");
        return -EINVAL;
    }
    return 0;
}

/* A new client of cfg's settings, not yet shared: 0, or a negative result
 * (err says which endpoint was bad). */
static int client_new(const atomrun_etcd_config *cfg, atomrun_etcd **out,
                      char *err, size_t errlen)
{
    atomrun_etcd *c = calloc(1, sizeof *c);
    int r;

    *out = NULL;
    if (!c)
        return -ENOMEM;
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->smu, NULL);
    r = parse_endpoints(c, cfg->endpoints, err, errlen);
    if (r < 0) {
        client_free(c);
        return r;
    }
    c->tls = cfg->tls != 0;
    c->ca_file = dup_or_null(cfg->ca_file);
    c->cert_file = dup_or_null(cfg->cert_file);
    c->key_file = dup_or_null(cfg->key_file);
    c->user = dup_or_null(cfg->user);
    c->password = cfg->password ? strdup(cfg->password) : NULL;
    c->op_timeout = cfg->op_timeout;
    *out = c;
    return 0;
}

/* The text two clients of the same settings share (malloc'd; NULL: no
 * memory).  It includes the password so that a corrected password is a new
 * client; it is compared, never printed. */
static char *client_identity(const atomrun_etcd *c)
{
    size_t n = strlen(c->eplist) + 64;
    char *ident;

    n += (c->ca_file ? strlen(c->ca_file) : 0) + (c->cert_file ? strlen(c->cert_file) : 0);
    n += (c->key_file ? strlen(c->key_file) : 0) + (c->user ? strlen(c->user) : 0);
    n += c->password ? strlen(c->password) : 0;
    ident = malloc(n);
    if (!ident)
        return NULL;
    snprintf(ident, n, "%d|%s|%s|%s|%s|%s|%s|%g", c->tls, c->eplist,
             c->ca_file ? c->ca_file : "", c->cert_file ? c->cert_file : "",
             c->key_file ? c->key_file : "", c->user ? c->user : "",
             c->password ? c->password : "", c->op_timeout);
    return ident;
}

/* The registered client with c's identity (c is freed), or c, registered
 * now. */
static atomrun_etcd *share_or_register(atomrun_etcd *c)
{
    atomrun_etcd *it;

    pthread_mutex_lock(&registry_mu);
    for (it = registry; it; it = it->next)
        if (strcmp(it->ident, c->ident) == 0)
            break;
    if (it) {
        pthread_mutex_unlock(&registry_mu);
        client_free(c);
        return it;
    }
    c->next = registry;
    registry = c;
    pthread_mutex_unlock(&registry_mu);
    return c;
}

int atomrun_etcd_open(const atomrun_etcd_config *cfg, atomrun_etcd **out, atomrun_err *e)
{
    atomrun_err own;
    char *err = ar_err_start(e, &own)->msg;
    size_t errlen = sizeof own.msg;
    atomrun_etcd *c;
    int r;

    *out = NULL;
    if ((r = ar_curl_load(err, errlen)) < 0 || (r = config_ok(cfg, err, errlen)) < 0 ||
        (r = client_new(cfg, &c, err, errlen)) < 0)
        return r;
    if (!(c->ident = client_identity(c))) {
        client_free(c);
        return -ENOMEM;
    }
    *out = share_or_register(c);
    return 0;
}
