/*
 * core/locktab.c -- the kernel's lock table, /proc/locks: one line parsed,
 * the tests on a parsed line, and the lines about one file read whole while
 * other processes change the table.
 *
 * The kernel lists every lock in /proc/locks, waiters after their blocker:
 *
 *     1: FLOCK  ADVISORY  WRITE 4121 fe:00:10952846 0 EOF
 *     1: -> FLOCK  ADVISORY  WRITE 4130 fe:00:10952846 0 EOF
 *     2: OFDLCK ADVISORY  READ  -1 fe:00:10952846 10 14
 *     3: POSIX  ADVISORY  WRITE 5678 08:01:9999 1073741824 1073741825
 *
 * A line names its file by device and inode only, never by path.  The same
 * text follows "lock:" in /proc/PID/fdinfo/FD for each lock the
 * descriptor's open file description holds, so one parser serves the table
 * and the fdinfo, and ar_line_same tells that an fdinfo line is a line of
 * the table.  The pid column is not the holder (a FLOCK line's is whoever
 * took the lock, an OFD line's is -1): finding the live holder is
 * core/holder.c's work, and nothing here looks at a process.
 *
 * A room of its own because reading the table has its own trap, the torn
 * read of a seq_file (ar_read_locks), and three callers: the holder
 * search, atomrun_pid_holds and atomrun_locks_on (core/holder.c).  The
 * repair makes a torn read rare, not impossible, so who() does not count
 * on it for held flock and OFD locks: it takes those from the holders'
 * fdinfo, each written whole, and the table only for the rest.
 */
#define _GNU_SOURCE
#include "core/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>

/* Parse "N: [-> ]KIND ADVISORY RW PID MAJ:MIN:INO START END" (the text
 * after an fdinfo "lock:" prefix too). */
int ar_parse_lockline(const char *line, ar_lockline *l)
{
    char adv[16], rw[16], end[32];
    long long start;
    const char *p = strchr(line, ':'), *arrow;

    if (!p)
        return 0;
    p++;
    arrow = strstr(p, "->");
    l->waiter = arrow != NULL;
    if (arrow)
        p = arrow + 2;
    if (sscanf(p, "%7s %15s %15s %ld %x:%x:%llu %lld %31s", l->kind, adv,
               rw, &l->pid, &l->maj, &l->min, &l->ino, &start, end) != 9)
        return 0;
    l->write = strcmp(rw, "WRITE") == 0;
    l->start = start;
    l->end = strcmp(end, "EOF") == 0 ? -1 : strtoll(end, NULL, 10);
    return 1;
}

int ar_line_is_file(const ar_lockline *l, dev_t dev, ino_t ino)
{
    return l->maj == major(dev) && l->min == minor(dev) && l->ino == ino;
}

/* Does lock line l conflict with a request (kind, mode, range)? */
int ar_line_conflicts(const ar_lockline *l, const char *kind, int mode,
                      int64_t start, int64_t length)
{
    int64_t end = length == 0 ? -1 : start + length - 1;

    if (l->waiter || strcmp(l->kind, kind) != 0)
        return 0;
    if (mode == ATOMRUN_SHARED && !l->write)
        return 0;                        /* readers do not exclude readers */
    if (l->end != -1 && l->end < start)
        return 0;
    if (end != -1 && l->start > end)
        return 0;
    return 1;
}

/* The same lock (as fdinfo prints a line of /proc/locks)? */
int ar_line_same(const ar_lockline *a, const ar_lockline *b)
{
    /* the numbers first: who() asks this of every pair of hundreds of
     * lines, most of which differ in their range */
    return a->start == b->start && a->end == b->end && a->pid == b->pid &&
           a->write == b->write && strcmp(a->kind, b->kind) == 0;
}

/* One pass over /proc/locks: its lines about (dev, ino); see below. */
static int read_locks_once(dev_t dev, ino_t ino, ar_lockline **out)
{
    char line[512];
    ar_lockline l, *v = NULL;
    int n = 0, cap = 0;
    FILE *f = fopen("/proc/locks", "re");

    *out = NULL;
    if (!f)
        return -errno;
    while (fgets(line, sizeof line, f)) {
        if (!ar_parse_lockline(line, &l) || !ar_line_is_file(&l, dev, ino))
            continue;
        if (n == cap) {
            ar_lockline *more = realloc(v, sizeof *v * (size_t)(cap = cap * 2 + 8));
            if (!more) {
                free(v);
                fclose(f);
                return -ENOMEM;
            }
            v = more;
        }
        v[n++] = l;
    }
    fclose(f);
    *out = v;
    return n;
}

