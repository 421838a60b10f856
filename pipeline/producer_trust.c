/* producer_trust.c - who may say what (PROTOCOL.md, "Who may say what"), the producer's half.
 *
 * The sink writes a worker's record only for an item the producer leased to that worker, so it must learn
 * each lease: a `lease` note (item id, key, path, stage, holder's routing id and CURVE key) goes to every sink
 * that asked for them BEFORE the item goes out (the note and the worker's record travel on two different
 * connections; the sink parks a record that overtakes its note for a few seconds). An `unlease` note ends the
 * holder's right when its lease ends without a record (tensor delivered, lease lost). The sink forgets a lease
 * once it took a record for it, so it holds no more leases than items are in flight here.
 *
 * A sink that says so in its hello (`batch_notes`) gets the notes of a turn of the loop as one `notes` message
 * (an item costs three notes: lease, unlease, lease): they wait in its batch until an item goes out to a worker
 * (pf_prod_notes_flush first), anything else goes to that sink (pf_prod_send_to), or the batch is full. A sink
 * whose batch cannot be sent is dropped, as one whose note could not be sent was.
 *
 * Refused messages (an ack not from the sink, a tensor/done/nack not from the lease holder, ...) are counted
 * and logged rate-limited by proto/refusal.c.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "pipeline/producer_internal.h"
#include "proto/notes.h"

static const char *stage_name(int stage) { return stage == FL_INF ? "inference" : "preprocess"; }

/* The notes waiting for one sink (by peer slot): sent as one `notes` message before the next item goes out to
 * any worker, before anything else goes to that sink, and at the end of the loop's turn. */
struct pf_prod_sink_notes {
    pf_notes_batch *batch;   /* NULL until its first note */
    int broken;              /* a note could not be sent or kept: the sink is dropped at the next flush */
};

/* Sinks that want lease notes; an older sink (no `leases` in its hello) checks nothing: said once. */
static int wants_notes(prod *p, int si)
{
    const peer *s = &p->peers[si];
    if (!s->used || s->role != ROLE_SINK)
        return 0;
    if (!s->leases && !p->warned_old_sink) {
        pf_warn(LOG, "sink %s does not check records against leases (an older paliflow): any connected peer "
                "can have records written; upgrade it", s->name);
        p->warned_old_sink = 1;
    }
    return s->leases;
}

/* Slot SI's notes (made on first use; the table follows the peer table's growth). NULL: out of memory. */
static struct pf_prod_sink_notes *notes_of(prod *p, int si)
{
    if (si >= p->n_sink_notes) {
        struct pf_prod_sink_notes *t = realloc(p->sink_notes, (size_t)p->n_peers * sizeof *t);
        if (!t)
            return NULL;
        memset(t + p->n_sink_notes, 0, (size_t)(p->n_peers - p->n_sink_notes) * sizeof *t);
        p->sink_notes = t;
        p->n_sink_notes = p->n_peers;
    }
    struct pf_prod_sink_notes *sn = &p->sink_notes[si];
    if (!sn->batch && !(sn->batch = pf_notes_batch_new(p->instance)))
        return NULL;
    return sn;
}

/* Send sink SI's batch now: 0, or -1 (its pipe is gone or full: marked broken). */
static int flush_one(prod *p, int si, struct pf_prod_sink_notes *sn)
{
    if (sn->broken)
        return -1;
    if (!pf_notes_batch_count(sn->batch))
        return 0;
    uint8_t *buf;
    size_t len;
    pf_err e = {{0}};
    if (pf_notes_batch_take(sn->batch, &buf, &len, &e) ||
        pf_wire_send_raw(p->sock, p->peers[si].ident, p->peers[si].ident_len, buf, len, &e)) {
        pf_debug(LOG, "to %s (notes): %s", p->peers[si].name, e.msg);
        sn->broken = 1;
        return -1;
    }
    p->notes_msgs++;
    return 0;
}

