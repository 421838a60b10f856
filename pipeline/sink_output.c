/* sink_output.c - what the sink does with a record: drop it if the item already has one in the output
 * file (identity: key + path, kept on disk beside the output and caught up from its tail at start:
 * sink_index.h), else add it to the batch;
 * a batch is written with one write and one fdatasync, and only then published and acknowledged, so an
 * acknowledged record is on disk (sink.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "base/file.h"
#include "base/grow.h"
#include "base/log.h"
#include "pipeline/outfile.h"
#include "pipeline/record.h"
#include "pipeline/sink_internal.h"

#define INDEX_COMMIT_S 1.0   /* longest the index lags the synced output */

static void observe_record(sink *s, const pf_msg *m)
{
    double v[PF_TIMINGS_N];
    pf_timings_values(&m->timings, v);
    for (int i = 0; i < PF_TIMINGS_N; i++)
        if (v[i] >= 0)
            pf_metric_observe(s->m.timing[i], v[i]);
    if (m->type == PF_MSG_RESULT) {
        s->tokens += (int64_t)m->n_ids;
        pf_metric_add(s->m.tokens, (double)m->n_ids);
    } else {
        int k = m->stage && !strcmp(m->stage, "producer") ? 0 : m->stage && !strcmp(m->stage, "preprocess") ? 1 : 2;
        pf_metric_add(s->m.errors[k], 1);
    }
}

static int note_kind(pf_sink_index *ix, const char *key, const char *path, int ok, pf_err *err);

#define LOAD_CHUNK 65536   /* identities sorted and inserted together when reading an output back (1 MiB) */

typedef struct load_ctx {
    sink *s;
    int64_t records, bad;
    pf_rec_id *buf;   /* the chunk: random keys inserted in order touch each index page once, not once per key */
    pf_rec_id *cbuf;  /* the same for the content-key identities of --path-only results */
    size_t n, cn;
    pf_err *err;
} load_ctx;

static int load_flush(load_ctx *c)
{
    int rc = pf_sink_index_add_sorted(c->s->index, c->buf, c->n, pf_sink_index_add, c->err) ||
             pf_sink_index_add_sorted(c->s->index, c->cbuf, c->cn, pf_sink_index_add_content, c->err);
    c->n = c->cn = 0;
    return rc ? -1 : 0;
}

/* One line of the existing output: its item goes into the dedupe set. */
static int load_line(const char *line, size_t n, off_t end, void *arg)
{
    (void)end;
    load_ctx *c = arg;
    json_error_t je;
    json_t *j = json_loadb(line, n, 0, &je);
    const char *key = j ? json_string_value(json_object_get(j, "key")) : NULL;
    char *path = NULL; /* the raw bytes (path_b64 when present), as the live identity uses them */
    int rc = 0;
    if (key && pf_record_path(j, &path) == 0) {
        int ok = json_object_get(j, "error") == NULL;
        const char *ck = ok ? json_string_value(json_object_get(j, "content_key")) : NULL;
        /* supersession in file order (an error, then its result); both notes are idempotent */
        c->buf[c->n++] = pf_rec_identity(key, path, ok);
        if (ck)   /* a --path-only result is known by its bytes too (take_identity) */
            c->cbuf[c->cn++] = pf_rec_identity(ck, path, 1);
        if (note_kind(c->s->index, key, path, ok, c->err) || ((c->n == LOAD_CHUNK || c->cn == LOAD_CHUNK) && load_flush(c)))
            rc = -1;
        free(path);
        c->records++;
    } else {
        c->bad++;
    }
    json_decref(j);
    return rc;
}

