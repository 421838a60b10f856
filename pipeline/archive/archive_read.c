/* archive_read.c - reading one member's bytes from a shard through a forward cursor (archive.h says why:
 * members asked for in the shard's order cost one pass over it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/archive/archive_internal.h"

struct pf_archive_reader {
    pf_arc_src src;
    char *shard;
    pf_arc h;        /* h.a NULL: closed (not opened yet, or after a shard error) */
    int at_end;      /* the cursor passed the last member */
    /* The member read last, kept: the other tasks of an image come right after it (one item per task), and
     * going back one member would reopen the shard (for a compressed one, inflate it again up to there). */
    char *last_name;
    int64_t last_entry;
    uint8_t *last_data;
    size_t last_len;
};

static void forget_last(pf_archive_reader *r)
{
    free(r->last_name);
    free(r->last_data);
    r->last_name = NULL;
    r->last_data = NULL;
    r->last_len = 0;
}

/* A copy of the member read last, when it is NAME (at ENTRY, when given) and fits MAX: 1, else 0. */
static int from_last(pf_archive_reader *r, const char *name, int64_t entry, size_t max, uint8_t **data, size_t *len)
{
    if (!r->last_name || strcmp(r->last_name, name) || (entry >= 0 && entry != r->last_entry) || r->last_len > max)
        return 0;
    if (!(*data = malloc(r->last_len ? r->last_len : 1)))
        return 0;
    memcpy(*data, r->last_data, r->last_len);
    *len = r->last_len;
    return 1;
}

static int reader_new(const pf_arc_src *src, pf_archive_reader **out, pf_err *err)
{
    *out = NULL;
    pf_archive_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->shard = strdup(src->path))) {
        free(r);
        return pf_errf(err, "%s: out of memory", src->path);
    }
    r->src = *src;
    r->src.path = r->shard;
    r->h.fd = -1;
    if (pf_arc_open(&r->src, &r->h, err)) {
        pf_archive_reader_close(r);
        return -1;
    }
    *out = r;
    return 0;
}

int pf_archive_reader_open(const char *shard, pf_archive_reader **out, pf_err *err)
{
    pf_arc_src src = {shard, NULL, 0};
    return reader_new(&src, out, err);
}

const char *pf_archive_reader_shard(const pf_archive_reader *r) { return r->shard; }

void pf_archive_reader_close(pf_archive_reader *r)
{
    if (!r)
        return;
    pf_arc_close(&r->h);
    forget_last(r);
    free(r->shard);
    free(r);
}

static int reopen(pf_archive_reader *r, pf_err *err)
{
    pf_arc_close(&r->h);
    r->at_end = 0;
    return pf_arc_open(&r->src, &r->h, err);
}

/* Move the cursor to the member asked for: 1 found (its header just read, *e), 0 not in the shard, -1 the
 * shard failed (closed: the next read reopens it). Entries from STOP on are not looked at (-1: none). */
static int seek_member(pf_archive_reader *r, const char *name, int64_t entry, int64_t stop, struct archive_entry **e,
                       pf_err *err)
{
    while (!r->at_end && (stop < 0 || r->h.next < stop)) {
        const char *n = NULL;
        int64_t idx = r->h.next;
        int rc = pf_arc_next(&r->h, r->shard, e, &n, err);
        if (rc < 0) {
            pf_arc_close(&r->h);
            return -1;
        }
        if (rc == 0) {
            r->at_end = 1;
            break;
        }
        if (entry >= 0 && idx == entry) {
            if (!n || strcmp(n, name)) {
                char d[256];
                return pf_errf(err, "%s#%s: the shard changed since it was listed: member %lld is now named '%s'",
                               r->shard, name, (long long)entry, n ? pf_arc_display(n, d, sizeof d) : "?");
            }
            return 1;
        }
        if (entry < 0 && n && !strcmp(n, name))
            return 1;
    }
    return 0;
}

int pf_archive_read_member(pf_archive_reader *r, const char *name, int64_t entry, size_t max, uint8_t **data,
                           size_t *len, pf_err *err)
{
    *data = NULL;
    *len = 0;
    char why[200];
    if (pf_archive_check_name(name, why, sizeof why)) {
        char d[256];
        return pf_errf(err, "%s#%s: %s", r->shard, pf_arc_display(name, d, sizeof d), why);
    }
    if (from_last(r, name, entry, max, data, len))
        return 0;
    forget_last(r);
    if (!r->h.a && reopen(r, err))
        return -1;
    struct archive_entry *e = NULL;
    int64_t started = r->h.next;
    int found;
    if (entry >= 0) {
        if (entry < r->h.next && reopen(r, err))
            return -1;
        found = seek_member(r, name, entry, entry + 1, &e, err);
    } else {
        /* by name: on from the cursor, then from the start up to where the cursor was */
        found = seek_member(r, name, -1, -1, &e, err);
        if (found == 0 && started > 0) {
            if (reopen(r, err))
                return -1;
            found = seek_member(r, name, -1, started, &e, err);
        }
    }
    if (found < 0)
        return -1;
    if (found == 0)
        return entry >= 0 ? pf_errf(err, "%s#%s: not in the shard (it ends before member %lld): the shard changed "
                                    "since it was listed", r->shard, name, (long long)entry)
                          : pf_errf(err, "%s#%s: no member of that name in the shard", r->shard, name);
    const char *refusal = pf_arc_entry_refusal(e, max, why, sizeof why);
    if (refusal)
        return pf_errf(err, "%s#%s: %s", r->shard, name, refusal);
    int refused = 0;
    int64_t hint = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
    if (pf_arc_read_data(&r->h, r->shard, name, hint, max, data, len, &refused, err)) {
        if (!refused)
            pf_arc_close(&r->h);   /* a read error leaves libarchive's state unknown: start over next time */
        return -1;
    }
    int64_t at = r->h.next - 1;
    if ((r->last_name = strdup(name)) && (r->last_data = malloc(*len ? *len : 1))) {
        memcpy(r->last_data, *data, *len);
        r->last_len = *len;
        r->last_entry = at;
    } else {
        forget_last(r);   /* no copy: the next read of it reopens, nothing worse */
    }
    return 0;
}

int pf_archive_read_one(const char *shard, const char *name, size_t max, uint8_t **data, size_t *len, pf_err *err)
{
    pf_archive_reader *r;
    *data = NULL;
    *len = 0;
    if (pf_archive_reader_open(shard, &r, err))
        return -1;
    int rc = pf_archive_read_member(r, name, -1, max, data, len, err);
    pf_archive_reader_close(r);
    return rc;
}

int pf_arc_reader_open_memory(const void *buf, size_t len, const char *label, pf_archive_reader **out, pf_err *err)
{
    pf_arc_src src = {label, buf, len};
    return reader_new(&src, out, err);
}