/* Do a[0..na) and b[0..nb) read the same, leaving out the lines that do
 * not matter (matters NULL: all lines matter)? */
static int same_lines(const ar_lockline *a, int na, const ar_lockline *b,
                      int nb, int (*matters)(const ar_lockline *))
{
    int i = 0, j = 0;
    for (;;) {
        while (matters && i < na && !matters(&a[i]))
            i++;
        while (matters && j < nb && !matters(&b[j]))
            j++;
        if (i == na || j == nb)
            return i == na && j == nb;
        if (!ar_line_same(&a[i], &b[j]) || a[i].waiter != b[j].waiter)
            return 0;
        i++, j++;
    }
}

/* How many lines of v[0..n) read the same as l. */
static int count_same(const ar_lockline *v, int n, const ar_lockline *l)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += ar_line_same(&v[i], l) && v[i].waiter == l->waiter;
    return k;
}

static int median3(int a, int b, int c)
{
    if (a > b) { int t = a; a = b; b = t; }
    if (b > c) b = c;
    return a > b ? a : b;
}

/*
 * Every line of /proc/locks about (dev, ino), holders and waiters, in the
 * kernel's order; malloc'd.  -errno, or the count.
 *
 * A trap: /proc/locks is a seq_file that the kernel fills a page per
 * read(2), dropping its lock between pages and finding its place again by
 * position.  When other processes take or release locks meanwhile (anywhere
 * on the system: the table is global), a table longer than a page comes
 * back with lines skipped or repeated — 298 or 302 of a file's 300 locks.
 * The table is read again until two passes in a row agree (each pass takes
 * a few microseconds per lock, and churn that tears two passes the same way
 * is rare); if none do within AR_LOCKS_PASSES, each distinct line is kept
 * as many times as the median of the last three passes has it: a line one
 * pass skipped or repeated counts right, as long as no two of them tore at
 * the same place.
 */
#define AR_LOCKS_PASSES 12
int ar_read_locks(dev_t dev, ino_t ino, ar_lockline **out)
{
    return ar_read_locks_where(dev, ino, NULL, out);
}

/*
 * The same, when only some lines must be right (who() takes the held flock
 * and OFD locks from fdinfo): two passes agree when the lines that matter
 * do.  Every pass takes the kernel's lock of the whole table for writing
 * -- each page of a pass stops every lock and unlock on the system -- so
 * a pass not needed is worth saving under the very churn that tears them.
 */
int ar_read_locks_where(dev_t dev, ino_t ino,
                        int (*matters)(const ar_lockline *), ar_lockline **out)
{
    ar_lockline *v[3] = { NULL, NULL, NULL }, *res;
    int n[3] = { 0, 0, 0 }, total = 0, got = 0, r = 0;

    *out = NULL;
    /* v[2] is the newest pass; stop as soon as it agrees with v[1]. */
    for (int pass = 0; pass < AR_LOCKS_PASSES; pass++) {
        free(v[0]);
        v[0] = v[1], n[0] = n[1];
        v[1] = v[2], n[1] = n[2];
        v[2] = NULL;
        n[2] = read_locks_once(dev, ino, &v[2]);
        if (n[2] < 0) {
            r = n[2];
            goto done;
        }
        if (pass > 0 && same_lines(v[1], n[1], v[2], n[2], matters)) {
            *out = v[2];
            v[2] = NULL;
            r = n[2];
            goto done;
        }
    }
    total = n[0] + n[1] + n[2];
    res = malloc(sizeof *res * (size_t)(total ? total : 1));
    if (!res) {
        r = -ENOMEM;
        goto done;
    }
    /* In the order of first appearance, each line up to its median count. */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < n[i]; j++) {
            const ar_lockline *l = &v[i][j];
            int want = median3(count_same(v[0], n[0], l),
                               count_same(v[1], n[1], l),
                               count_same(v[2], n[2], l));
            if (count_same(res, got, l) < want)
                res[got++] = *l;
        }
    *out = res;
    r = got;
done:
    for (int i = 0; i < 3; i++)
        free(v[i]);
    return r;
}