int pf_sink_load_existing(sink *s, pf_err *err)
{
    load_ctx c = {s, 0, 0, calloc(LOAD_CHUNK, sizeof(pf_rec_id)), calloc(LOAD_CHUNK, sizeof(pf_rec_id)), 0, 0, err};
    int64_t from = 0;
    off_t good = 0;
    double t0 = pf_now();
    int oom = !c.buf || !c.cbuf;
    if (oom || pf_sink_index_open(s->o->out, s->fd, &s->index, &from, err)) {
        free(c.buf);
        free(c.cbuf);
        return oom ? pf_errf(err, "out of memory") : -1;
    }
    /* Only the tail past the index's checkpoint is read: records synced to the output whose index commit a
     * crash cut off (sink_index.h). Bounded lines (outfile.h); a crash mid-write can leave a last line
     * without its '\n' (never acknowledged): it is cut off, so that the next record starts a line of its own. */
    int rc = pf_outfile_scan_from(s->fd, s->o->out, (off_t)from, PF_OUT_MAX_LINE, load_line, &c, &good, err);
    if (!rc)
        rc = load_flush(&c);
    free(c.buf);
    free(c.cbuf);
    if (rc || pf_outfile_cut(s->fd, s->o->out, good, err) || pf_sink_index_commit(s->index, s->fd, (int64_t)good, err))
        return -1;
    if (c.bad)
        pf_warn(LOG, "%s: %lld lines are not records of ours (ignored)", s->o->out, (long long)c.bad);
    s->in_file = pf_sink_index_count(s->index);
    if (s->in_file)
        pf_info(LOG, "%s: %lld records already written (kept; their items will not be written again); %lld bytes "
                "read to catch up its index in %.2f s", s->o->out, (long long)s->in_file,
                (long long)(good - (off_t)from), pf_now() - t0);
    s->out_end = (int64_t)good;
    return 0;
}

static int batch_add(sink *s, pend *p)
{
    if (PF_GROW(s->batch, s->cap_batch, s->n_batch, 1, 64))
        return -1;
    if (s->n_batch == 0)
        s->batch_t0 = pf_now();
    s->batch[s->n_batch++] = *p;
    return 0;
}

static void pend_free(pend *p)
{
    json_decref(p->rec);
    free(p->key);
}

#if JANSSON_VERSION_HEX < 0x020a00
#error "jansson 2.10 or later is needed (json_dumpb)"
#endif

#define LINE_ROOM 4096   /* free room kept at the lines' end: a caption's or a detect record fits in one dump */

/* REC dumped by jansson straight into the batch's lines, with its '\n': no buffer of its own per line and no
 * copy into a write buffer. json_dumpb says how long the dump is when it does not fit (a segment record's
 * masks); the lines then grow and it dumps again. 0, or -1 out of memory (the lines unchanged). */
static int lines_dump(pf_sink_lines *l, const json_t *rec)
{
    if (PF_GROW(l->p, l->cap, l->n, LINE_ROOM, 65536))
        return -1;
    size_t room = l->cap - l->n;
    size_t len = json_dumpb(rec, l->p + l->n, room, JSON_COMPACT);
    if (len == 0)
        return -1;   /* jansson failed (its own allocation) */
    if (len >= room) {   /* too long, with its '\n': what it wrote is cut short */
        if (PF_GROW(l->p, l->cap, l->n, len + 1, 65536))
            return -1;
        if (json_dumpb(rec, l->p + l->n, l->cap - l->n, JSON_COMPACT) != len)
            return -1;
    }
    l->p[l->n + len] = '\n';
    l->n += len + 1;
    return 0;
}

/* What compaction needs: error records by item, and the errors a result superseded (sink_index.h). */
static int note_kind(pf_sink_index *ix, const char *key, const char *path, int ok, pf_err *err)
{
    pf_rec_id ident = pf_rec_supersede_ident(key, path);
    return ok ? (pf_sink_index_note_result(ix, ident, err) < 0 ? -1 : 0) : pf_sink_index_note_error(ix, ident, err);
}


/* The record's line, appended to the batch's lines; the record itself kept for the PUB socket and the views
 * when they take it (built once for all three). -1: out of memory. */
static int add_line(sink *s, const pf_msg *m, pend *p)
{
    size_t at = s->lines.n;
    json_t *rec = pf_record_make(m);
    if (!rec || lines_dump(&s->lines, rec)) {
        json_decref(rec);
        return -1;
    }
    p->len = s->lines.n - at;
    if (s->pub || s->views)
        p->rec = rec;
    else
        json_decref(rec);
    return 0;
}

