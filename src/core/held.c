/*
 * core/held.c -- the set of locks one owner holds (see atomrun.h): what makes
 * "deadlock" detection and lock inheritance by children possible.
 */
#include "core/internal.h"

void atomrun_heldset_init(atomrun_heldset *s)
{
    s->head.prev = s->head.next = &s->head;
}

void atomrun_heldset_add(atomrun_heldset *s, atomrun_held *h)
{
    if (h->next)
        return;
    h->next = s->head.next;
    h->prev = &s->head;
    s->head.next->prev = h;
    s->head.next = h;
}

void atomrun_heldset_remove(atomrun_held *h)
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

const atomrun_held *atomrun_heldset_conflict(const atomrun_heldset *s,
                                             const atomrun_held *req)
{
    for (const atomrun_held *h = s->head.next; h != &s->head; h = h->next) {
        if (h->kind != req->kind || h->dev != req->dev || h->ino != req->ino)
            continue;
        /* Locks of one open file description do not conflict: the kernel
         * merges or converts them (the caller deals with that). */
        if (req->owner && h->owner == req->owner)
            continue;
        if (!modes_conflict(h->mode, req->mode))
            continue;
        if (req->kind == ATOMRUN_HELD_RANGE &&
            !ar_ranges_overlap(h->start, h->length, req->start,
                                    req->length))
            continue;
        return h;
    }
    return NULL;
}

int atomrun_heldset_foreach(atomrun_heldset *s,
                            int (*fn)(atomrun_held *h, void *ctx), void *ctx)
{
    for (atomrun_held *h = s->head.next, *next; h != &s->head; h = next) {
        int r;
        next = h->next;          /* fn may take h out of the set */
        r = fn(h, ctx);
        if (r)
            return r;
    }
    return 0;
}

size_t atomrun_heldset_fds(const atomrun_heldset *s, int *fds, size_t max)
{
    size_t n = 0;
    for (const atomrun_held *h = s->head.next; h != &s->head; h = h->next) {
        if (n < max)
            fds[n] = h->fd;
        n++;
    }
    return n;
}
