/*
 * core/held.c -- the set of locks one owner holds (see atomrun.h): what makes
 * "deadlock" detection and lock inheritance by children possible.  File
 * locks (flock, ranges) and etcd names are in one set, so that one check
 * decides "deadlock" for both and one count says what a state holds.
 */
#include "core/internal.h"

#include <string.h>

void ar_heldset_init(ar_heldset *s)
{
    s->head.prev = s->head.next = &s->head;
}

void ar_heldset_add(ar_heldset *s, ar_held *h)
{
    if (h->next)
        return;
    h->next = s->head.next;
    h->prev = &s->head;
    s->head.next->prev = h;
    s->head.next = h;
}

void ar_heldset_remove(ar_held *h)
{
    if (!h->next)
        return;
    h->prev->next = h->next;
    h->next->prev = h->prev;
    h->next = h->prev = NULL;
}

static int modes_conflict(int a, int b)
{
    return a == ATOMRUN_EXCLUSIVE || b == ATOMRUN_EXCLUSIVE;
}

int ar_ranges_overlap(int64_t s1, int64_t l1, int64_t s2, int64_t l2)
{
    /* [s, s+l) with l == 0 meaning [s, infinity) */
    int before = l1 != 0 && s1 + l1 <= s2;
    int after = l2 != 0 && s2 + l2 <= s1;
    return !before && !after;
}

static int same_etcd_name(const ar_held *a, const ar_held *b)
{
    return a->cluster == b->cluster && a->namelen == b->namelen &&
           memcmp(a->name, b->name, a->namelen) == 0;
}

static int is_slot(const ar_held *h)
{
    return h->slots > 1;
}

/*
 * The etcd queue's rule (etcd/lock.c, decide), seen from one owner: the
 * kinds -- exclusive, shared, a slot of a semaphore -- exclude each other,
 * shared locks share, and a semaphore's slots share until all of them are
 * taken.  So a slot request waits for us only when we hold as many slots
 * as it has (counted whatever size the held ones were asked with, as the
 * queue counts keys), and then the last of them is the one returned.
 */
static const ar_held *etcd_conflict(const ar_heldset *s,
                                         const ar_held *req)
{
    const ar_held *slot = NULL;
    int slots = 0;
    for (const ar_held *h = s->head.next; h != &s->head; h = h->next) {
        if (h->kind != AR_HELD_ETCD || !same_etcd_name(h, req))
            continue;
        if (is_slot(h) && is_slot(req)) {
            slot = h;
            slots++;
            continue;
        }
        if (is_slot(h) != is_slot(req) || modes_conflict(h->mode, req->mode))
            return h;
    }
    return is_slot(req) && slots >= req->slots ? slot : NULL;
}

const ar_held *ar_heldset_conflict(const ar_heldset *s,
                                             const ar_held *req)
{
    if (req->kind == AR_HELD_ETCD)
        return etcd_conflict(s, req);
    for (const ar_held *h = s->head.next; h != &s->head; h = h->next) {
        if (h->kind != req->kind || h->dev != req->dev || h->ino != req->ino)
            continue;
        /* Locks of one open file description do not conflict: the kernel
         * merges or converts them (the caller deals with that). */
        if (req->owner && h->owner == req->owner)
            continue;
        if (!modes_conflict(h->mode, req->mode))
            continue;
        if (req->kind == AR_HELD_RANGE &&
            !ar_ranges_overlap(h->start, h->length, req->start,
                                    req->length))
            continue;
        return h;
    }
    return NULL;
}

int ar_heldset_foreach(ar_heldset *s,
                            int (*fn)(ar_held *h, void *ctx), void *ctx)
{
    for (ar_held *h = s->head.next, *next; h != &s->head; h = next) {
        int r;
        next = h->next;          /* fn may take h out of the set */
        r = fn(h, ctx);
        if (r)
            return r;
    }
    return 0;
}

size_t ar_heldset_fds(const ar_heldset *s, int *fds, size_t max)
{
    size_t n = 0;
    for (const ar_held *h = s->head.next; h != &s->head; h = h->next) {
        if (h->kind == AR_HELD_ETCD)
            continue;
        if (n < max)
            fds[n] = h->fd;
        n++;
    }
    return n;
}

size_t ar_heldset_count(const ar_heldset *s)
{
    size_t n = 0;
    for (const ar_held *h = s->head.next; h != &s->head; h = h->next)
        n++;
    return n;
}
