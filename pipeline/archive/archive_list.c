/* archive_list.c - listing a shard's image members for the scan, one WebDataset sample at a time: the
 * sample's siblings (.json, .txt) may come before or after its images, so the images of a key are held
 * (at most PF_ARCHIVE_MAX_GROUP_IMAGES names, and at most 4 x max_sibling_bytes of siblings) until the key
 * changes. A refused member is reported at once: it needs no siblings, and holding it would let a hostile
 * shard grow the held sample without bound. Duplicate names are found with a set of 128-bit name hashes
 * (16 bytes per image member, bounded by max_entries). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <xxhash.h>

#include "base/log.h"
#include "pipeline/archive/archive_internal.h"

typedef struct held {
    char *name;
    int64_t entry, size;
} held;

typedef struct group {
    char *key;             /* NULL: empty */
    held img[PF_ARCHIVE_MAX_GROUP_IMAGES];
    size_t n_img;
    json_t *sib;           /* siblings carried: extension -> content */
    size_t sib_bytes;
    char *extra;           /* sib dumped, once the group is complete */
} group;

/* An open-addressing set of 128-bit hashes (0,0 = empty slot). */
typedef struct nameset {
    XXH128_hash_t *slot;
    size_t cap, n;
} nameset;

struct pf_archive_list {
    pf_arc_src src;
    char *shard;
    pf_arc h;
    pf_archive_limits lim;
    group fill, out;       /* the sample being read, the one being handed out */
    size_t out_pos;
    int eof;               /* no more entries: hand out what is held, then end */
    int failed;            /* ... then fail with err_msg */
    pf_err fail_err;
    nameset names;
    /* a refused member, handed out once the sample before it is (refusals come from here) */
    char *cur_name, *cur_key, *cur_refused;
    pf_archive_member refused;
    int has_refused;
    size_t n_images, n_siblings, n_skipped;
};

static void group_clear(group *g)
{
    for (size_t i = 0; i < g->n_img; i++)
        free(g->img[i].name);
    free(g->key);
    json_decref(g->sib);
    free(g->extra);
    memset(g, 0, sizeof *g);
}

/* 1 added, 0 already there, -1 out of memory */
static int nameset_add(nameset *s, const char *name)
{
    XXH128_hash_t h = XXH3_128bits(name, strlen(name));
    if (h.low64 == 0 && h.high64 == 0)
        h.low64 = 1;
    if (2 * (s->n + 1) > s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 1024;
        XXH128_hash_t *ns = calloc(nc, sizeof *ns);
        if (!ns)
            return -1;
        for (size_t i = 0; i < s->cap; i++)
            if (s->slot[i].low64 || s->slot[i].high64) {
                size_t j = (size_t)s->slot[i].low64 & (nc - 1);
                while (ns[j].low64 || ns[j].high64)
                    j = (j + 1) & (nc - 1);
                ns[j] = s->slot[i];
            }
        free(s->slot);
        s->slot = ns;
        s->cap = nc;
    }
    size_t j = (size_t)h.low64 & (s->cap - 1);
    while (s->slot[j].low64 || s->slot[j].high64) {
        if (XXH128_isEqual(s->slot[j], h))
            return 0;
        j = (j + 1) & (s->cap - 1);
    }
    s->slot[j] = h;
    s->n++;
    return 1;
}

static int list_new(const pf_arc_src *src, const pf_archive_limits *lim, pf_archive_list **out, pf_err *err)
{
    *out = NULL;
    pf_archive_list *l = calloc(1, sizeof *l);
    if (!l || !(l->shard = strdup(src->path))) {
        free(l);
        return pf_errf(err, "%s: out of memory", src->path);
    }
    l->src = *src;
    l->src.path = l->shard;
    l->lim = *lim;
    if (!l->lim.max_entries)
        l->lim.max_entries = PF_ARCHIVE_MAX_ENTRIES;
    if (!l->lim.max_sibling_bytes)
        l->lim.max_sibling_bytes = PF_ARCHIVE_MAX_SIBLING;
    l->h.fd = -1;
    if (pf_arc_open(&l->src, &l->h, err)) {
        pf_archive_list_close(l);
        return -1;
    }
    *out = l;
    return 0;
}

int pf_archive_list_open(const char *shard, const pf_archive_limits *lim, pf_archive_list **out, pf_err *err)
{
    pf_arc_src src = {shard, NULL, 0};
    return list_new(&src, lim, out, err);
}

void pf_archive_list_close(pf_archive_list *l)
{
    if (!l)
        return;
    pf_arc_close(&l->h);
    group_clear(&l->fill);
    group_clear(&l->out);
    free(l->names.slot);
    free(l->cur_name);
    free(l->cur_key);
    free(l->cur_refused);
    free(l->shard);
    free(l);
}

void pf_archive_list_counts(const pf_archive_list *l, size_t *images, size_t *siblings, size_t *skipped)
{
    *images = l->n_images;
    *siblings = l->n_siblings;
    *skipped = l->n_skipped;
}

