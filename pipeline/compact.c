/* compact.c - superseded error records out of a finished output (compact.h).
 *
 * With the sink's record index (the usual case): the index already knows which errors a later result
 * superseded (sink_index.h), so compaction costs nothing when there are none, and otherwise one read of the
 * output with a set of only the superseded items in memory. Without a matching index (an output written by
 * an older paliflow): two reads, one keyset of 16 bytes per result. Then, when there is something to drop,
 * the copy: written beside the output (<out>.compact), locked before it replaces the output (so the lock on
 * the output never lapses), fsync'ed and renamed over it. */
#include "pipeline/compact.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/file.h"
#include "base/log.h"
#include "pipeline/jobstore.h"
#include "pipeline/keyset.h"
#include "pipeline/out_view.h"
#include "pipeline/outfile.h"
#include "pipeline/record.h"

typedef struct range {
    int64_t start, end;
} range;

typedef struct cctx {
    pf_keyset ok;        /* supersede identities that have a result record (or: that are superseded) */
    int pass;            /* 1: collect results; 2: collect superseded errors */
    int indexed;         /* OK holds the index's superseded identities: one pass (2) only */
    range *drop;
    pf_rec_id *ids;      /* the dropped records' identities (for the index) */
    size_t n_drop, cap_drop;
    int64_t n_err;       /* error records seen in pass 1: none (the usual job) and pass 2 is skipped */
    const char *path;
    pf_err *err;
} cctx;

static int add_drop(cctx *c, int64_t start, int64_t end, pf_rec_id id)
{
    if (c->n_drop == c->cap_drop) {
        size_t nc = c->cap_drop ? 2 * c->cap_drop : 64;
        range *nv = realloc(c->drop, nc * sizeof *nv);
        if (nv)
            c->drop = nv;
        pf_rec_id *ni = nv ? realloc(c->ids, nc * sizeof *ni) : NULL;
        if (!ni)
            return pf_errf(c->err, "%s: out of memory", c->path);
        c->ids = ni;
        c->cap_drop = nc;
    }
    c->drop[c->n_drop] = (range){start, end};
    c->ids[c->n_drop++] = id;
    return 0;
}

static int on_line(const char *line, size_t n, off_t end, void *arg)
{
    cctx *c = arg;
    json_t *j = json_loadb(line, n, 0, NULL);
    const char *key = j ? json_string_value(json_object_get(j, "key")) : NULL;
    char *path = NULL;
    int rc = 0;
    if (key && pf_record_path(j, &path) == 0) {
        int is_err = json_object_get(j, "error") != NULL;
        c->n_err += c->pass == 1 && is_err;
        pf_rec_id h = pf_rec_supersede_ident(key, path);
        if (c->pass == 1 && !is_err && pf_keyset_add(&c->ok, h.hi, h.lo) < 0)
            rc = pf_errf(c->err, "%s: out of memory", c->path);
        if (c->pass == 2 && is_err && pf_keyset_has(&c->ok, h.hi, h.lo))
            rc = add_drop(c, (int64_t)end - (int64_t)n, (int64_t)end, pf_rec_identity(key, path, 0));
    }
    free(path);
    json_decref(j);
    return rc;
}

/* Copy FD's bytes [from, to) to OUT. */
static int copy_range(int fd, int out, int64_t from, int64_t to, const char *path, pf_err *err)
{
    char buf[1 << 16];
    while (from < to) {
        size_t want = (size_t)(to - from) < sizeof buf ? (size_t)(to - from) : sizeof buf;
        ssize_t r = pread(fd, buf, want, from);
        if (r <= 0)
            return pf_errf(err, "%s: read: %s", path, r < 0 ? strerror(errno) : "file shrank");
        if (pf_write_all(out, buf, (size_t)r))
            return pf_errf(err, "%s.compact: write: %s", path, strerror(errno));
        from += r;
    }
    return 0;
}

/* The job store first: its offsets then never point past where the records will be (see compact.h). */
static int shift_store(const char *db, const cctx *c, pf_err *err)
{
    pf_jobstore *js = NULL;
    if (pf_jobstore_open(db, &js, err) || pf_jobstore_begin(js, err)) {
        pf_jobstore_close(js);
        return -1;
    }
    int rc = 0;
    for (size_t i = c->n_drop; !rc && i > 0; i--)   /* last first: earlier thresholds stay in old offsets */
        rc = pf_jobstore_shift_out_end(js, c->drop[i - 1].end, c->drop[i - 1].end - c->drop[i - 1].start, err);
    if (!rc)
        rc = pf_jobstore_commit(js, err);
    pf_jobstore_close(js);
    return rc;
}

/* OUT (FD, GOOD bytes) without the ranges C->drop: a new file, locked, synced and renamed over OUT; its fd
 * (read-write, appending) in *NFD. */
