/*
 * ar_internal.h -- private helpers shared by the core files (every src/ file
 * whose name does not start with `l`, but main.c and embed.c).  Nothing here
 * is installed or exported; `ar_` names are private.
 */
#ifndef AR_INTERNAL_H
#define AR_INTERNAL_H

#include "atomrun.h"

#include <pthread.h>
#include <sys/stat.h>

/*
 * One attempt at taking a lock.  block == 0: must not sleep; returns 0,
 * -EWOULDBLOCK/-EAGAIN/-EACCES when held elsewhere, or -errno.  block != 0:
 * may sleep in the kernel; -EINTR when a signal interrupts it.
 */
typedef int (*ar_attempt_fn)(void *ctx, int block);

/*
 * Take a lock with a deadline (see ATOMRUN_FOREVER): one non-blocking try,
 * then a kernel wait interrupted by the per-thread timer signal (or, when
 * no signal can be had, non-blocking tries 1-10 ms apart).  Returns 0,
 * ATOMRUN_EBUSY, ATOMRUN_ETIMEOUT or -errno.
 */
int ar_wait_for(ar_attempt_fn attempt, void *ctx, double timeout);

/* Create the missing directories above path (mode 0777 & ~umask); fs.c. */
int ar_mkdir_parents(const char *path);

/*
 * The live holder of a lock of `kind` ("FLOCK", "OFDLCK", "POSIX") on the
 * file (dev, ino) that conflicts with `mode` over [start, start+length)
 * (length 0: to EOF): 1 and *h filled -- h->pid 0 when the lock is there
 * but no live process could be seen holding it (another user's, or the
 * search budget ran out) -- or 0 when /proc/locks shows no such lock.
 * self_fd: the asking descriptor of this process, skipped with every
 * descriptor of its open file description; -1 for none.  See holder.c.
 */
int ar_find_holder(int self_fd, dev_t dev, ino_t ino, const char *kind,
                   int mode, int64_t start, int64_t length, atomrun_holder *h);
/* The process holding exactly the OFD lock (mode, start, length) that
 * F_OFD_GETLK reported on (dev, ino), skipping the asking descriptor
 * self_fd: 1 and *h filled, 0 when not found. */
int ar_find_ofd_holder(int self_fd, dev_t dev, ino_t ino, int mode,
                       int64_t start, int64_t length, atomrun_holder *h);
/* Fill h->cmd from /proc/PID/cmdline (argv[0] shortened to its basename),
 * one line, escaped for a terminal. */
void ar_holder_cmd(pid_t pid, char *buf, size_t size);
/* s[0..n) into out (size), escaped for a terminal as holder text is: the
 * controls as \n \t \r \e \xHH, bytes that are not UTF-8 as \xHH.  The
 * length written. */
size_t ar_escape(char *out, size_t size, const unsigned char *s, size_t n);
/* When pid started, in seconds since the epoch; 0 when unknown. */
int64_t ar_start_time(pid_t pid);

/*
 * Clocks (clock.c).  ar_boot_now: CLOCK_BOOTTIME seconds, which go on
 * counting while the machine is suspended (the etcd lost rule's clock).
 * ar_cond_init: a condition variable whose timed waits run on
 * CLOCK_MONOTONIC, never on the wall clock; ar_cond_wait_for waits on one
 * for at most `seconds` (under mu, as pthread_cond_timedwait).
 */
double ar_boot_now(void);
int    ar_cond_init(pthread_cond_t *cv);
void   ar_cond_wait_for(pthread_cond_t *cv, pthread_mutex_t *mu, double seconds);

#endif
