/*
 * nocurl.c -- LD_PRELOAD'ed by etcd_cli_spec.lua: a machine without
 * libcurl.  dlopen of any libcurl name fails as the real loader fails for
 * a library that is not installed (it asks the real dlopen for a name that
 * does not exist, so dlerror() has the loader's own words); every other
 * dlopen is the real one.  Built by `make test`; never installed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>

void *dlopen(const char *file, int mode)
{
    static void *(*real)(const char *, int);
    if (!real)
        real = (void *(*)(const char *, int))dlsym(RTLD_NEXT, "dlopen");
    if (file && strstr(file, "libcurl"))
        return real("libcurl-not-installed-here.so.4", mode);
    return real(file, mode);
}