/* Is the record new? 1 yes (now in the open batch of the index), 0 a duplicate, -1 the index failed. An error
 * record is a duplicate also when the item has a result (an error after a success is dropped).
 *
 * A --path-only record carries two keys: `key` from the file's path, size and time (the producer's), and
 * `content_key` from its bytes (the worker's). A result is known under both: a file only touched between two
 * attempts (same bytes, new time, so a new `key`) is then still a duplicate, while a file whose bytes changed
 * gets its new record. */
static int take_identity(sink *s, const pf_msg *m, int ok, pf_err *err)
{
    const char *ck = m->content_key;
    int r = !ok ? pf_sink_index_has(s->index, pf_rec_identity(m->key, m->path, 1), err) : 0;
    if (r == 0 && ck)
        r = pf_sink_index_has_content(s->index, pf_rec_identity(ck, m->path, 1), err);
    if (r != 0)
        return r < 0 ? -1 : 0;
    int added = pf_sink_index_add(s->index, pf_rec_identity(m->key, m->path, ok), err);
    if (added > 0 && ok && ck && pf_sink_index_add_content(s->index, pf_rec_identity(ck, m->path, 1), err) < 0)
        return -1;
    if (added > 0 && note_kind(s->index, m->key, m->path, ok, err))
        return -1;
    return added;
}

void pf_sink_on_record(sink *s, const pf_msg *m)
{
    int ok = m->type == PF_MSG_RESULT;
    if (s->failed)
        return;
    pend p = {0};
    p.id = m->id;
    p.key = strdup(m->key);
    p.ok = m->type == PF_MSG_RESULT;
    if (!p.key)
        return;
    /* Marked as seen now (in the index's open batch) so a duplicate inside the same batch is caught too; a
     * crash before the batch is synced rolls the mark back with the record, and the item is redone. */
    int added = take_identity(s, m, ok, &s->fail);
    if (added < 0) {   /* the sink stops (sink.c): nothing of this batch is acknowledged, all of it redone */
        s->failed = 1;
        pend_free(&p);
        return;
    }
    if (added == 0) {
        p.is_dup = 1;
        s->dups++;
        pf_debug(LOG, "%s: duplicate record dropped (acknowledged again)", m->path);
    } else {
        observe_record(s, m);
    }
    size_t at = s->lines.n;
    if ((!p.is_dup && add_line(s, m, &p)) || batch_add(s, &p)) {
        /* its identity is in the index's open batch, its line nowhere: stop before that is committed (the
         * batch rolls back, nothing of it was acknowledged, its items are redone) */
        pf_errf(&s->fail, "out of memory for a record of %s", m->path);
        s->failed = 1;
        s->lines.n = at;
        pend_free(&p);
    }
}

/* One write and one fdatasync for the whole batch (duplicates have no line; a batch of only them writes
 * nothing). */
static int write_batch(sink *s, pf_err *err)
{
    size_t total = s->lines.n;   /* the batch's lines, in batch order */
    double t_flush = pf_now();
    if (!total)
        return 0;   /* only duplicates: the index's open batch holds nothing new */
    size_t k = 0;
    for (size_t i = 0; i < s->n_batch; i++) {
        k += s->batch[i].len;
        s->batch[i].end = s->out_end + (int64_t)k;   /* the file is ours alone (locked) and appended to */
    }
    int bad = pf_write_all(s->fd, s->lines.p, total);
    int e = errno;
    if (!bad && s->o->fsync && fdatasync(s->fd) != 0)
        bad = 2, e = errno;
    if (bad) {
        /* take back a partial batch (a full disk) so the file ends with whole lines; the sink stops, and a
         * restart would cut it anyway */
        if (ftruncate(s->fd, (off_t)s->out_end) != 0)
            pf_warn(LOG, "%s: cannot cut the partial batch: %s", s->o->out, strerror(errno));
        pf_sink_index_rollback(s->index);
        return pf_errf(err, "%s: %s failed: %s", s->o->out, bad == 2 ? "fdatasync" : "write", strerror(e));
    }
    s->out_end += (int64_t)total;
    /* The index follows the synced output, never leads it (sink_index.h); committed about once a second, not
     * per batch: each commit rewrites the pages its random keys touched, and a crash only costs the next
     * start a read of the records since the last commit. */
    if (pf_now() - s->index_commit_t >= INDEX_COMMIT_S) {
        if (pf_sink_index_commit(s->index, s->fd, s->out_end, err))
            return -1;
        s->index_commit_t = pf_now();
    }
    pf_metric_add(s->m.batches, 1);
    pf_metric_observe(s->m.fsync_s, pf_now() - t_flush);
    return 0;
}

