/*
 * core/probe.c -- what a filesystem really supports, tested rather than assumed
 * (`atomrun doctor`).  Each probe works on scratch files in the directory
 * and removes them again.
 */
#define _GNU_SOURCE
#include "core/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/vfs.h>
#include <unistd.h>

static const struct { unsigned long magic; const char *name; int remote, volat; }
fstypes[] = {
    { 0xEF53, "ext4", 0, 0 },         { 0x58465342, "xfs", 0, 0 },
    { 0x9123683E, "btrfs", 0, 0 },    { 0x2FC12FC1, "zfs", 0, 0 },
    { 0xF2F52010, "f2fs", 0, 0 },     { 0x4D44, "vfat", 0, 0 },
    { 0x794C7630, "overlayfs", 0, 0 },{ 0x01021994, "tmpfs", 0, 1 },
    { 0x858458F6, "ramfs", 0, 1 },    { 0x6969, "nfs", 1, 0 },
    { 0x65735546, "fuse", 1, 0 },     { 0xFF534D42, "cifs", 1, 0 },
    { 0xFE534D42, "smb2", 1, 0 },     { 0x01021997, "9p", 1, 0 },
    { 0x00C36400, "ceph", 1, 0 },     { 0x9FA0, "proc", 0, 1 },
};

static void fill_fstype(unsigned long magic, atomrun_fsinfo *fi)
{
    for (size_t i = 0; i < sizeof fstypes / sizeof fstypes[0]; i++)
        if (fstypes[i].magic == magic) {
            snprintf(fi->fstype, sizeof fi->fstype, "%s", fstypes[i].name);
            fi->remote = fstypes[i].remote;
            fi->volatile_ = fstypes[i].volat;
            return;
        }
    snprintf(fi->fstype, sizeof fi->fstype, "0x%lx", magic);
}

/* Two descriptions of one file: does a lock on the first stop the second? */
static int probe_flock(int fd1, int fd2)
{
    int r;
    if (flock(fd1, LOCK_EX | LOCK_NB) != 0)
        return -errno;
    r = flock(fd2, LOCK_EX | LOCK_NB) == 0 ? 0 : (errno == EWOULDBLOCK ? 1 : -errno);
    flock(fd1, LOCK_UN);
    flock(fd2, LOCK_UN);
    return r;
}

static int probe_ofd(int fd1, int fd2)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 1 };
    int r;
    if (fcntl(fd1, F_OFD_SETLK, &fl) != 0)
        return -errno;
    r = fcntl(fd2, F_OFD_SETLK, &fl) == 0 ? 0
        : (errno == EAGAIN || errno == EACCES) ? 1 : -errno;
    fl.l_type = F_UNLCK;
    fcntl(fd1, F_OFD_SETLK, &fl);
    fcntl(fd2, F_OFD_SETLK, &fl);
    return r;
}

static int probe_tmpfile(int dirfd)
{
    int fd = openat(dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    close(fd);
    return 1;
}

static int probe_noreplace(int dirfd, const char *a, const char *b)
{
    int fd = openat(dirfd, b, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
                    0600);
    int r;
    if (fd < 0)
        return -errno;
    close(fd);
    r = renameat2(dirfd, a, dirfd, b, RENAME_NOREPLACE) == 0 ? 0
        : errno == EEXIST ? 1 : -errno;
    unlinkat(dirfd, b, 0);
    return r;
}

/*
 * A directory we cannot write (/proc, a read-only mount, another user's
 * directory) still has a filesystem type worth reporting, and O_TMPFILE
 * and the directory fsync can still be asked; only the probes that need a
 * scratch file (flock, OFD, RENAME_NOREPLACE) cannot run.  They are then
 * set to the error that stopped them and fi->scratch says so, so that the
 * report can say "not tested" rather than "refused".
 */
int atomrun_probe(const char *dir, atomrun_fsinfo *fi)
{
    char name[64], other[64];
    struct statfs sfs;
    int dirfd, fd1, fd2;

    memset(fi, 0, sizeof *fi);
    dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return -errno;
    if (fstatfs(dirfd, &sfs) == 0)
        fill_fstype((unsigned long)sfs.f_type, fi);
    else
        snprintf(fi->fstype, sizeof fi->fstype, "unknown");
    fi->tmpfile = probe_tmpfile(dirfd);
    fi->dirsync = fsync(dirfd) == 0 ? 1 : -errno;
    snprintf(name, sizeof name, ".atomrun-doctor.%d", (int)getpid());
    snprintf(other, sizeof other, ".atomrun-doctor.%d.b", (int)getpid());
    /* O_NOFOLLOW: in a shared directory such as /tmp, a symlink planted at
     * our scratch name must not make us lock or create its target.
     * O_EXCL: nor may we lock, and then remove, a file somebody else has
     * there (the same name from a pid that is gone). */
    fd1 = openat(dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
                 O_CLOEXEC, 0600);
    if (fd1 < 0) {
        fi->scratch = -errno;
        fi->flock = fi->ofd = fi->noreplace = fi->scratch;
        close(dirfd);
        return 0;
    }
    fd2 = openat(dirfd, name, O_RDWR | O_CLOEXEC);
    fi->flock = fd2 < 0 ? -errno : probe_flock(fd1, fd2);
    fi->ofd = fd2 < 0 ? -errno : probe_ofd(fd1, fd2);
    if (fd2 >= 0)
        close(fd2);
    close(fd1);
    fi->noreplace = probe_noreplace(dirfd, name, other);
    unlinkat(dirfd, name, 0);
    close(dirfd);
    return 0;
}
