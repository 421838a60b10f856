/* producer_archive.c - tar and zip shards as the producer's input (issue 19; the reading itself is
 * pipeline/archive/archive.h).
 *
 * Scan: a shard found by the scan, named on --list or by a manifest line is listed (headers only; .json/.txt
 * siblings read) in bounded chunks between socket polls, like the folder scan: each image member becomes one
 * item per task. A "SHARD#MEMBER" list or manifest line names one member (not listed: read by name).
 *
 * Identity: canonical shard path (realpath) + "#" + member name, + task + settings, as for files; the member
 * name is the one stored in the shard, so a resumed job (which lists its shards again) finds the same items
 * and the job store adds none twice. Items are added in the shard's order, so the job store hands them out in
 * that order and the dispatch reads a shard once, front to back (one open reader, pf_archive_reader).
 *
 * What a member item carries (its meta, echoed into its record): "archive": {"shard": path as found,
 * "member": name, "key": WebDataset key, "entry": position}, and under "extra" its sample's siblings
 * ("json": parsed, "txt": text), beside a manifest line's own extra columns (which win on a clash). A member
 * the listing refused carries "refused": why; the dispatch turns it into the item's error record without
 * reading (and drops "refused" from the record: its error says it). A shard that cannot be listed to its
 * end gets one item of its own (the shard's path, identity canonical path + "#") whose error record says
 * why: truncated, corrupt, not an archive, too many members. */
#define _GNU_SOURCE   /* asprintf */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/file.h"
#include "base/log.h"
#include "pipeline/archive/archive.h"
#include "pipeline/producer_internal.h"

struct pf_prod_arc {
    /* the shard being listed */
    pf_archive_list *list;
    char *shard, *canon;   /* as found, canonical */
    char *shown;           /* as found, as UTF-8 (records are JSON; the dispatch reads the shard from the path) */
    char **tasks;          /* the task JSON every member gets */
    size_t n_tasks;
    json_t *base;          /* the manifest line's meta ({"id", "extra"}), or NULL */
    /* the dispatch's reader */
    pf_archive_reader *rd;
    int told_path_only;
};

static void listing_end(struct pf_prod_arc *a)
{
    pf_archive_list_close(a->list);
    a->list = NULL;
    free(a->shard);
    free(a->canon);
    free(a->shown);
    a->shown = NULL;
    for (size_t i = 0; i < a->n_tasks; i++)
        free(a->tasks[i]);
    free(a->tasks);
    json_decref(a->base);
    a->shard = a->canon = NULL;
    a->tasks = NULL;
    a->n_tasks = 0;
    a->base = NULL;
}

void pf_prod_archive_free(prod *p)
{
    if (!p->arc)
        return;
    listing_end(p->arc);
    pf_archive_reader_close(p->arc->rd);
    free(p->arc);
    p->arc = NULL;
}

int pf_prod_archive_listing(const prod *p) { return p->arc && p->arc->list; }

