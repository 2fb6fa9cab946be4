/*
 * etcd/curl.c -- libcurl, reached through a table of function pointers filled
 * by dlopen on the first etcd name.  Nothing else in atomrun links libcurl.
 */
#define _GNU_SOURCE
#include "etcd/internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

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
 * <curl/curl.h>, so the compiler checks every call.  (Its type, ar_curl_api,
 * is in etcd/internal.h, for the files that make the calls.)
 */
ar_curl_api ar_curl;

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

int ar_curl_load(char *err, size_t errlen)
{
    pthread_once(&curl_once, curl_init_once);
    if (!curl_ok) {
        /* Not a shortage of memory: a library this machine lacks, which
         * the caller can name (ELIBACC) and the user can install. */
        ar_seterr(err, errlen, "%s", curl_why);
        return -ELIBACC;
    }
    return 0;
}
