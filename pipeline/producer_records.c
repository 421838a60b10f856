/* producer_records.c - the end of an item: its record goes to the sink (a worker's result or error, or an
 * error record the producer makes itself), and the item is marked done or failed in the job store only
 * when the sink acknowledges the record (after fdatasync). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "pipeline/producer_internal.h"

/* MSG without the "PATH: " a stage often starts it with ("a.jpg: not an image ..."). The log line and the
 * record name the file anyway, and the job report groups the job store's reasons by their text: with the
 * path left in, every failed file would be a group of its own. */
static const char *without_path(const char *path, const char *msg)
{
    size_t n = strlen(path);
    return !strncmp(msg, path, n) && msg[n] == ':' && msg[n + 1] == ' ' ? msg + n + 2 : msg;
}

/* The job store's reason for a failed item: "stage: message", the message without the item's path. */
static void item_reason(char *buf, size_t cap, const char *path, const char *stage, const char *msg)
{
    snprintf(buf, cap, "%s: %s", stage, without_path(path, msg));
}

/* The one line a failed item gets (WARN: the user acts on it), its path written once. */
static void warn_failed(const char *path, const char *stage, const char *msg)
{
    pf_warn(LOG, "%s: %s (%s failed)", path, without_path(path, msg), stage);
}

void pf_prod_make_error_record(prod *p, flight *f, const char *stage, const char *msg)
{
    pf_prod_flight_drop_tensor(f);
    free(f->err_stage);
    free(f->err_msg);
    f->err_stage = strdup(stage);
    f->err_msg = strdup(msg);
    f->is_error = 1;
    f->stage = FL_SINKQ;
    f->peer = -1;
    pf_metric_add(p->m.errors[!strcmp(stage, "producer") ? 0 : !strcmp(stage, "preprocess") ? 1 : 2], 1);
    warn_failed(f->path, stage, msg);
}

void pf_prod_on_done(prod *p, int pi, pf_wire_in *in, double now)
{
    pf_msg *m = &in->msg;
    pf_prod_add_credit(p, pi, m);
    flight *f = pf_prod_flight_find(p, m->id);
    if (!f && m->stage && m->message && m->key && pf_prod_item_final(p, m->id)) {
        /* The sink acknowledged this error record before its reason arrived here: the job store gets it now
         * (on the ack it was stored with the holder's stage only). Nothing else to do: the item is finished
         * (pf_prod_from_holder would only look that up again and drop the message). */
        char reason[800];
        pf_err e = {{0}};
        pf_item_row row;
        pf_prod_tx(p);
        if (pf_jobstore_get(p->js, m->id, &row, &e)) {   /* its path: left out of the reason, named in the WARN */
            pf_error(LOG, "%s", e.msg);
            return;
        }
        item_reason(reason, sizeof reason, row.path, m->stage, m->message);
        if (pf_jobstore_set_reason(p->js, m->id, m->key, reason, &e))
            pf_error(LOG, "%s", e.msg);
        else
            warn_failed(row.path, m->stage, m->message);
        pf_item_rows_free(&row, 1);
        return;
    }
    if (!pf_prod_from_holder(p, in, pi, f, FL_PRE, FL_INF))
        return;
    pf_metric_observe(p->m.stage_s[pf_prod_stage_index(f->stage)], now - f->t_lease);
    if (m->stage && m->message) {   /* an error record: its reason goes to the job store on the ack */
        free(f->err_stage);
        free(f->err_msg);
        f->err_stage = strdup(m->stage);
        f->err_msg = strdup(m->message);
        warn_failed(f->path, m->stage, m->message);
    }
    if (!m->stage)   /* a success: a worker that failed the item before gets a strike */
        pf_prod_success_elsewhere(p, f, pi);
    pf_prod_flight_drop_tensor(f);
    /* The holder stays known (f->holder): the sink may still take its record, which travels apart. */
    f->stage = FL_ACK;
    f->peer = -1;
    f->started = 0;
    f->deadline = now + p->o->ack_timeout_s;
}