static int is_regular(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The meta of one item from a shard: BASE (copied) + "archive": ARC (taken) + siblings EXTRA under "extra"
 * where BASE's extra has no such column. Compact JSON, malloc'd; NULL when out of memory. */
static char *member_meta(const json_t *base, json_t *arc, const char *extra)
{
    json_t *m = base ? json_deep_copy(base) : json_object();
    if (!m || !arc) {
        json_decref(m);
        json_decref(arc);
        return NULL;
    }
    json_object_set_new(m, "archive", arc);
    if (extra) {
        json_t *sib = json_loads(extra, 0, NULL), *ex = json_object_get(m, "extra");
        if (sib && !ex) {
            json_object_set(m, "extra", sib);
        } else if (sib && json_is_object(ex)) {
            const char *k;
            json_t *v;
            json_object_foreach(sib, k, v) if (!json_object_get(ex, k)) json_object_set(ex, k, v);
        }
        json_decref(sib);
    }
    char *s = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    return s;
}

/* One item per task for PATH (as shown) with identity IDENT. */
static int add_items(prod *p, struct pf_prod_arc *a, const char *path, const char *ident, int64_t size,
                     const char *meta, int *added, pf_err *err)
{
    for (size_t i = 0; i < a->n_tasks; i++)
        if (pf_prod_add_one(p, path, ident, size, a->tasks[i], meta, added, err))
            return -1;
    return 0;
}

static char *join(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *s = malloc(na + nb + 2);
    if (s) {
        memcpy(s, a, na);
        s[na] = '#';
        memcpy(s + na + 1, b, nb + 1);
    }
    return s;
}

/* The shard itself as an item whose error record says WHY (it cannot be listed, or not to its end). */
static int add_shard_error(prod *p, struct pf_prod_arc *a, const char *why, int *added, pf_err *err)
{
    char *ident = join(a->canon, "");
    json_t *arc = json_pack("{s:s, s:s}", "shard", a->shown, "refused", why);
    char *meta = member_meta(a->base, arc, NULL);
    int rc = ident && meta ? add_items(p, a, a->shard, ident, -1, meta, added, err) : pf_errf(err, "out of memory");
    free(ident);
    free(meta);
    return rc;
}

static int add_member(prod *p, struct pf_prod_arc *a, const pf_archive_member *m, int *added, pf_err *err)
{
    char *path = join(a->shard, m->name), *ident = join(a->canon, m->name);
    if (m->duplicate && path && ident) {
        /* The first member of the name is the item "SHARD#NAME"; this one needs its own identity (a backslash:
         * no accepted name holds one) and its own record path (compaction keys on path + task). */
        char *np = NULL, *ni = NULL;
        if (asprintf(&np, "%s (duplicate: member %lld)", path, (long long)m->entry) < 0)
            np = NULL;
        if (asprintf(&ni, "%s\\%lld", ident, (long long)m->entry) < 0)
            ni = NULL;
        free(path);
        free(ident);
        path = np;
        ident = ni;
    }
    json_t *arc = json_pack("{s:s, s:s, s:s, s:I}", "shard", a->shown, "member", m->name, "key", m->key, "entry",
                            (json_int_t)m->entry);
    if (arc && m->refused)
        json_object_set_new(arc, "refused", json_string(m->refused));
    char *meta = member_meta(a->base, arc, m->extra);
    int rc = path && ident && meta ? add_items(p, a, path, ident, m->size, meta, added, err)
                                   : pf_errf(err, "out of memory");
    free(path);
    free(ident);
    free(meta);
    return rc;
}

int pf_prod_archive_some(prod *p, double t_end, int *added, pf_err *err)
{
    struct pf_prod_arc *a = p->arc;
    for (int k = 0; a && a->list; k++) {
        pf_archive_member m;
        pf_err le = {{0}};
        int r = pf_archive_list_next(a->list, &m, &le);
        if (r == 1) {
            if (add_member(p, a, &m, added, err))
                return -1;
            if ((k & 63) == 63 && pf_now() > t_end)
                return 0;
            continue;
        }
        size_t ni, ns, nx;
        pf_archive_list_counts(a->list, &ni, &ns, &nx);
        pf_debug(LOG, "%s: %zu image member%s, %zu .json/.txt carried, %zu other member%s skipped", a->shard, ni,
                ni == 1 ? "" : "s", ns, nx, nx == 1 ? "" : "s");
        if (r < 0) {
            pf_warn(LOG, "%s", le.msg);
            if (add_shard_error(p, a, le.msg, added, err))
                return -1;
        }
        listing_end(a);
    }
    return 0;
}

/* Copies of the task list and the base meta for the shard about to be listed. */
static int listing_begin(prod *p, const char *path, const char *const *tasks, size_t n_tasks, const char *meta,
                         pf_err *err)
{
    if (!p->arc && !(p->arc = calloc(1, sizeof *p->arc)))
        return pf_errf(err, "out of memory");
    struct pf_prod_arc *a = p->arc;
    int64_t size;
    a->shard = strdup(path);
    a->shown = pf_archive_printable(path);
    a->canon = pf_prod_canonical(path, &size);
    a->tasks = calloc(n_tasks ? n_tasks : 1, sizeof *a->tasks);
    int oom = !a->shard || !a->shown || !a->canon || !a->tasks;
    for (size_t i = 0; !oom && i < n_tasks; i++)
        oom = !(a->tasks[a->n_tasks++] = strdup(tasks[i]));
    if (!oom && meta && !(a->base = json_loads(meta, 0, NULL)))
        oom = 1;
    if (oom) {
        listing_end(a);
        return pf_errf(err, "out of memory");
    }
    return 0;
}

int pf_prod_archive_add(prod *p, const char *path, const char *const *tasks, size_t n_tasks, const char *meta,
                        int *added, pf_err *err)
{
    size_t sl = 0;
    int shard = pf_archive_is_shard_name(path) && is_regular(path);
    /* "SHARD#MEMBER": a file of that very name is still a file */
    int member = !shard && pf_archive_split_ref(path, &sl) && !is_regular(path);
    if (!shard && !member)
        return 0;
    if (member) {
        char *sp = strndup(path, sl);
        int rc = sp ? listing_begin(p, sp, tasks, n_tasks, meta, err) : pf_errf(err, "out of memory");
        free(sp);
        if (rc)
            return -1;
        struct pf_prod_arc *a = p->arc;
        const char *name = path + sl + 1;
        char *ident = join(a->canon, name);
        json_t *arc = json_pack("{s:s, s:s}", "shard", a->shown, "member", name);
        char *m = member_meta(a->base, arc, NULL);
        rc = ident && m ? add_items(p, a, path, ident, -1, m, added, err) : pf_errf(err, "out of memory");
        free(ident);
        free(m);
        listing_end(a);
        return rc ? -1 : 1;
    }
    if (listing_begin(p, path, tasks, n_tasks, meta, err))
        return -1;
    pf_archive_limits lim = {p->o->max_file_bytes, 0, 0};
    pf_err le = {{0}};
    if (pf_archive_list_open(path, &lim, &p->arc->list, &le)) {
        pf_warn(LOG, "%s", le.msg);
        int rc = add_shard_error(p, p->arc, le.msg, added, err);
        listing_end(p->arc);
        return rc ? -1 : 1;
    }
    return 1;
}

/* The member's bytes for the dispatch: 0 when F is no archive item; 1 read; -1 refused or unreadable (WHY). */
int pf_prod_archive_read(prod *p, flight *f, uint8_t **bytes, size_t *len, char *why, size_t why_cap)
{
    if (!f->meta || !strstr(f->meta, "\"archive\""))
        return 0;
    json_t *m = json_loads(f->meta, 0, NULL);
    json_t *arc = json_object_get(m, "archive");
    const char *shard = json_string_value(json_object_get(arc, "shard"));
    if (!shard) {
        json_decref(m);
        return 0;
    }
    const char *refused = json_string_value(json_object_get(arc, "refused"));
    if (refused) {
        snprintf(why, why_cap, "%s", refused);
        json_object_del(arc, "refused");   /* the record's error says it */
        char *s = json_dumps(m, JSON_COMPACT);
        if (s) {
            free(f->meta);
            f->meta = s;
        }
        json_decref(m);
        return -1;
    }
    const char *member = json_string_value(json_object_get(arc, "member"));
    json_t *je = json_object_get(arc, "entry");
    int64_t entry = json_is_integer(je) ? (int64_t)json_integer_value(je) : -1;
    /* The shard is the item's path before "#MEMBER" (the meta's "shard" is for reading: a name that is not
     * UTF-8 is shown escaped there) */
    size_t pl = strlen(f->path), ml = member ? strlen(member) : 0;
    char *sp = member && pl > ml + 1 && f->path[pl - ml - 1] == '#' && !strcmp(f->path + pl - ml, member)
                   ? strndup(f->path, pl - ml - 1)
                   : strdup(shard);
    struct pf_prod_arc *a = p->arc;
    pf_err e = {{0}};
    int rc = 1;
    if (!sp || (!a && !(a = p->arc = calloc(1, sizeof *p->arc)))) {
        rc = pf_errf(&e, "out of memory");
    } else if (!member) {
        rc = pf_errf(&e, "%s: archive item without a member", f->path);
    } else {
        if (a->rd && strcmp(pf_archive_reader_shard(a->rd), sp)) {
            pf_archive_reader_close(a->rd);
            a->rd = NULL;
        }
        if (!a->rd && pf_archive_reader_open(sp, &a->rd, &e))
            rc = -1;
        else if (pf_archive_read_member(a->rd, member, entry, p->o->max_file_bytes, bytes, len, &e))
            rc = -1;
        if (rc == 1 && p->o->path_only && !a->told_path_only) {
            a->told_path_only = 1;
            pf_info(LOG, "archive members travel as bytes also with --path-only: a worker cannot open a member");
        }
    }
    if (rc < 0) {
        /* the record names the item: the reason without its path */
        const char *msg = !strncmp(e.msg, f->path, pl) && e.msg[pl] == ':' ? e.msg + pl + 2 : e.msg;
        snprintf(why, why_cap, "%s", msg);
    }
    free(sp);
    json_decref(m);
    return rc;
}
