/* producer_leases.c - what happens to a lease: fulfilled (a preprocess worker's tensor), given back
 * (nack), lost with its worker, or expired; a lost lease requeues the item or, after --max-attempts, makes
 * it an error record. Who is charged an attempt is decided here (PROTOCOL.md, "Who is charged"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/log.h"
#include "pipeline/producer_internal.h"

/* A lease was lost (worker died, deadline passed, worker asked to retry). QUIET: no line per item (the
 * caller logs one summary, e.g. for every item of a worker that is gone). */
static void lease_lost(prod *p, flight *f, int count_attempt, const char *why, int quiet)
{
    pf_err e = {{0}};
    const char *stage = f->stage == FL_INF ? "inference" : "preprocess";
    if (count_attempt) {
        f->attempts++;
        pf_prod_note_failure(p, f->peer, f);   /* a strike for it if the item succeeds elsewhere */
    }
    f->peer = -1;
    f->started = 0;
    pf_prod_note_unlease(p, f);   /* a record from the old holder is not taken any more */
    if (count_attempt && f->attempts >= p->o->max_attempts) {
        char msg[700];
        snprintf(msg, sizeof msg, "gave up after %d attempts: %s", f->attempts, why);
        pf_prod_tx(p);
        pf_prod_dbcheck(pf_jobstore_requeue(p->js, f->id, f->attempts, why, &e), &e);
        pf_prod_make_error_record(p, f, stage, msg);
        return;
    }
    p->requeued[pf_prod_stage_index(f->stage)]++;
    pf_metric_add(p->m.retried[pf_prod_stage_index(f->stage)], 1);
    if (!quiet)
        pf_info(LOG, "%s: %s; retrying (attempt %d of %d)", f->path, why, f->attempts + 1, p->o->max_attempts);
    pf_prod_tx(p);
    pf_prod_dbcheck(pf_jobstore_requeue(p->js, f->id, f->attempts, why, &e), &e);
    int keep_tensor = f->stage == FL_INF && f->rgb;   /* the preprocessed image is still good */
    if (keep_tensor)
        f->stage = FL_READY;
    /* A failure that cost an attempt waits out a backoff first (a worker's transient trouble, a file
     * still being written); one that did not (worker gone with the item queued, sink lost it) goes now. */
    if (count_attempt && pf_prod_retry_later(p, f, pf_now()) == 0) {
        if (!keep_tensor)
            pf_prod_flight_remove(p, f);
        return;
    }
    if (keep_tensor && pf_prod_ready_push(p, f, 1) == 0)
        return;
    if (pf_prod_queue_push(p, f->id, f->path, f->attempts, 1))
        pf_error(LOG, "out of memory requeueing %s", f->path);
    pf_prod_flight_remove(p, f);
}

void pf_prod_lease_lost(prod *p, flight *f, int count_attempt, const char *why)
{
    lease_lost(p, f, count_attempt, why, 0);
}

void pf_prod_peer_gone(prod *p, int pi, const char *why)
{
    peer *w = &p->peers[pi];
    int n = 0, n_charged = 0;
    /* If it reported no start at all (the start may die with the process), charge all its items: every
     * worker death must charge something, or a poison item could crash workers forever. */
    int any_started = 0;
    for (size_t i = 0; i < p->n_fl; i++)
        any_started |= p->fl[i]->peer == pi && p->fl[i]->started;
    for (size_t i = 0; i < p->n_fl;) {
        flight *f = p->fl[i];
        if (f->peer == pi && (f->stage == FL_PRE || f->stage == FL_INF)) {
            char reason[300];
            snprintf(reason, sizeof reason, "worker %s %s", w->name, why);
            size_t before = p->n_fl;
            /* Only items the worker had started are suspects (a poison item kills its worker every time);
             * items still waiting in its queue go back without an attempt counted. */
            int charged = f->started || !any_started;
            lease_lost(p, f, charged, reason, 1);
            n++;
            n_charged += charged;
            if (p->n_fl < before)
                continue;   /* f was removed: the same index now holds another flight */
        } else if (f->peer == pi) {
            f->peer = -1;
        }
        i++;
    }
    /* One line per lost worker, not one per item (a worker may hold hundreds) */
    if (w->role == ROLE_SINK)
        pf_warn(LOG, "sink %s %s", w->name, why);
    else
        pf_warn(LOG, "%s worker %s gone (%s): %d items back in the queue (%d of them charged an attempt)",
                pf_prod_role_name(w->role), w->name, why, n, n_charged);
    p->lost[w->role]++;
    pf_metric_add(p->m.lost[w->role], 1);
    w->used = 0;
    if (w->quarantined)
        pf_prod_quarantine_gauge(p, w->role);
}

