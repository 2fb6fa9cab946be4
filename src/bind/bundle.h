/*
 * bind/bundle.h -- the Lua sources of lua/ compiled into the binary and the
 * libraries: the one definition of an entry, shared by the generator's
 * output (build/bundle.c, from scripts/bundle.lua), the loader
 * (bind/bundle.c) and the command runner (bind/embed.c).  Not installed.
 */
#ifndef AR_BUNDLE_H
#define AR_BUNDLE_H

#include <stddef.h>

typedef struct ar_bundled {
    const char *name;        /* module name: "atomrun", "atomrun.cmd.lock" */
    const char *chunkname;   /* "@lua/atomrun/init.lua", for tracebacks */
    const char *source;
    size_t      len;
    const char *binary;      /* the same chunk precompiled (string.dump) */
    size_t      binlen;
    const char *summary;     /* atomrun.cmd.NAME: its one line for --help */
} ar_bundled;

/* Ends with an entry whose name is NULL. */
extern const ar_bundled ar_bundle[];

/* "Lua 5.4.4": the release whose luac made ar_bundle[].binary. */
extern const char ar_bundle_lua_release[];

#endif