/* Subscribers get records that are on disk; a slow one loses records (PUB drops), never stalls the sink. */
static void publish(sink *s, const json_t *rec)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pf_record_pack(rec, &sb);
    if (zmq_send(s->pub, sb.data, sb.size, ZMQ_DONTWAIT) < 0)
        pf_debug(LOG, "publish: %s", zmq_strerror(errno));
    msgpack_sbuffer_destroy(&sb);
}

/* The batch's records into the other output forms, synced, before anything is acknowledged: a job reported
 * complete is complete in every form. */
static int apply_views(sink *s, pf_err *err)
{
    if (!s->views)
        return 0;
    json_t **recs = calloc(s->n_batch ? s->n_batch : 1, sizeof *recs);
    if (!recs)
        return pf_errf(err, "out of memory");
    for (size_t i = 0; i < s->n_batch; i++)
        recs[i] = s->batch[i].is_dup ? NULL : s->batch[i].rec;
    int rc = pf_views_apply(s->views, recs, s->n_batch, s->out_end, err);
    free(recs);
    return rc;
}

int pf_sink_flush_batch(sink *s, pf_err *err)
{
    if (s->failed) {   /* the index holds an identity whose line is not in the batch: nothing more is written */
        *err = s->fail;
        return -1;
    }
    if (!s->n_batch)
        return 0;
    if (write_batch(s, err) || apply_views(s, err))
        return -1;
    pf_ack *acks = calloc(s->n_batch, sizeof *acks);
    for (size_t i = 0; i < s->n_batch; i++) {
        pend *p = &s->batch[i];
        if (p->rec && s->pub)
            publish(s, p->rec);
        if (!p->is_dup) {
            s->written++;
            s->in_file++;
            pf_metric_add(s->m.records[p->ok ? 0 : 1], 1);
        } else {
            pf_metric_add(s->m.dups, 1);
        }
        if (acks) {
            acks[i].id = p->id;
            acks[i].key = p->key;
            acks[i].ok = p->ok;
            /* a duplicate's line is somewhere before out_end: that bound errs on the side of redoing it */
            acks[i].end = p->is_dup ? s->out_end : p->end;
        }
    }
    if (acks) {
        pf_msg m;
        pf_msg_init(&m, PF_MSG_ACK);
        m.acks = acks;
        m.n_acks = s->n_batch;
        m.out_records = pf_sink_index_count(s->index);   /* every one of them is on disk now */
        pf_sink_send_prod(s, &m);
        free(acks);
    }
    pf_sink_batch_free(s);
    return 0;
}

#define LINES_KEEP ((size_t)4 << 20)   /* the lines' buffer kept for the next batch up to this size */

void pf_sink_batch_free(sink *s)
{
    for (size_t i = 0; i < s->n_batch; i++)
        pend_free(&s->batch[i]);
    s->n_batch = 0;
    s->lines.n = 0;
    if (s->lines.cap > LINES_KEEP) {   /* a batch of segment records with their masks: not kept for the next */
        free(s->lines.p);
        s->lines = (pf_sink_lines){0};
    }
}

void pf_sink_batch_close(sink *s)
{
    pf_sink_batch_free(s);
    free(s->batch);
    free(s->lines.p);
    s->batch = NULL;
    s->cap_batch = 0;
    s->lines = (pf_sink_lines){0};
}
