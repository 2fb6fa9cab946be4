/*
 * main.c -- the `atomrun` command: a thin dispatcher.  Scripts and the
 * bundled subcommands (lua/atomrun/cmd/NAME.lua: adding one is a one-file
 * change) all run through atomrun_runscript(), as an embedding host would.
 */
#include "atomrun.h"

#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EX_USAGE 64   /* sysexits.h, as flock(1) uses */

static const char usage_line[] =
    "usage: atomrun SCRIPT [ARGS...] | -e CODE [ARGS...] | - [ARGS...]\n"
    "       atomrun lock|once|doctor ... | --help | --version\n";

static const char help_text[] =
    "atomrun " ATOMRUN_VERSION " -- file locks, exclusive create and atomic "
    "replace, scripted in Lua\n"
    "\n"
    "  atomrun SCRIPT [ARGS...]   run a Lua job script (arg[0] = SCRIPT)\n"
    "  atomrun -e CODE [ARGS...]  run CODE\n"
    "  atomrun - [ARGS...]        run a script read from standard input\n"
    "  atomrun -- SCRIPT ...      run SCRIPT even if it is named like a command\n"
    "\n"
    "Commands:\n"
    "  atomrun lock [-s|-x] [-n] [-w SECONDS] [-E CODE] [-o] [-F]\n"
    "               [-c CMDSTRING] [--verbose] FILE|DIR [--] CMD [ARGS...]\n"
    "                             run CMD holding a lock (flock(1) flags and\n"
    "                             exit codes); names the holder when busy\n"
    "  atomrun once [-w SECONDS] [-E CODE] [--dir DIR] NAME [--] CMD [ARGS...]\n"
    "                             run CMD unless NAME already runs\n"
    "  atomrun doctor [DIR] [--json]\n"
    "                             what the filesystem under DIR supports\n"
    "\n"
    "Options:\n"
    "  -h, --help                 this text\n"
    "  -v, --version              version of atomrun and of Lua\n"
    "\n"
    "In scripts: local atomrun = require \"atomrun\"  (also the global atomrun)\n"
    "Exit status: os.exit(n) gives n; a normal end 0; an uncaught error 1;\n"
    "a usage error 64.  See atomrun(1) and atomrun(3).\n";

static int usage_error(const char *fmt, const char *what)
{
    fprintf(stderr, "atomrun: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, "\n%s", usage_line);
    return EX_USAGE;
}

static const char *progname = "atomrun";

static int run(int source, const char *script, int argc, char **argv)
{
    lua_State *L = atomrun_newstate();
    int status;
    if (!L)
        return 1;
    status = atomrun_runscript(L, progname, source, script, argc, argv);
    lua_close(L);
    return status;
}

int main(int argc, char **argv)
{
    const char *a = argc > 1 ? argv[1] : NULL;
    const char *base = strrchr(argv[0], '/');

    progname = argv[0];     /* arg[-1], as lua(1) sets it */
    /* Multi-call: a link named flock is flock(1), every argument its own. */
    if (strcmp(base ? base + 1 : argv[0], "flock") == 0)
        return run(ATOMRUN_RUN_COMMAND, "lock", argc - 1, argv + 1);
    if (!a)
        return usage_error("%s", "no script given");
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
        fputs(help_text, stdout);
        return 0;
    }
    if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
        printf("atomrun %s (%s)\n", ATOMRUN_VERSION, LUA_RELEASE);
        return 0;
    }
    if (strcmp(a, "-e") == 0) {
        if (argc < 3)
            return usage_error("%s", "-e needs an argument (the code to run)");
        return run(ATOMRUN_RUN_CODE, argv[2], argc - 3, argv + 3);
    }
    if (strcmp(a, "-") == 0)
        return run(ATOMRUN_RUN_FILE, "-", argc - 2, argv + 2);
    if (strcmp(a, "--") == 0) {
        if (argc < 3)
            return usage_error("%s", "-- must be followed by a script");
        return run(ATOMRUN_RUN_FILE, argv[2], argc - 3, argv + 3);
    }
    if (a[0] == '-')
        return usage_error("unknown option '%s'", a);
    if (!strchr(a, '/') && atomrun_has_command(a))
        return run(ATOMRUN_RUN_COMMAND, a, argc - 2, argv + 2);
    return run(ATOMRUN_RUN_FILE, a, argc - 2, argv + 2);
}