static void finish(prod *p, int64_t id, const char *key, int ok, const char *errmsg, int64_t out_end)
{
    pf_err e = {{0}};
    int changed = 0;
    pf_prod_tx(p);
    if (pf_jobstore_finish_at(p->js, id, key, ok, errmsg, out_end, &changed, &e)) {
        pf_error(LOG, "%s", e.msg);
        return;
    }
    if (changed) {
        if (ok)
            p->done++, p->done_run++;
        else
            p->failed++, p->failed_run++;
        pf_metric_add(p->m.finished[ok ? 0 : 1], 1);
    }
}

/* Whether the sink may hold a record for F now: its holder may have sent one (leased, or `done`), or we
 * sent it ours. Not an item waiting for an inference worker (its preprocess holder delivered a tensor, its
 * last inference lease was revoked). */
static int awaits_ack(const flight *f)
{
    return f->stage == FL_ACK || f->stage == FL_SINKQ || ((f->stage == FL_PRE || f->stage == FL_INF) && f->holder_stage);
}

void pf_prod_on_ack(prod *p, int pi, pf_wire_in *in)
{
    pf_msg *m = &in->msg;
    if (pi < 0 || p->peers[pi].role != ROLE_SINK) {
        /* Only the sink knows what is on disk: anyone else's ack would end items without a record. */
        pf_prod_refuse(p, in, pi, "not_sink", "%zu acknowledgement(s) from a peer that is not the sink%s",
                       m->n_acks, pi < 0 ? " (it never said hello)" : "");
        return;
    }
    if (m->out_records >= 0) {   /* distinct records in the output after this batch (producer_reconcile.c) */
        p->sink_records = m->out_records;
        p->has_sink_records = 1;
    }
    for (size_t i = 0; i < m->n_acks; i++) {
        const pf_ack *a = &m->acks[i];
        flight *f = pf_prod_flight_find(p, a->id);
        if (!f || strcmp(f->key, a->key) != 0 || !awaits_ack(f)) {
            /* A late acknowledgement (the item was redone or finished meanwhile, or belongs to a previous
             * run: it will be redone and deduplicated by the sink) looks the same as a forged one. */
            pf_prod_refuse(p, in, pi, "not_awaiting", "item %lld (key %s) is not waiting for a record%s",
                           (long long)a->id, a->key, f && strcmp(f->key, a->key) != 0 ? " (wrong key)" : "");
            continue;
        }
        {
            /* the job store keeps "stage: reason" of error records (the job report groups them) */
            char reason[800];
            /* No reason yet when the ack overtook the holder's `done`: the holder's stage now, the reason
             * when the `done` comes (pf_prod_on_done) */
            const char *stage = f->err_stage                ? f->err_stage
                                : f->holder_stage == FL_PRE ? "preprocess"
                                : f->holder_stage == FL_INF ? "inference"
                                                            : "unknown";
            item_reason(reason, sizeof reason, f->path, stage, f->err_msg ? f->err_msg : "error record");
            finish(p, a->id, a->key, a->ok, a->ok ? NULL : reason, a->end);
            pf_prod_flight_remove(p, f);
        }
    }
}

/* Producer-made error records go to a live sink; they are acknowledged like any record. */
void pf_prod_flush_sink_queue(prod *p, double now)
{
    int si = -1;
    for (int i = 0; i < p->n_peers; i++)
        if (p->peers[i].used && p->peers[i].role == ROLE_SINK)
            si = i;
    if (si < 0)
        return;
    for (size_t i = 0; i < p->n_fl; i++) {
        flight *f = p->fl[i];
        if (f->stage != FL_SINKQ)
            continue;
        pf_msg m;
        pf_msg_init(&m, PF_MSG_ERROR);
        m.id = f->id;
        m.key = f->key;
        m.path = f->path;
        m.has_task = 1;
        m.task = f->task;
        m.meta = f->meta;
        m.image_size = p->image_size;
        m.stage = f->err_stage;
        m.message = f->err_msg;
        m.w_preprocess = f->w_pre;
        if (pf_prod_send_to(p, si, &m) == 0) {
            f->stage = FL_ACK;
            f->deadline = now + p->o->ack_timeout_s;
        }
    }
}