/* A refused member is handed out next, after the sample sealed before it (see the top of the file). */
static int refuse(pf_archive_list *l, const char *name, int64_t entry,
                  int64_t size, const char *why, int dup, pf_err *err)
{
    char d[PF_ARCHIVE_MAX_NAME + 64];
    free(l->cur_name);
    free(l->cur_key);
    free(l->cur_refused);
    /* shown, not raw: a refused name may not be UTF-8 (records are JSON) */
    l->cur_name = strdup(pf_arc_display(name, d, sizeof d));
    size_t dk = 0;
    l->cur_key = l->cur_name && pf_archive_wds_key(l->cur_name, &dk) ? strndup(l->cur_name, dk) : strdup("");
    l->cur_refused = strdup(why);
    if (!l->cur_name || !l->cur_key || !l->cur_refused)
        return pf_errf(err, "%s: out of memory", l->shard);
    l->refused = (pf_archive_member){l->cur_name, l->cur_key, entry, size, l->cur_refused, dup, NULL};
    l->has_refused = 1;
    l->n_images++;
    return 0;
}

/* A .json / .txt member of the sample being filled: its content under its extension. Problems are logged and
 * the sibling left out; the images still go. */
static void add_sibling(pf_archive_list *l, struct archive_entry *e, const char *name, const char *ext)
{
    char why[200], d[512];
    const char *bad = pf_archive_check_name(name, why, sizeof why)
                          ? why
                          : pf_arc_entry_refusal(e, l->lim.max_sibling_bytes, why, sizeof why);
    if (!bad && l->fill.sib_bytes + (size_t)(archive_entry_size_is_set(e) ? archive_entry_size(e) : 0) >
                    4 * l->lim.max_sibling_bytes)
        bad = "the sample's .json/.txt members together are over 4 times the sibling limit";
    if (!bad && json_object_size(l->fill.sib) >= PF_ARCHIVE_MAX_GROUP_IMAGES)
        bad = "more than 64 .json/.txt members under one key";
    uint8_t *data = NULL;
    size_t len = 0;
    int refused = 0;
    pf_err e2;
    if (!bad) {
        int64_t hint = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
        if (pf_arc_read_data(&l->h, l->shard, name, hint, l->lim.max_sibling_bytes, &data, &len, &refused, &e2)) {
            pf_warn(LOG_ARC, "%s (not carried into the records)", e2.msg);
            return;   /* a read error: the next header read reports the shard's state */
        }
    }
    json_t *v = NULL;
    if (!bad) {
        const char *last = strrchr(ext, '.');
        last = last ? last + 1 : ext;
        if (!strcasecmp(last, "json")) {
            json_error_t je;
            /* no NUL in strings: the meta is parsed again without JSON_ALLOW_NUL (record.c) */
            v = json_loadb((const char *)data, len, JSON_DECODE_ANY, &je);
            if (!v) {
                snprintf(why, sizeof why, "not JSON: %s (line %d)", je.text, je.line);
                bad = why;
            }
        } else if (memchr(data, 0, len)) {
            bad = "a NUL byte in the text";
        } else if (!(v = json_stringn((const char *)data, len))) {
            bad = "not UTF-8 text";
        }
    }
    free(data);
    if (bad) {
        pf_warn(LOG_ARC, "%s#%s: %s (not carried into the records)", l->shard, pf_arc_display(name, d, sizeof d), bad);
        return;
    }
    if (!l->fill.sib)
        l->fill.sib = json_object();
    if (!l->fill.sib || json_object_set_new(l->fill.sib, ext, v)) {
        pf_warn(LOG_ARC, "%s#%s: out of memory (not carried into the records)", l->shard, name);
        return;
    }
    l->fill.sib_bytes += len;
    l->n_siblings++;
}

/* The sample being filled is complete: it is handed out next. */
static void seal(pf_archive_list *l)
{
    group_clear(&l->out);
    l->out = l->fill;
    memset(&l->fill, 0, sizeof l->fill);
    l->out_pos = 0;
    if (l->out.sib)
        l->out.extra = json_dumps(l->out.sib, JSON_COMPACT);
}

