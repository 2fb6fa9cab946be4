/*
 * writer.c -- the streaming writer and the file rules, from C.
 *
 * Uses only the public header, in a fresh temp directory:
 *   - a replace streamed in many pieces arrives whole; readers of the old
 *     file never see a mix (the old inode keeps the old bytes);
 *   - abort leaves the old file byte for byte and no temp file; commit after
 *     a failed write is refused;
 *   - create through the writer says -EEXIST, with e.found set, when the
 *     name is taken, before anything is written;
 *   - a FIFO at the target: -EINVAL, stage OPEN, found S_IFIFO, still a FIFO;
 *   - a missing directory is created; one that cannot be (a file in the
 *     way) fails with stage DIR;
 *   - atomrun_resolve follows a chain of links to a file that need not exist.
 *
 * Exit 0 on success; otherwise print each failure and exit 1.
 */
#define _GNU_SOURCE
#include "atomrun.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TEST_NAME "writer"
#include "check.h"

static char dir[64];

static const char *at(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void put(const char *name, const char *text)
{
    FILE *f = fopen(at(name), "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static char *get(const char *name, size_t *len)
{
    char *data = NULL;
    if (atomrun_read(at(name), &data, len) != 0)
        return NULL;
    return data;
}

/* Names in dir starting with '.' other than . and ..: leftover temp files. */
static int hidden_files(void)
{
    int n = 0;
    struct dirent *e;
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    while ((e = readdir(d)))
        if (e->d_name[0] == '.' && strcmp(e->d_name, ".") != 0 &&
            strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void test_stream(void)
{
    atomrun_writer *w;
    atomrun_write_opts o;
    atomrun_err e;
    char piece[1000];
    size_t len;
    int r, fd;
    char *data;

    put("f", "old");
    fd = open(at("f"), O_RDONLY);           /* a reader of the old inode */
    atomrun_write_opts_init(&o);
    r = atomrun_writer_open(&w, at("f"), ATOMRUN_WRITE_REPLACE, &o, &e);
    CHECK(r == 0, "writer_open: %d", r);
    if (r != 0)
        return;
    CHECK(e.found == S_IFREG, "found %o, expected a regular file", e.found);
    memset(piece, 'x', sizeof piece);
    for (int i = 0; i < 3000; i++)
        CHECK(atomrun_writer_write(w, piece, sizeof piece, &e) == 0, "write %d", i);
    data = get("f", &len);                  /* not yet in place */
    CHECK(data && len == 3 && memcmp(data, "old", 3) == 0, "replaced early");
    free(data);
    r = atomrun_writer_commit(w, &e);
    CHECK(r == 0, "commit: %d (stage %d)", r, e.stage);
    data = get("f", &len);
    CHECK(data && len == 3000 * sizeof piece, "new size %zu", len);
    free(data);
    if (fd >= 0) {
        char old[8] = { 0 };
        CHECK(read(fd, old, sizeof old) == 3 && strcmp(old, "old") == 0,
              "the old inode changed");
        close(fd);
    }
    CHECK(hidden_files() == 0, "a temp file was left");
}

static void test_abort(void)
{
    atomrun_writer *w;
    atomrun_write_opts o;
    atomrun_err e;
    size_t len;
    char *data;
    int r;

    put("g", "keep");
    atomrun_write_opts_init(&o);
    r = atomrun_writer_open(&w, at("g"), ATOMRUN_WRITE_REPLACE, &o, &e);
    CHECK(r == 0, "writer_open: %d", r);
    if (r == 0) {
        atomrun_writer_write(w, "half", 4, &e);
        atomrun_writer_abort(w);
    }
    data = get("g", &len);
    CHECK(data && len == 4 && memcmp(data, "keep", 4) == 0, "abort changed g");
    free(data);
    CHECK(hidden_files() == 0, "abort left a temp file");
    atomrun_writer_abort(NULL);             /* allowed, does nothing */

    /* create of a taken name: refused at open, nothing written */
    atomrun_write_opts_init(&o);
    r = atomrun_writer_open(&w, at("g"), ATOMRUN_WRITE_CREATE, &o, &e);
    CHECK(r == -EEXIST && w == NULL, "create over g: %d", r);
    CHECK(e.found == S_IFREG, "found %o", e.found);
    r = atomrun_writer_open(&w, at("g"), 7, &o, &e);
    CHECK(r == -EINVAL, "a bad 'how': %d", r);
}

static void test_special(void)
{
    atomrun_write_opts o;
    atomrun_err e;
    struct stat st;
    int r;

    CHECK(mkfifo(at("fifo"), 0600) == 0, "mkfifo");
    atomrun_write_opts_init(&o);
    r = atomrun_replace(at("fifo"), "x", 1, &o, &e);
    CHECK(r == -EINVAL, "replace over a FIFO: %d", r);
    CHECK(e.stage == ATOMRUN_STAGE_OPEN, "stage %d", e.stage);
    CHECK(e.found == S_IFIFO, "found %o", e.found);
    CHECK(lstat(at("fifo"), &st) == 0 && S_ISFIFO(st.st_mode), "FIFO gone");

    CHECK(symlink("fifo", at("tofifo")) == 0, "symlink");
    atomrun_write_opts_init(&o);
    o.follow = 1;
    r = atomrun_replace(at("tofifo"), "x", 1, &o, &e);
    CHECK(r == -EINVAL && e.found == S_IFIFO, "follow to a FIFO: %d", r);
    CHECK(lstat(at("tofifo"), &st) == 0 && S_ISLNK(st.st_mode), "link gone");

    CHECK(mkdir(at("sub"), 0700) == 0, "mkdir");
    atomrun_write_opts_init(&o);
    r = atomrun_replace(at("sub"), "x", 1, &o, &e);
    CHECK(r == -EISDIR && e.found == S_IFDIR, "replace over a directory: %d", r);
}

static void test_dirs(void)
{
    atomrun_write_opts o;
    atomrun_err e;
    char out[256];
    int r;

    atomrun_write_opts_init(&o);
    r = atomrun_replace(at("a/b/c"), "x", 1, &o, &e);
    CHECK(r == 0, "replace into a missing directory: %d", r);
    atomrun_write_opts_init(&o);
    r = atomrun_create(at("d/e"), NULL, 0, &o, &e);
    CHECK(r == 0, "empty create into a missing directory: %d", r);

    put("plain", "p");
    atomrun_write_opts_init(&o);
    r = atomrun_replace(at("plain/sub/f"), "x", 1, &o, &e);
    CHECK(r == -ENOTDIR && e.stage == ATOMRUN_STAGE_DIR,
          "a file in the way: %d, stage %d", r, e.stage);

    CHECK(symlink("l2", at("l1")) == 0 && symlink("target", at("l2")) == 0,
          "symlinks");
    r = atomrun_resolve(at("l1"), out, sizeof out);
    CHECK(r == 0 && strcmp(out, at("target")) == 0, "resolve: %d %s", r, out);
    r = atomrun_resolve(at("plain"), out, sizeof out);
    CHECK(r == 0 && strcmp(out, at("plain")) == 0, "resolve of a file: %d", r);
    CHECK(symlink("loop", at("loop")) == 0, "symlink loop");
    CHECK(atomrun_resolve(at("loop"), out, sizeof out) == -ELOOP, "ELOOP");
}

int main(void)
{
    if (check_mkdtemp(dir, sizeof dir) < 0)
        return 1;
    test_stream();
    test_abort();
    test_special();
    test_dirs();
    if (check_rmtree(dir) < 0)
        fprintf(stderr, "writer: could not remove %s\n", dir);
    if (failures)
        return 1;
    printf("writer: ok\n");
    return 0;
}
