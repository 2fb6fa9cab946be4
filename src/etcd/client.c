/*
 * etcd/client.c -- the client half of the etcd backend: endpoints, one POST to the
 * JSON gateway (/v3/...) with libcurl, answers parsed with jansson, the
 * rotation to the next endpoint, auth tokens, TLS, and the watch stream.
 *
 * The gateway maps gRPC onto HTTP/1.1 JSON: keys and values are base64,
 * int64 fields are JSON strings, errors come back as
 * {"error": ..., "message": ..., "code": <gRPC code>} with an HTTP status.
 * Streaming calls (lease/keepalive, watch) answer one {"result": {...}} per
 * line.
 *
 * Clients are shared per configuration and live until the process exits:
 * they own the sessions (one lease per process and TTL), and a lease must
 * outlive any one lock handle or the next lock would pay for a new grant
 * and the old lease's revoke -- two more consensus writes per cycle.
 */
#define _GNU_SOURCE
#include "etcd/internal.h"
#include "core/internal.h"

#include <curl/curl.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#define AR_ETCD_MAX_EPS   16
#define AR_ETCD_IDLE      4        /* curl handles kept for connection reuse */
#define AR_ATTEMPT_CAP    2.0      /* one endpoint gets this long per try */
#define AR_CONNECT_CAP    1.0

/* One transfer handle: an easy handle driven by a multi handle of its own
 * (conn_new says why not curl_easy_perform).  The multi keeps the
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

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static atomrun_etcd   *registry;
static pthread_once_t  curl_once = PTHREAD_ONCE_INIT;
static int             curl_ok;
static char            curl_why[256];

/*
 * libcurl is opened with dlopen on the first etcd name, not linked.  Why:
 * Debian's libcurl pulls in some 30 libraries (TLS, Kerberos, LDAP, SSH,
 * HTTP/2...), and the dynamic loader would map and relocate every one of
 * them at each start of `atomrun lock -n F true` — more than doubling the
 * start-up of a command that never talks to etcd.  The functions used
 * are reached through this table; the types and constants still come from
 * <curl/curl.h>, so the compiler checks every call.
 */
static struct {
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
} ar_curl;

/* dlsym returns void *; ISO C has no conversion to a function pointer, so
 * the address is copied (what POSIX's dlsym rationale recommends). */
static int curl_sym(void *lib, const char *name, void *fnptr, size_t size)
{
    void *p = dlsym(lib, name);
    if (!p) {
        snprintf(curl_why, sizeof curl_why, "libcurl lacks %s", name);
        return 0;
    }
    memcpy(fnptr, &p, size);
    return 1;
}

#define AR_CURL_SYM(lib, field, name) \
    curl_sym(lib, name, &ar_curl.field, sizeof ar_curl.field)

static void curl_init_once(void)
{
    void *lib = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        lib = dlopen("libcurl-gnutls.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        snprintf(curl_why, sizeof curl_why, "etcd names need libcurl "
                 "(Debian package libcurl4): %s", why ? why : "not found");
        return;
    }
    if (!AR_CURL_SYM(lib, global_init, "curl_global_init") ||
        !AR_CURL_SYM(lib, easy_init, "curl_easy_init") ||
        !AR_CURL_SYM(lib, easy_setopt, "curl_easy_setopt") ||
        !AR_CURL_SYM(lib, easy_getinfo, "curl_easy_getinfo") ||
        !AR_CURL_SYM(lib, easy_reset, "curl_easy_reset") ||
        !AR_CURL_SYM(lib, easy_cleanup, "curl_easy_cleanup") ||
        !AR_CURL_SYM(lib, easy_strerror, "curl_easy_strerror") ||
        !AR_CURL_SYM(lib, slist_append, "curl_slist_append") ||
        !AR_CURL_SYM(lib, slist_free_all, "curl_slist_free_all") ||
        !AR_CURL_SYM(lib, multi_init, "curl_multi_init") ||
        !AR_CURL_SYM(lib, multi_cleanup, "curl_multi_cleanup") ||
        !AR_CURL_SYM(lib, multi_add_handle, "curl_multi_add_handle") ||
        !AR_CURL_SYM(lib, multi_remove_handle, "curl_multi_remove_handle") ||
        !AR_CURL_SYM(lib, multi_perform, "curl_multi_perform") ||
        !AR_CURL_SYM(lib, multi_poll, "curl_multi_poll") ||
        !AR_CURL_SYM(lib, multi_info_read, "curl_multi_info_read"))
        return;             /* the library stays loaded: harmless */
    curl_ok = ar_curl.global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    if (!curl_ok)
        snprintf(curl_why, sizeof curl_why, "libcurl could not be initialised");
}