/* One note for sink SI: into its batch (sent when full, else at the next flush), or, to a sink that did not say
 * it takes batches (an older build), a message of its own at once. -1: it cannot be told (marked broken). */
static int note_to(prod *p, int si, const pf_note *n)
{
    if (!p->peers[si].batch_notes) {
        pf_msg m;
        pf_msg_init(&m, n->type);
        m.id = n->id;
        m.key = n->key;
        m.path = n->path;
        m.stage = n->stage;
        m.holder = n->holder;
        m.holder_key = n->holder_key;
        if (pf_prod_send_to(p, si, &m) == 0)
            return 0;
        struct pf_prod_sink_notes *sn = notes_of(p, si);
        if (sn)
            sn->broken = 1;
        return -1;
    }
    struct pf_prod_sink_notes *sn = notes_of(p, si);
    pf_err e = {{0}};
    if (!sn) {
        pf_error(LOG, "out of memory for the lease notes of sink %s", p->peers[si].name);
        return -1;   /* without a batch there is nothing to mark: the caller drops it */
    }
    if (sn->broken)
        return -1;
    if (pf_notes_batch_count(sn->batch) >= PF_NOTES_BATCH_MAX && flush_one(p, si, sn))
        return -1;
    if (pf_notes_batch_add(sn->batch, n, &e)) {
        pf_error(LOG, "sink %s: %s", p->peers[si].name, e.msg);
        sn->broken = 1;
        return -1;
    }
    p->notes_n++;
    return 0;
}

static pf_note lease_note(const flight *f)
{
    return (pf_note){PF_MSG_LEASE, f->id, f->key, f->path, stage_name(f->holder_stage), f->holder,
                     f->holder_key[0] ? f->holder_key : NULL};
}

int pf_prod_note_lease(prod *p, flight *f, int pi, int stage)
{
    char id[1100];
    pf_wire_ident_str(p->peers[pi].ident, p->peers[pi].ident_len, id, sizeof id);
    char *h = strdup(id);
    if (!h)
        return -1;
    free(f->holder);
    f->holder = h;
    snprintf(f->holder_key, sizeof f->holder_key, "%s", p->peers[pi].key);
    f->holder_stage = stage;
    pf_note n = lease_note(f);
    int rc = 0;
    for (int si = 0; si < p->n_peers; si++)
        if (wants_notes(p, si) && note_to(p, si, &n)) {
            /* Its pipe is gone or full: until it says hello again (and hears every lease), it gets no work. The
             * item must not go out (the caller keeps it). */
            pf_prod_peer_gone(p, si, "is unreachable");
            rc = -1;
        }
    return rc;
}

void pf_prod_note_unlease(prod *p, flight *f)
{
    if (!f->holder_stage)
        return;
    f->holder_stage = 0;
    free(f->holder);
    f->holder = NULL;
    f->holder_key[0] = '\0';
    pf_note n = {PF_MSG_UNLEASE, f->id, f->key, NULL, NULL, NULL, NULL};
    /* A lost note leaves the old holder able to deliver one record for the item: the record would be real work
     * of a worker we leased it to, so this is no hole; the sink forgets the lease then. A batch that cannot go
     * out drops its sink at the next flush (it may hold leases too). */
    for (int si = 0; si < p->n_peers; si++)
        if (wants_notes(p, si))
            note_to(p, si, &n);
}

void pf_prod_note_all_leases(prod *p, int si)
{
    if (!wants_notes(p, si))
        return;
    size_t n = 0;
    for (size_t i = 0; i < p->n_fl; i++) {
        flight *f = p->fl[i];
        pf_note note = lease_note(f);
        if (f->holder_stage && f->holder && note_to(p, si, &note) == 0)
            n++;
    }
    if (n)
        pf_info(LOG, "told sink %s the %zu leases in flight", p->peers[si].name, n);
}

int pf_prod_notes_flush_sink(prod *p, int si)
{
    if (si >= p->n_sink_notes || !p->sink_notes[si].batch)
        return 0;
    return flush_one(p, si, &p->sink_notes[si]);
}