/* One entry into the samples, skipped, or refused (handed out next): 0, or -1 on error. */
static int take_entry(pf_archive_list *l, struct archive_entry *e, const char *name, pf_err *err)
{
    int64_t entry = l->h.next - 1;
    if (!name) {
        l->n_skipped++;
        pf_warn(LOG_ARC, "%s: member %lld: its name cannot be read (skipped)", l->shard, (long long)entry);
        return 0;
    }
    if (archive_entry_filetype(e) == AE_IFDIR && !archive_entry_hardlink(e))
        return 0;   /* folders structure the names; they are not members to annotate */
    size_t key_len = 0;
    const char *ext = pf_archive_wds_key(name, &key_len);
    int image = ext && pf_archive_is_image_name(name);
    if (!image) {
        const char *last = ext ? strrchr(ext, '.') : NULL;
        last = last ? last + 1 : ext;
        int sibling = last && (!strcasecmp(last, "json") || !strcasecmp(last, "txt"));
        if (!sibling) {
            l->n_skipped++;
            return 0;
        }
    }
    /* a new key ends the sample being filled */
    if (l->fill.key && (strlen(l->fill.key) != key_len || strncmp(l->fill.key, name, key_len)))
        seal(l);
    if (!l->fill.key && !(l->fill.key = strndup(name, key_len)))
        return pf_errf(err, "%s: out of memory", l->shard);
    if (!image) {
        add_sibling(l, e, name, ext);
        return 0;
    }
    int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
    char why[256];
    /* every image name goes into the set, refused or not: the second of a name is always its own item */
    int added = nameset_add(&l->names, name), dup = added == 0;
    if (added < 0)
        return pf_errf(err, "%s: out of memory", l->shard);
    const char *r = NULL;
    if (dup)
        snprintf(why, sizeof why, "duplicate member name (an earlier member of the shard has it; that one is the "
                 "item)");
    else if (pf_archive_check_name(name, why, sizeof why) == 0) {
        r = pf_arc_entry_refusal(e, l->lim.max_member_bytes, why, sizeof why);
        if (r && r != why)
            snprintf(why, sizeof why, "%s", r);
        else if (!r && l->fill.n_img == PF_ARCHIVE_MAX_GROUP_IMAGES)
            snprintf(why, sizeof why, "more than %d image members under the key '%.100s'", PF_ARCHIVE_MAX_GROUP_IMAGES,
                     l->fill.key);
        else if (!r) {
            held *hd = &l->fill.img[l->fill.n_img];
            if (!(hd->name = strdup(name)))
                return pf_errf(err, "%s: out of memory", l->shard);
            hd->entry = entry;
            hd->size = size;
            l->fill.n_img++;
            return 0;
        }
    }
    return refuse(l, name, entry, size, why, dup, err);
}

int pf_archive_list_next(pf_archive_list *l, pf_archive_member *m, pf_err *err)
{
    for (;;) {
        if (l->out_pos < l->out.n_img) {
            held *hd = &l->out.img[l->out_pos++];
            *m = (pf_archive_member){hd->name, l->out.key, hd->entry, hd->size, NULL, 0, l->out.extra};
            l->n_images++;
            return 1;
        }
        if (l->has_refused) {
            l->has_refused = 0;
            *m = l->refused;
            return 1;
        }
        if (l->eof) {
            if (l->fill.key) {
                seal(l);
                continue;
            }
            if (l->failed) {
                *err = l->fail_err;
                return -1;
            }
            return 0;
        }
        struct archive_entry *e = NULL;
        const char *name = NULL;
        int rc = pf_arc_next(&l->h, l->shard, &e, &name, &l->fail_err);
        if (rc <= 0) {
            l->eof = 1;
            l->failed = rc < 0;
            continue;
        }
        if (l->h.next > (int64_t)l->lim.max_entries) {
            l->eof = l->failed = 1;
            pf_errf(&l->fail_err, "%s: more than %zu members: the rest of the shard is not read", l->shard,
                    l->lim.max_entries);
            continue;
        }
        if (archive_filter_count(l->h.a) > 1 && archive_entry_size_is_set(e) &&
            (uint64_t)archive_entry_size(e) > PF_ARCHIVE_MAX_SKIP) {
            /* skipping it means inflating it all, at most 1 byte per 1000 read: stop here instead */
            char d[256];
            l->eof = l->failed = 1;
            pf_errf(&l->fail_err, "%s: member %lld '%s' declares %lld bytes in a compressed shard: not inflated "
                    "past (a compression bomb?); the rest of the shard is not read", l->shard,
                    (long long)(l->h.next - 1), name ? pf_arc_display(name, d, sizeof d) : "?",
                    (long long)archive_entry_size(e));
            continue;
        }
        rc = take_entry(l, e, name, err);
        if (rc)
            return rc;
    }
}

long pf_archive_walk_memory(const void *buf, size_t len, const pf_archive_limits *lim,
                            void (*cb)(const pf_archive_member *m, const uint8_t *data, size_t n, void *arg),
                            void *arg, pf_err *err)
{
    pf_arc_src src = {"memory.tar", buf, len};
    pf_archive_list *l;
    if (list_new(&src, lim, &l, err))
        return -1;
    pf_archive_reader *r = NULL;
    long n = 0;
    int rc;
    pf_archive_member m;
    while ((rc = pf_archive_list_next(l, &m, err)) == 1) {
        n++;
        uint8_t *data = NULL;
        size_t dl = 0;
        pf_err re;
        if (!m.refused && (r || pf_arc_reader_open_memory(buf, len, "memory.tar", &r, &re) == 0) &&
            pf_archive_read_member(r, m.name, m.entry, lim->max_member_bytes, &data, &dl, &re) == 0) {
            cb(&m, data, dl, arg);
            free(data);
        } else {
            cb(&m, NULL, 0, arg);
        }
    }
    pf_archive_reader_close(r);
    pf_archive_list_close(l);
    return rc < 0 ? -1 : n;
}