/* ---------------------------------------------------------- small helpers */

void ar_strlcpy(char *dst, const char *src, size_t size)
{
    size_t n;
    if (size == 0)
        return;
    n = strlen(src);
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *ar_b64_encode(const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t i, o = 0;
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    for (i = 0; i + 2 < len; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64chars[v >> 18 & 63];
        out[o++] = b64chars[v >> 12 & 63];
        out[o++] = b64chars[v >> 6 & 63];
        out[o++] = b64chars[v & 63];
    }
    if (i < len) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)p[i + 1] << 8;
        out[o++] = b64chars[v >> 18 & 63];
        out[o++] = b64chars[v >> 12 & 63];
        out[o++] = i + 1 < len ? b64chars[v >> 6 & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

static int b64val(int ch)
{
    const char *q;
    if (ch == '\0')
        return -1;
    q = strchr(b64chars, ch);
    return q ? (int)(q - b64chars) : -1;
}

int ar_b64_decode(const char *s, char **out, size_t *len)
{
    size_t n = strlen(s), o = 0, i;
    unsigned acc = 0;
    int bits = 0;
    char *buf = malloc(n / 4 * 3 + 4);
    if (!buf)
        return -ENOMEM;
    for (i = 0; i < n && s[i] != '='; i++) {
        int v = b64val((unsigned char)s[i]);
        if (v < 0) {
            free(buf);
            return -EPROTO;
        }
        acc = acc << 6 | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (char)(acc >> bits & 0xff);
        }
    }
    buf[o] = '\0';
    *out = buf;
    *len = o;
    return 0;
}

json_t *ar_json_b64(const void *data, size_t len)
{
    char *e = ar_b64_encode(data, len);
    json_t *j;
    if (!e)
        return NULL;
    j = json_string(e);
    free(e);
    return j;
}

int64_t ar_json_int64(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    if (json_is_string(v))
        return strtoll(json_string_value(v), NULL, 10);
    return 0;
}

char *ar_prefix_end(const char *prefix, size_t len, size_t *outlen)
{
    char *end = malloc(len + 1);
    size_t n = len;
    if (!end)
        return NULL;
    memcpy(end, prefix, len);
    /* etcd's rule: increment the last byte that is not 0xff, drop the rest. */
    while (n > 0 && (unsigned char)end[n - 1] == 0xff)
        n--;
    if (n == 0) {                   /* all 0xff: "to the end of the keyspace" */
        end[0] = '\0';
        *outlen = 1;
        return end;
    }
    end[n - 1] = (char)((unsigned char)end[n - 1] + 1);
    end[n] = '\0';
    *outlen = n;
    return end;
}

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

static void conn_free(ar_conn *k);

static void client_free(atomrun_etcd *c)
{
    int i;
    for (i = 0; i < c->neps; i++)
        free(c->eps[i]);
    for (i = 0; i < c->nidle; i++)
        conn_free(&c->idle[i]);
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
        seterr(err, errlen, "no etcd endpoints given");
        return -EINVAL;
    }
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (!endpoint_ok(p, n)) {
            seterr(err, errlen, "bad etcd endpoint \"%.*s\" (want HOST:PORT)",
                   (int)(n > 80 ? 80 : n), p);
            return -EINVAL;
        }
        if (c->neps == AR_ETCD_MAX_EPS) {
            seterr(err, errlen, "more than %d etcd endpoints", AR_ETCD_MAX_EPS);
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
                seterr(err, errlen, "empty etcd endpoint at the end of \"%s\"", list);
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

int atomrun_etcd_open(const atomrun_etcd_config *cfg, atomrun_etcd **out,
                      char *err, size_t errlen)
{
    atomrun_etcd *c, *it;
    char *ident;
    int r;
    size_t n;

    *out = NULL;
    pthread_once(&curl_once, curl_init_once);
    if (!curl_ok) {
        /* Not a shortage of memory: a library this machine lacks, which
         * the caller can name (ELIBACC) and the user can install. */
        seterr(err, errlen, "%s", curl_why);
        return -ELIBACC;
    }
    if (!(cfg->op_timeout > 0)) {
        seterr(err, errlen, "etcd op_timeout must be > 0");
        return -EINVAL;
    }
    if ((cfg->cert_file && *cfg->cert_file) != (cfg->key_file && *cfg->key_file)) {
        seterr(err, errlen, "a TLS client certificate needs its key, and a key its certificate");
        return -EINVAL;
    }
    if (cfg->password && *cfg->password && !(cfg->user && *cfg->user)) {
        seterr(err, errlen, "an etcd password without a user name");
        return -EINVAL;
    }
    c = calloc(1, sizeof *c);
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

    /* The identity includes the password so that a corrected password is a
     * new client; it is compared, never printed. */
    n = strlen(c->eplist) + 64;
    n += (c->ca_file ? strlen(c->ca_file) : 0) + (c->cert_file ? strlen(c->cert_file) : 0);
    n += (c->key_file ? strlen(c->key_file) : 0) + (c->user ? strlen(c->user) : 0);
    n += c->password ? strlen(c->password) : 0;
    ident = malloc(n);
    if (!ident) {
        client_free(c);
        return -ENOMEM;
    }
    snprintf(ident, n, "%d|%s|%s|%s|%s|%s|%s|%g", c->tls, c->eplist,
             c->ca_file ? c->ca_file : "", c->cert_file ? c->cert_file : "",
             c->key_file ? c->key_file : "", c->user ? c->user : "",
             c->password ? c->password : "", c->op_timeout);
    c->ident = ident;

    pthread_mutex_lock(&registry_mu);
    for (it = registry; it; it = it->next)
        if (strcmp(it->ident, ident) == 0)
            break;
    if (it) {
        pthread_mutex_unlock(&registry_mu);
        client_free(c);
        *out = it;
        return 0;
    }
    c->next = registry;
    registry = c;
    pthread_mutex_unlock(&registry_mu);
    *out = c;
    return 0;
}

/* ---------------------------------------------------------- one request */

typedef struct membuf {
    char  *p;
    size_t n, cap;
} membuf;

static size_t membuf_write(char *data, size_t size, size_t nmemb, void *ud)
{
    membuf *b = ud;
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

/* ------------------------------------------------- transfer handles */

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

/* A new transfer handle; 0, or -ENOMEM.  One at a time in the process:
 * two of our threads making handles at once would each see the other's
 * pair as well, and mark neither. */
static int conn_new(ar_conn *k)
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

static void conn_free(ar_conn *k)
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
    return found ? 0 : conn_new(k);
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
        conn_free(k);
}

/* What curl_easy_perform does, on the handle's own multi: run the one
 * transfer to its end (its own timeouts bound it) and give its result. */
static CURLcode conn_perform(ar_conn *k)
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
static struct curl_slist *setup_handle(atomrun_etcd *c, CURL *h, int ep,
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

/* What became of one attempt. */
enum { AT_OK, AT_TRANSPORT, AT_NOT_ETCD, AT_RETRY, AT_AUTH_TOKEN, AT_FATAL,
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
static int classify(atomrun_etcd *c, int ep, long http, membuf *b,
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
            seterr(err, errlen, "%s answered HTTP %ld: %s", c->eps[ep], http, text);
        else
            seterr(err, errlen, "%s answered HTTP %ld, which is not etcd's JSON gateway "
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
        seterr(err, errlen, "%s answered HTTP %ld without an etcd error", c->eps[ep], http);
        return AT_NOT_ETCD;
    }
    msg = json_is_string(e) ? json_string_value(e) : "";
    if (json_is_object(e))          /* streaming calls: {"error": {...}} */
        msg = json_string_value(json_object_get(e, "message"));
    if (!msg)
        msg = "";
    code = (int)ar_json_int64(json_is_object(e) ? e : j, "code");
    seterr(err, errlen, "%s: %s", c->eps[ep], msg);
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
    membuf b = { 0 };
    CURLcode cr;
    long http = 0;
    int how;

    if (conn_get(c, &k) != 0) {
        *rc = -ENOMEM;
        return AT_FATAL;
    }
    h = k.easy;
    hdr = setup_handle(c, h, ep, path, attempt, token);
    ar_curl.easy_setopt(h, CURLOPT_POSTFIELDS, body);
    ar_curl.easy_setopt(h, CURLOPT_WRITEFUNCTION, membuf_write);
    ar_curl.easy_setopt(h, CURLOPT_WRITEDATA, &b);
    if (po && po->abort_flag) {
        ar_curl.easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        ar_curl.easy_setopt(h, CURLOPT_XFERINFOFUNCTION, xfer_abort);
        ar_curl.easy_setopt(h, CURLOPT_XFERINFODATA, (void *)po->abort_flag);
    }
    cr = conn_perform(&k);
    ar_curl.slist_free_all(hdr);
    if (cr != CURLE_OK && unsure && request_sent(h))
        *unsure = 1;
    if (cr == CURLE_ABORTED_BY_CALLBACK) {
        conn_free(&k);
        free(b.p);
        seterr(err, errlen, "cancelled");
        *rc = -ECANCELED;
        return AT_ABORTED;
    }
    if (cr != CURLE_OK) {
        conn_free(&k);                 /* the connection is in an unknown state */
        free(b.p);
        seterr(err, errlen, "%s: %s", c->eps[ep], ar_curl.easy_strerror(cr));
        return AT_TRANSPORT;
    }
    ar_curl.easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http);
    conn_put(c, &k);
    how = classify(c, ep, http, &b, answer, rc, err, errlen);
    free(b.p);
    /* "request timed out", "leader changed": the member took the request
     * and may yet apply it. */
    if (how == AT_RETRY && unsure)
        *unsure = 1;
    return how;
}

/* Compact JSON text of body (malloc'd), body freed; NULL (no memory) when
 * body is NULL or cannot be printed. */
static char *dumps_taken(json_t *body)
{
    char *text;
    if (!body)
        return NULL;
    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}

static int authenticate(atomrun_etcd *c, int ep, double attempt,
                        const ar_post_opts *po, char *err, size_t errlen)
{
    json_t *body = json_pack("{s:s, s:s}", "name", c->user,
                             "password", c->password ? c->password : "");
    json_t *ans = NULL;
    char *text;
    int rc = 0, how;
    if (!(text = dumps_taken(body)))
        return -ENOMEM;
    how = attempt_once(c, ep, "/v3/auth/authenticate", text, attempt, NULL, po, NULL,
                       &ans, &rc, err, errlen);
    explicit_bzero(text, strlen(text));
    free(text);
    if (how == AT_OK) {
        const char *tok = json_string_value(json_object_get(ans, "token"));
        if (!tok) {
            json_decref(ans);
            seterr(err, errlen, "%s: authentication answered without a token",
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
            char tmp[ATOMRUN_ETCD_ERRLEN];
            ar_strlcpy(tmp, err, sizeof tmp);
            seterr(err, errlen, "etcd user \"%s\" could not log in: %s", c->user, tmp);
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

/* The endpoint to ask now, and a copy of the auth token (NULL: none). */
static int current_endpoint(atomrun_etcd *c, char **token)
{
    int ep;
    pthread_mutex_lock(&c->mu);
    ep = c->cur;
    *token = c->token ? strdup(c->token) : NULL;
    pthread_mutex_unlock(&c->mu);
    return ep;
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
    pthread_mutex_lock(&c->mu);
    if (c->cur == ep)
        c->cur = (ep + 1) % c->neps;
    pthread_mutex_unlock(&c->mu);
    if (++*fails % c->neps == 0 || how == AT_RETRY) {
        double nap = 0.05 * (*fails / c->neps + 1), left = deadline - atomrun_now();
        if (nap > 0.5)
            nap = 0.5;
        if (nap > left)
            nap = left;
        atomrun_sleep(nap);
    }
}

static int post(atomrun_etcd *c, const char *path, json_t *body, double deadline,
                const ar_post_opts *po, int *unsure, json_t **answer,
                char *err, size_t errlen)
{
    char *text = json_dumps(body, JSON_COMPACT);
    char last[ATOMRUN_ETCD_ERRLEN] = "";
    double cap = po && po->attempt_cap > 0 ? po->attempt_cap : AR_ATTEMPT_CAP;
    int not_etcd = 0, fails = 0, token_retries = 0, result;

    *answer = NULL;
    if (!text)
        return -ENOMEM;
    if (!(deadline > 0))
        deadline = atomrun_now() + c->op_timeout;
    for (;;) {
        double left = deadline - atomrun_now(), attempt;
        char *token;
        int ep, how, rc = 0;

        if (po && po->abort_flag && *po->abort_flag) {
            result = -ECANCELED;
            break;
        }
        if (left <= 0) {
            seterr(err, errlen, "no etcd endpoint of %s answered in time (last error: %s)",
                   c->eplist, last[0] ? last : "none");
            result = ATOMRUN_EUNAVAILABLE;
            break;
        }
        attempt = left < cap ? left : cap;
        ep = current_endpoint(c, &token);
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
            seterr(err, errlen, "%s", last);
            result = rc;
            break;
        }
        if (how == AT_AUTH_TOKEN && c->user && token_retries++ < 3) {
            forget_token(c);
            continue;
        }
        if (how == AT_AUTH_TOKEN) {
            seterr(err, errlen, "%s (the cluster needs a user and password)", last);
            result = -EACCES;
            break;
        }
        if (how != AT_NOT_ETCD)
            not_etcd = 0;
        else if (++not_etcd >= c->neps) {
            seterr(err, errlen, "%s", last);
            result = -EPROTO;
            break;
        }
        next_endpoint(c, ep, how, &fails, deadline);
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

int atomrun_etcd_call(atomrun_etcd *c, const char *path, const char *json,
                      double deadline, char **out, char *err, size_t errlen)
{
    json_error_t je;
    json_t *body = json_loads(json, 0, &je), *ans = NULL;
    int r;
    *out = NULL;
    if (!body) {
        seterr(err, errlen, "request is not JSON: %s", je.text);
        return -EINVAL;
    }
    r = ar_etcd_send(c, path, body, deadline, NULL, &ans, err, errlen);
    if (r < 0)
        return r;
    *out = json_dumps(ans, JSON_COMPACT);
    json_decref(ans);
    return *out ? 0 : -ENOMEM;
}

/* --------------------------------------------------------------- watch */

typedef struct watchctx {
    membuf       line;
    ar_watch_fn  fn;
    void        *ud;
    int          done;      /* 1: fn said stop; 2: server cancelled */
    int          error;     /* < 0: an error answer */
    char         msg[ATOMRUN_ETCD_ERRLEN];
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
    if (membuf_write(data, 1, add, &w->line) != add)
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
    double left = until - atomrun_now();
    int ep;
    CURLcode cr;

    if (!(text = dumps_taken(body)))
        return -ENOMEM;
    if (left <= 0) {
        free(text);
        return 0;
    }
    memset(&w, 0, sizeof w);
    w.fn = fn;
    w.ud = ctx;
    if (conn_new(&k) != 0) {       /* a stream: its connection is not reused */
        free(text);
        return -ENOMEM;
    }
    h = k.easy;
    pthread_mutex_lock(&c->mu);
    ep = c->cur;
    if (c->token)
        token = strdup(c->token);
    pthread_mutex_unlock(&c->mu);
    hdr = setup_handle(c, h, ep, "/v3/watch", left, token);
    free(token);
    ar_curl.easy_setopt(h, CURLOPT_POSTFIELDS, text);
    ar_curl.easy_setopt(h, CURLOPT_WRITEFUNCTION, watch_write);
    ar_curl.easy_setopt(h, CURLOPT_WRITEDATA, &w);
    cr = conn_perform(&k);
    ar_curl.slist_free_all(hdr);
    conn_free(&k);
    free(text);
    free(w.line.p);
    if (w.done)
        return w.done == 1 ? 1 : 0;
    if (w.error == -EPROTO || w.error == -EACCES) {
        seterr(err, errlen, "%s: %s", c->eps[ep], w.msg);
        return w.error;
    }
    if (cr != CURLE_OK && cr != CURLE_OPERATION_TIMEDOUT) {
        /* The member went away mid-watch: the caller's next request
         * rotates; point it at the next endpoint now. */
        pthread_mutex_lock(&c->mu);
        if (c->cur == ep)
            c->cur = (ep + 1) % c->neps;
        pthread_mutex_unlock(&c->mu);
        atomrun_sleep(0.02);
    }
    return 0;
}