int pf_prod_notes_flush(prod *p)
{
    int rc = 0;
    for (int si = 0; si < p->n_sink_notes && si < p->n_peers; si++) {
        if (!p->sink_notes[si].batch || !p->peers[si].used || p->peers[si].role != ROLE_SINK)
            continue;
        if (flush_one(p, si, &p->sink_notes[si])) {
            /* Until it says hello again (and hears every lease), it gets no work. */
            pf_prod_peer_gone(p, si, "is unreachable");
            rc = -1;
        }
    }
    return rc;
}

void pf_prod_notes_reset(prod *p, int si)
{
    if (si < p->n_sink_notes) {
        pf_notes_batch_clear(p->sink_notes[si].batch);
        p->sink_notes[si].broken = 0;
    }
}

void pf_prod_notes_free(prod *p)
{
    if (p->notes_msgs)
        pf_info(LOG, "lease notes: %lld batched for sinks, sent in %lld notes messages", (long long)p->notes_n,
                (long long)p->notes_msgs);
    for (int si = 0; si < p->n_sink_notes; si++)
        pf_notes_batch_free(p->sink_notes[si].batch);
    free(p->sink_notes);
    p->sink_notes = NULL;
    p->n_sink_notes = 0;
}

void pf_prod_refuse(prod *p, pf_wire_in *in, int pi, const char *reason, const char *fmt, ...)
{
    pf_peer_desc from;
    pf_peer_describe(&in->frame, in->ident, in->ident_len, &from);
    char detail[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (pi >= 0) {   /* the name it gave in its hello, and the role it claimed */
        char who[sizeof from.text];
        snprintf(who, sizeof who, "%s %.127s, %.1350s", pf_prod_role_name(p->peers[pi].role), p->peers[pi].name,
                 from.text);
        memcpy(from.text, who, sizeof who);
    }
    pf_refuse(&p->refused, pf_msg_type_name(in->msg.type), reason, &from, "%s", detail);
}

/* What F is doing now, for a refusal's log line. */
static const char *flight_state(const prod *p, const flight *f, char *buf, size_t cap)
{
    if ((f->stage == FL_PRE || f->stage == FL_INF) && f->peer >= 0)
        snprintf(buf, cap, "leased to %s worker %s", stage_name(f->stage), p->peers[f->peer].name);
    else
        snprintf(buf, cap, "%s", f->stage == FL_READY  ? "waiting for an inference worker"
                                 : f->stage == FL_ACK   ? "waiting for the sink's acknowledgement"
                                 : f->stage == FL_SINKQ ? "an error record on its way to the sink"
                                                        : "not leased");
    return buf;
}

int pf_prod_from_holder(prod *p, pf_wire_in *in, int pi, flight *f, int stage1, int stage2)
{
    const pf_msg *m = &in->msg;
    char st[300];
    if (!f && pf_prod_item_final(p, m->id)) {
        /* The sink's acknowledgement overtook the holder's `done`: the item is finished, nothing to do. */
        pf_debug(LOG, "%s for item %lld, finished already, dropped", pf_msg_type_name(m->type), (long long)m->id);
        return 0;
    }
    if (!f) {
        /* Also what a worker of a previous producer run, or one whose lease expired and whose item was
         * finished meanwhile, sends: harmless, but indistinguishable from a guess. */
        pf_prod_refuse(p, in, pi, "unknown_item", "item %lld is not in flight", (long long)m->id);
        return 0;
    }
    if (!pf_prod_key_matches(f, m)) {
        pf_prod_refuse(p, in, pi, "wrong_key", "item %lld (%s) has key %s, the message says %s", (long long)m->id,
                       f->path, f->key, m->key ? m->key : "(none)");
        return 0;
    }
    if ((f->stage != stage1 && f->stage != stage2) || f->peer != pi) {
        pf_prod_refuse(p, in, pi, "not_holder", "item %lld (%s) is %s", (long long)m->id, f->path,
                       flight_state(p, f, st, sizeof st));
        return 0;
    }
    return 1;
}
