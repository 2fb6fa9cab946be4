/*
 * check.h -- what the C tests in spec/c/ share: CHECK, which reports a
 * failed condition with the test's name and line, counts it and goes on
 * (so one run shows every failure), and the scratch directory some tests
 * work in.  A test defines TEST_NAME before including it and exits 1 when
 * failures is not 0.
 */
#ifndef AR_SPEC_CHECK_H
#define AR_SPEC_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s: FAILED %s:%d: ", TEST_NAME, __FILE__,    \
                    __LINE__);                                            \
            fprintf(stderr, __VA_ARGS__);                                 \
            fputc('\n', stderr);                                          \
            failures++;                                                   \
        }                                                                 \
    } while (0)

/* A fresh /tmp/atomrun-TEST_NAME.XXXXXX into dir; 0, or -1 (said why). */
static inline int check_mkdtemp(char *dir, size_t size)
{
    snprintf(dir, size, "/tmp/atomrun-%s.XXXXXX", TEST_NAME);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return -1;
    }
    return 0;
}

/* rm -rf dir (a path check_mkdtemp made: no quote in it); 0 or -1. */
static inline int check_rmtree(const char *dir)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
