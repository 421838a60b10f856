/* producer_trust.c - who may say what (PROTOCOL.md, "Who may say what"), the producer's half.
 *
 * The sink writes a worker's record only for an item the producer leased to that worker, so it must learn
 * each lease: a `lease` note (item id, key, path, stage, holder's routing id and CURVE key) goes to every sink
 * that asked for them BEFORE the item goes out (the note and the worker's record travel on two different
 * connections; the sink parks a record that overtakes its note for a few seconds). An `unlease` note ends the
 * holder's right when its lease ends without a record (tensor delivered, lease lost). The sink forgets a lease
 * once it took a record for it, so it holds no more leases than items are in flight here.
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

static const char *stage_name(int stage) { return stage == FL_INF ? "inference" : "preprocess"; }

static int send_note(prod *p, int si, flight *f)
{
    pf_msg m;
    pf_msg_init(&m, PF_MSG_LEASE);
    m.id = f->id;
    m.key = f->key;
    m.path = f->path;
    m.stage = stage_name(f->holder_stage);
    m.holder = f->holder;
    m.holder_key = f->holder_key[0] ? f->holder_key : NULL;
    return pf_prod_send_to(p, si, &m);
}

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
    int rc = 0;
    for (int si = 0; si < p->n_peers; si++)
        if (wants_notes(p, si) && send_note(p, si, f)) {
            /* Its pipe is gone or full: until it says hello again (and hears every lease), it gets no work. */
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
    for (int si = 0; si < p->n_peers; si++) {
        if (!wants_notes(p, si))
            continue;
        pf_msg m;
        pf_msg_init(&m, PF_MSG_UNLEASE);
        m.id = f->id;
        m.key = f->key;
        /* A lost note leaves the old holder able to deliver one record for the item: the record would be
         * real work of a worker we leased it to, so this is no hole; the sink forgets the lease then. */
        pf_prod_send_to(p, si, &m);
    }
}

void pf_prod_note_all_leases(prod *p, int si)
{
    if (!wants_notes(p, si))
        return;
    size_t n = 0;
    for (size_t i = 0; i < p->n_fl; i++) {
        flight *f = p->fl[i];
        if (f->holder_stage && f->holder && send_note(p, si, f) == 0)
            n++;
    }
    if (n)
        pf_info(LOG, "told sink %s the %zu leases in flight", p->peers[si].name, n);
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
