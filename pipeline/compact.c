/* compact.c - superseded error records out of a finished output (compact.h). Three reads of the output
 * (results' identities, then, when there are error records, the superseded errors' byte ranges, then the
 * copy, when there is something to drop), one keyset of 16 bytes per result in memory, like the sink's own
 * dedupe set. */
#include "pipeline/compact.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/log.h"
#include "pipeline/jobstore.h"
#include "pipeline/keyset.h"
#include "pipeline/outfile.h"
#include "pipeline/record.h"

typedef struct range {
    int64_t start, end;
} range;

typedef struct cctx {
    pf_keyset ok;        /* identities (settings + path) that have a result record */
    int pass;            /* 1: collect results; 2: collect superseded errors */
    range *drop;
    size_t n_drop, cap_drop;
    int64_t n_err;       /* error records seen in pass 1: none (the usual job) and pass 2 is skipped */
    const char *path;
    pf_err *err;
} cctx;

/* What a success supersedes: the same path with the same task and settings, i.e. the key's settings half
 * ("<content>-<settings>"), not its content half: an unreadable or broken file that was fixed has other bytes
 * (another content hash) and is still the item whose error the new result replaces. */
static XXH128_hash_t ident(const char *key, const char *path)
{
    XXH3_state_t *st = XXH3_createState();
    XXH128_hash_t h = {0, 0};
    if (!st)
        return h;
    const char *dash = strrchr(key, '-');
    key = dash ? dash + 1 : key;
    XXH3_128bits_reset(st);
    XXH3_128bits_update(st, key, strlen(key) + 1);
    XXH3_128bits_update(st, path, strlen(path));
    h = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    return h;
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
        XXH128_hash_t h = ident(key, path);
        if (c->pass == 1 && !is_err && pf_keyset_add(&c->ok, h.high64, h.low64) < 0)
            rc = pf_errf(c->err, "%s: out of memory", c->path);
        if (c->pass == 2 && is_err && pf_keyset_has(&c->ok, h.high64, h.low64)) {
            if (c->n_drop == c->cap_drop) {
                size_t nc = c->cap_drop ? 2 * c->cap_drop : 64;
                range *nv = realloc(c->drop, nc * sizeof *nv);
                if (!nv)
                    rc = pf_errf(c->err, "%s: out of memory", c->path);
                else
                    c->drop = nv, c->cap_drop = nc;
            }
            if (!rc)
                c->drop[c->n_drop++] = (range){(int64_t)end - (int64_t)n, (int64_t)end};
        }
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
        for (ssize_t w = 0; w < r;) {
            ssize_t k = write(out, buf + w, (size_t)(r - w));
            if (k < 0)
                return pf_errf(err, "%s.compact: write: %s", path, strerror(errno));
            w += k;
        }
        from += r;
    }
    return 0;
}

int pf_output_compact(const char *out, const char *db, int64_t *removed, pf_err *err)
{
    *removed = 0;
    int fd = -1;
    if (pf_outfile_open(out, &fd, err))
        return -1;
    cctx c = {.path = out, .err = err};
    pf_keyset_init(&c.ok);
    off_t good = 0;
    int rc = 0;
    /* pass 2 only when there are error records to look at: a job without errors reads its output once */
    for (c.pass = 1; !rc && c.pass <= 2 && (c.pass == 1 || c.n_err > 0); c.pass++)
        rc = pf_outfile_scan(fd, out, PF_OUT_MAX_LINE, on_line, &c, &good, err);
    pf_keyset_free(&c.ok);
    if (rc || c.n_drop == 0)
        goto done;
    /* the job store first: its offsets then never point past where the records will be (see compact.h) */
    if (db) {
        pf_jobstore *js = NULL;
        if (pf_jobstore_open(db, &js, err) || pf_jobstore_begin(js, err)) {
            pf_jobstore_close(js);
            rc = -1;
            goto done;
        }
        for (size_t i = c.n_drop; !rc && i > 0; i--)   /* last first: earlier thresholds stay in old offsets */
            rc = pf_jobstore_shift_out_end(js, c.drop[i - 1].end, c.drop[i - 1].end - c.drop[i - 1].start, err);
        if (!rc)
            rc = pf_jobstore_commit(js, err);
        pf_jobstore_close(js);
        if (rc)
            goto done;
    }
    size_t tl = strlen(out) + 16;
    char *tmp = malloc(tl);
    if (!tmp) {
        rc = pf_errf(err, "out of memory");
        goto done;
    }
    snprintf(tmp, tl, "%s.compact", out);
    int o = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (o < 0) {
        rc = pf_errf(err, "%s: %s", tmp, strerror(errno));
        free(tmp);
        goto done;
    }
    int64_t at = 0;
    for (size_t i = 0; !rc && i < c.n_drop; i++) {
        rc = copy_range(fd, o, at, c.drop[i].start, out, err);
        at = c.drop[i].end;
    }
    if (!rc)
        rc = copy_range(fd, o, at, (int64_t)good, out, err);
    if (!rc && fsync(o) != 0)
        rc = pf_errf(err, "%s: fsync: %s", tmp, strerror(errno));
    if (close(o) != 0 && !rc)
        rc = pf_errf(err, "%s: close: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, out) != 0)
        rc = pf_errf(err, "%s: rename to %s: %s", tmp, out, strerror(errno));
    if (rc)
        unlink(tmp);
    free(tmp);
    if (!rc)
        *removed = (int64_t)c.n_drop;
done:
    free(c.drop);
    close(fd);
    return rc;
}
