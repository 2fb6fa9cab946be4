/* spec/host.c -- a C host embedding atomrun exactly as the README says:
 * a ready state, then a script run with arguments like the CLI does. */
#include <atomrun.h>
#include <lua.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    lua_State *L;
    int status;
    if (argc < 2) {
        fprintf(stderr, "usage: %s SCRIPT [ARGS...]\n", argv[0]);
        return 64;
    }
    L = atomrun_newstate();
    if (!L)
        return 1;
    status = atomrun_runscript(L, argv[0], ATOMRUN_RUN_FILE, argv[1],
                               argc - 2, argv + 2);
    lua_close(L);
    return status;
}
