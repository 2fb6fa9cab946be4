/*
 * notmpfile.c -- LD_PRELOAD'ed by leftover_spec.lua: openat(O_TMPFILE)
 * fails with EOPNOTSUPP, as on a filesystem without unnamed temp files
 * (some network and FUSE ones, none of which can be mounted in a test);
 * everything else is the real call.  Built by `make test`; never installed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
int openat(int dirfd, const char *path, int flags, ...)
{
    static int (*real)(int, const char *, int, ...);
    va_list ap;
    int mode;
    va_start(ap, flags);
    mode = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(ap, int) : 0;
    va_end(ap);
    if ((flags & O_TMPFILE) == O_TMPFILE) {
        errno = EOPNOTSUPP;
        return -1;
    }
    if (!real)
        real = (int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, "openat");
    return real(dirfd, path, flags, mode);
}