static int rewrite(const char *out, int fd, int64_t good, const cctx *c, int *nfd, pf_err *err)
{
    *nfd = -1;
    size_t tl = strlen(out) + 16;
    char *tmp = malloc(tl);
    if (!tmp)
        return pf_errf(err, "out of memory");
    snprintf(tmp, tl, "%s.compact", out);
    int o = open(tmp, O_RDWR | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    int rc = 0;
    if (o < 0 || flock(o, LOCK_EX | LOCK_NB) != 0)
        rc = pf_errf(err, "%s: %s", tmp, strerror(errno));
    int64_t at = 0;
    for (size_t i = 0; !rc && i < c->n_drop; i++) {
        rc = copy_range(fd, o, at, c->drop[i].start, out, err);
        at = c->drop[i].end;
    }
    if (!rc)
        rc = copy_range(fd, o, at, good, out, err);
    if (!rc && fsync(o) != 0)
        rc = pf_errf(err, "%s: fsync: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, out) != 0)
        rc = pf_errf(err, "%s: rename to %s: %s", tmp, out, strerror(errno));
    if (rc) {
        if (o >= 0)
            close(o);
        unlink(tmp);
    } else {
        *nfd = o;
    }
    free(tmp);
    return rc;
}

static int collect_superseded(pf_rec_id id, void *arg)
{
    cctx *c = arg;
    return pf_keyset_add(&c->ok, id.hi, id.lo) < 0 ? pf_errf(c->err, "%s: out of memory", c->path) : 0;
}

int pf_output_compact_indexed(const char *out, int *fd, int64_t *end, pf_sink_index *ix, const char *db,
                              int64_t *removed, pf_err *err)
{
    *removed = 0;
    if (pf_sink_index_superseded(ix) == 0)
        return 0;   /* the usual job: not a byte read */
    cctx c = {.path = out, .err = err, .pass = 2, .indexed = 1};
    pf_keyset_init(&c.ok);
    off_t good = 0;
    int nfd = -1;
    int rc = pf_sink_index_each_superseded(ix, collect_superseded, &c, err);
    if (!rc)
        rc = pf_outfile_scan(*fd, out, PF_OUT_MAX_LINE, on_line, &c, &good, err);
    pf_keyset_free(&c.ok);
    if (!rc && c.n_drop && db)
        rc = shift_store(db, &c, err);
    if (!rc && c.n_drop)
        rc = rewrite(out, *fd, (int64_t)good, &c, &nfd, err);
    if (!rc) {
        int use = nfd >= 0 ? nfd : *fd;
        struct stat st;
        int64_t new_end = fstat(use, &st) == 0 ? (int64_t)st.st_size : (int64_t)good;
        rc = pf_sink_index_compacted(ix, c.ids, c.n_drop, use, new_end, err);
        if (!rc && nfd >= 0)
            rc = pf_views_compacted(out, *end, new_end, err);
        if (nfd >= 0) {   /* the new file is the output now (also if the index could not follow) */
            close(*fd);
            *fd = nfd;
            *end = new_end;
        }
    }
    if (!rc)
        *removed = (int64_t)c.n_drop;
    free(c.drop);
    free(c.ids);
    return rc;
}

/* Without an index that matches the output: two reads, one keyset of 16 bytes per result. */
static int compact_scan_all(const char *out, int fd, const char *db, int64_t *removed, pf_err *err)
{
    cctx c = {.path = out, .err = err};
    pf_keyset_init(&c.ok);
    off_t good = 0;
    int rc = 0, nfd = -1;
    /* pass 2 only when there are error records to look at: a job without errors reads its output once */
    for (c.pass = 1; !rc && c.pass <= 2 && (c.pass == 1 || c.n_err > 0); c.pass++)
        rc = pf_outfile_scan(fd, out, PF_OUT_MAX_LINE, on_line, &c, &good, err);
    pf_keyset_free(&c.ok);
    if (!rc && c.n_drop && db)
        rc = shift_store(db, &c, err);
    if (!rc && c.n_drop)
        rc = rewrite(out, fd, (int64_t)good, &c, &nfd, err);
    if (nfd >= 0) {
        struct stat st;
        rc = pf_views_compacted(out, (int64_t)good, fstat(nfd, &st) == 0 ? (int64_t)st.st_size : -1, err);
        close(nfd);
    }
    if (!rc)
        *removed = (int64_t)c.n_drop;
    free(c.drop);
    free(c.ids);
    return rc;
}

int pf_output_compact(const char *out, const char *db, int64_t *removed, pf_err *err)
{
    *removed = 0;
    int fd = -1;
    if (pf_outfile_open(out, &fd, err))
        return -1;
    struct stat st;
    pf_sink_index *ix = NULL;
    int64_t from = -1;
    int rc;
    if (fstat(fd, &st) != 0) {
        rc = pf_errf(err, "%s: %s", out, strerror(errno));
    } else if (pf_sink_index_open(out, fd, &ix, &from, err) == 0 && from == (int64_t)st.st_size) {
        int64_t end = from;
        rc = pf_output_compact_indexed(out, &fd, &end, ix, db, removed, err);
    } else {
        /* an index behind the output (or none): the full scan; the index, emptied by its open when it did
         * not match, is rebuilt by the next sink */
        if (ix)
            pf_sink_index_rollback(ix);
        pf_sink_index_close(ix);
        ix = NULL;
        rc = compact_scan_all(out, fd, db, removed, err);
        /* the index: emptied (did not match) or of the file replaced now (another inode): the next sink
         * rebuilds it from the whole output */
    }
    pf_sink_index_close(ix);
    close(fd);
    return rc;
}