void pf_prod_expire(prod *p, double now)
{
    for (int i = 0; i < p->n_peers; i++)
        if (p->peers[i].used && now - p->peers[i].last_seen > p->o->hb_timeout) {
            char why[64];
            snprintf(why, sizeof why, "silent for %.1f s", now - p->peers[i].last_seen);
            pf_prod_peer_gone(p, i, why);
        }
    int have_sink = pf_prod_sink_alive(p);
    for (size_t i = 0; i < p->n_fl;) {
        flight *f = p->fl[i];
        size_t before = p->n_fl;
        if ((f->stage == FL_PRE || f->stage == FL_INF) && now > f->deadline) {
            char why[200];
            snprintf(why, sizeof why, "lease expired on worker %s",
                     f->peer >= 0 ? p->peers[f->peer].name : "(gone)");
            p->expired[pf_prod_stage_index(f->stage)]++;
            pf_metric_add(p->m.expired[pf_prod_stage_index(f->stage)], 1);
            pf_prod_lease_lost(p, f, 1, why);
        } else if (f->stage == FL_ACK && have_sink && now > f->deadline) {
            if (f->is_error) {
                f->stage = FL_SINKQ;   /* send the error record again */
            } else {
                /* The record never reached the sink (lost with a crashed sink or worker): redo the item.
                 * Not counted as an attempt: the item did nothing wrong. */
                pf_warn(LOG, "%s: no acknowledgement from the sink in %.0f s; redoing it", f->path,
                        p->o->ack_timeout_s);
                pf_prod_lease_lost(p, f, 0, "no acknowledgement from the sink");
            }
        }
        if (p->n_fl == before)
            i++;
    }
}

void pf_prod_on_tensor(prod *p, int pi, pf_wire_in *in)
{
    pf_msg *m = &in->msg;
    pf_prod_add_credit(p, pi, m);
    flight *f = pf_prod_flight_find(p, m->id);
    if (!pf_prod_from_holder(p, in, pi, f, FL_PRE, FL_PRE))
        return;
    if (m->image_size != p->image_size) {   /* the worker's fault, not the item's: quarantine it */
        char msg[200];
        snprintf(msg, sizeof msg, "it made a %d px image, the job needs %d", m->image_size, p->image_size);
        pf_prod_quarantine(p, pi, msg);
        lease_lost(p, f, 0, msg, 1);
        return;
    }
    /* The received frame is kept as it is (m->data points into it): no copy of the image. From a worker that
     * sends a data frame that frame is the image; from one that does not, the image is inside the map's frame. */
    zmq_msg_t *src = in->data_open ? &in->data : &in->frame;
    size_t off = (size_t)(m->data - (const uint8_t *)zmq_msg_data(src));
    pf_prod_flight_drop_tensor(f);
    zmq_msg_init(&f->frame);
    if (zmq_msg_move(&f->frame, src) != 0) {
        zmq_msg_close(&f->frame);
        pf_prod_lease_lost(p, f, 0, "cannot hold a preprocessed image");
        return;
    }
    f->has_frame = 1;
    f->rgb = (uint8_t *)zmq_msg_data(&f->frame) + off;
    pf_metric_observe(p->m.stage_s[0], pf_now() - f->t_lease);
    f->size = m->image_size;
    f->width = m->width;
    f->height = m->height;
    free(f->w_pre);
    f->w_pre = strdup(m->w_preprocess ? m->w_preprocess : p->peers[pi].name);
    f->tm.preprocess_s = m->timings.preprocess_s;
    snprintf(f->content_key, sizeof f->content_key, "%s",
             m->content_key && strlen(m->content_key) == PF_KEY_LEN ? m->content_key : "");
    if (m->timings.read_s >= 0)
        f->tm.read_s = m->timings.read_s;
    pf_prod_success_elsewhere(p, f, pi);   /* a preprocess worker that failed it before gets a strike */
    f->stage = FL_READY;
    f->peer = -1;
    f->started = 0;
    pf_prod_note_unlease(p, f);   /* its holder delivered: it may not send a record for the item now */
    pf_prod_ready_push(p, f, 0);
}

void pf_prod_on_nack(prod *p, int pi, pf_wire_in *in)
{
    pf_msg *m = &in->msg;
    pf_prod_add_credit(p, pi, m);
    flight *f = pf_prod_flight_find(p, m->id);
    if (!pf_prod_from_holder(p, in, pi, f, FL_PRE, FL_INF))
        return;
    char why[700];
    snprintf(why, sizeof why, "%s worker %s: %s", m->stage ? m->stage : "?", p->peers[pi].name,
             m->message ? m->message : "gave the item back");
    if (m->handback) {
        p->handed_back[pf_prod_stage_index(f->stage)]++;
        pf_metric_add(p->m.handed_back[pf_prod_stage_index(f->stage)], 1);
    }
    /* "Not the item's fault, mine" (no such file on my host...): believed when the producer sees the file;
     * then the worker is quarantined and the item goes back free. The quarantine line names the worker
     * itself: it gets the worker's own words, not WHY's "stage worker NAME: " again. */
    if (!m->handback && m->worker_fault &&
        pf_prod_worker_fault(p, pi, f, m->message ? m->message : "gave the item back")) {
        lease_lost(p, f, 0, why, 1);
        return;
    }
    pf_prod_lease_lost(p, f, !m->handback, why);
}
