/*
 * main.c -- the `atomrun` command: a thin dispatcher.  Scripts and the
 * bundled subcommands (lua/atomrun/cmd/NAME.lua: adding one is a one-file
 * change) all run through atomrun_runscript(), as an embedding host would.
 */
#include "atomrun.h"

#include <errno.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EX_USAGE 64   /* sysexits.h, as flock(1) uses */

/* The subcommands are the bundled modules atomrun.cmd.NAME, each with the
 * one-line summary scripts/bundle.lua took from its first line
 * (atomrun_command): the help lists whatever is bundled, so a new
 * subcommand is one new file. */
static void print_usage(FILE *out)
{
    const char *name;
    fputs("usage: atomrun SCRIPT [ARGS...] | -e CODE [ARGS...] | - [ARGS...]\n"
          "       atomrun ", out);
    for (int i = 0; (name = atomrun_command(i, NULL)) != NULL; i++)
        fprintf(out, "%s%s", i ? "|" : "", name);
    fputs(" ... | --help | --version\n", out);
}

static const char help_head[] =
    "atomrun " ATOMRUN_VERSION " -- file locks, exclusive create and atomic "
    "replace, scripted in Lua\n"
    "\n"
    "  atomrun SCRIPT [ARGS...]   run a Lua job script (arg[0] = SCRIPT)\n"
    "  atomrun -e CODE [ARGS...]  run CODE\n"
    "  atomrun - [ARGS...]        run a script read from standard input\n"
    "  atomrun -- SCRIPT ...      run SCRIPT even if it is named like a command\n"
    "\n"
    "Commands (atomrun NAME --help for the options of each):\n";

static const char help_tail[] =
    "\n"
    "Options:\n"
    "  -h, --help                 this text\n"
    "  -v, --version              version of atomrun and of Lua\n"
    "\n"
    "In scripts: local atomrun = require \"atomrun\"  (also the global atomrun)\n"
    "Exit status: os.exit(n) gives n; a normal end 0; an uncaught error 1;\n"
    "a usage error 64.  See atomrun(1) and atomrun(3).\n";

static void print_help(void)
{
    const char *name, *summary;
    fputs(help_head, stdout);
    for (int i = 0; (name = atomrun_command(i, &summary)) != NULL; i++)
        printf("  atomrun %-18s %s\n", name, summary);
    fputs(help_tail, stdout);
}

static int usage_error(const char *fmt, const char *what)
{
    fprintf(stderr, "atomrun: ");
    fprintf(stderr, fmt, what);
    fputc('\n', stderr);
    print_usage(stderr);
    return EX_USAGE;
}

static const char *progname = "atomrun";

/* The optimal-string-alignment distance of a and b (edits: insert, delete,
 * replace, swap two neighbours), or 3 once it is sure to exceed 2: only
 * "is it a near miss" is asked, of short words. */
static int near_miss_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), i, j;
    int d[18][18];
    if (la > 16 || lb > 16 || (la > lb ? la - lb : lb - la) > 2)
        return 3;
    for (i = 0; i <= la; i++)
        d[i][0] = (int)i;
    for (j = 0; j <= lb; j++)
        d[0][j] = (int)j;
    for (i = 1; i <= la; i++)
        for (j = 1; j <= lb; j++) {
            int cost = a[i - 1] != b[j - 1], best = d[i - 1][j - 1] + cost;
            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]
                && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[la][lb];
}

/* The subcommand a mistyped one was surely meant to be (`atomrun lokc`):
 * one edit away, two for names of five letters or more; NULL if none. */
static const char *meant_command(const char *word)
{
    const char *name, *best = NULL;
    int i, best_d = 3;
    for (i = 0; (name = atomrun_command(i, NULL)) != NULL; i++) {
        int d = near_miss_distance(word, name), allowed = strlen(name) >= 5 ? 2 : 1;
        if (d <= allowed && d < best_d) {
            best = name;
            best_d = d;
        }
    }
    return best;
}

static int run(int source, const char *script, int argc, char **argv)
{
    lua_State *L = atomrun_newstate_for(source);
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
        print_help();
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
    /* Not a command and no such file, but close to a command: a typo, not
     * a script lua(1) would fail to open (exit 1, "cannot open"). */
    if (!strchr(a, '/') && access(a, F_OK) != 0 && errno == ENOENT) {
        const char *meant = meant_command(a);
        if (meant) {
            fprintf(stderr, "atomrun: '%s' is neither a command nor a script: did you mean "
                    "'atomrun %s'?\n", a, meant);
            print_usage(stderr);
            return EX_USAGE;
        }
    }
    return run(ATOMRUN_RUN_FILE, a, argc - 2, argv + 2);
}
