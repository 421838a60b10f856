/* producer_peers.c - the peers on the producer's ROUTER socket (workers and sinks, known by routing id):
 * hello/welcome, credit, heartbeats, and the dispatch of every incoming message to its handler. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "pipeline/producer_internal.h"

int pf_prod_peer_find(prod *p, const uint8_t *ident, size_t len)
{
    for (int i = 0; i < p->n_peers; i++)
        if (p->peers[i].used && p->peers[i].ident_len == len && memcmp(p->peers[i].ident, ident, len) == 0)
            return i;
    return -1;
}

const char *pf_prod_role_name(int role)
{
    return role == ROLE_PRE ? "preprocess" : role == ROLE_INF ? "inference" : "sink";
}

int pf_prod_count_role(const prod *p, int role)
{
    int n = 0;
    for (int i = 0; i < p->n_peers; i++)
        n += p->peers[i].used && p->peers[i].role == role;
    return n;
}

int pf_prod_count_working(const prod *p, int role, int *quarantined)
{
    int n = 0;
    for (int i = 0; i < p->n_peers; i++)
        if (p->peers[i].used && p->peers[i].role == role) {
            n += !p->peers[i].quarantined;
            *quarantined += p->peers[i].quarantined != 0;
        }
    return n;
}

int pf_prod_send_to(prod *p, int pi, pf_msg *m)
{
    pf_err e = {{0}};
    m->instance = p->instance;
    /* Notes waiting for a sink go before anything else sent to it: one connection keeps its order. */
    if (m->type != PF_MSG_LEASE && m->type != PF_MSG_UNLEASE && p->peers[pi].role == ROLE_SINK)
        pf_prod_notes_flush_sink(p, pi);
    else if (m->type == PF_MSG_ITEM)   /* and every lease note before an item (dispatch sends them first) */
        pf_prod_notes_flush(p);
    if (pf_wire_send(p->sock, p->peers[pi].ident, p->peers[pi].ident_len, m, &e)) {
        pf_debug(LOG, "to %s (%s): %s", p->peers[pi].name, pf_msg_type_name(m->type), e.msg);
        return -1;
    }
    return 0;
}

static void send_reset(prod *p, const uint8_t *ident, size_t len)
{
    pf_msg m;
    pf_msg_init(&m, PF_MSG_RESET);
    m.instance = p->instance;
    pf_err e = {{0}};
    pf_wire_send(p->sock, ident, len, &m, &e);
}

void pf_prod_send_heartbeats(prod *p, int finished)
{
    for (int i = 0; i < p->n_peers; i++) {
        if (!p->peers[i].used)
            continue;
        pf_msg m;
        pf_msg_init(&m, PF_MSG_HB);
        m.finished = finished;
        m.n_total = p->total ? p->total : 1;
        m.n_done = p->done;
        m.n_failed = p->failed;
        pf_prod_send_to(p, i, &m);
    }
}

/* With CURVE, the sink's role is bound to a key: any allowed worker could otherwise say hello as the sink
 * and have its acknowledgements believed. The key is --curve-sink-public, by default our own (the sink on
 * the hub shares the producer's pair). */
static int may_be_sink(prod *p, pf_wire_in *in)
{
    if (!p->zap || !p->o->sec)
        return 1;   /* no CURVE on our socket: no key to tell peers apart (ipc, inproc, --insecure) */
    pf_peer_desc d;
    pf_peer_describe(&in->frame, NULL, 0, &d);
    const char *want = p->o->sec->sink_public[0] ? p->o->sec->sink_public : p->o->sec->server.public_key;
    if (strcmp(d.key, want) == 0)
        return 1;
    pf_prod_refuse(p, in, -1, "not_sink_key", "hello as the sink with a key that is not the sink's (%s; set "
                   "--curve-sink-public on the producer if the sink has a key pair of its own)", want);
    return 0;
}

static void on_hello(prod *p, pf_wire_in *in, double now)
{
    pf_msg *m = &in->msg;
    if (!strcmp(m->role, "sink") && !may_be_sink(p, in))
        return;
    int pi = pf_prod_peer_find(p, in->ident, in->ident_len);
    if (pi < 0) {
        for (pi = 0; pi < p->n_peers && p->peers[pi].used; pi++)
            ;
        if (pi == p->n_peers) {
            peer *np = realloc(p->peers, (size_t)(p->n_peers + 1) * sizeof *np);
            if (!np)
                return;
            p->peers = np;
            p->n_peers++;
        }
        peer *w = &p->peers[pi];
        memset(w, 0, sizeof *w);
        w->used = 1;
        memcpy(w->ident, in->ident, in->ident_len);
        w->ident_len = in->ident_len;
        snprintf(w->name, sizeof w->name, "%s", m->name);
        pf_peer_desc d;
        pf_peer_describe(&in->frame, NULL, 0, &d);
        snprintf(w->key, sizeof w->key, "%s", d.key);
        w->role = !strcmp(m->role, "preprocess") ? ROLE_PRE : !strcmp(m->role, "inference") ? ROLE_INF : ROLE_SINK;
        pf_info(LOG, "%s %s joined (%s, pid %lld, capacity %lld)", pf_prod_role_name(w->role), w->name,
                m->host ? m->host : "?", (long long)m->pid, (long long)m->capacity);
        p->joined[w->role]++;
        pf_metric_add(p->m.joined[w->role], 1);
        if (w->role == ROLE_SINK) {   /* results may be waiting in worker queues for this sink: give it time */
            for (size_t i = 0; i < p->n_fl; i++)
                if (p->fl[i]->stage == FL_ACK)
                    p->fl[i]->deadline = now + p->o->ack_timeout_s;
        }
    }
    /* A repeated hello keeps the worker's leases (it still holds them) but restarts its credit: it
     * re-announces its free slots after our welcome. */
    p->peers[pi].credit = 0;
    p->peers[pi].last_seen = now;
    if (p->peers[pi].role == ROLE_SINK)
        pf_prod_on_sink_output(p, m);
    p->peers[pi].leases = p->peers[pi].role == ROLE_SINK && m->leases;
    p->peers[pi].batch_notes = p->peers[pi].leases && m->batch_notes;
    p->peers[pi].data_frames = p->peers[pi].role != ROLE_SINK && m->data_frames;
    pf_prod_notes_reset(p, pi);   /* what waited for it is moot: it forgets every lease at our welcome */
    pf_prod_hello_policy(p, pi, m);
    pf_msg w;
    pf_msg_init(&w, PF_MSG_WELCOME);
    w.leases = p->peers[pi].leases;   /* "I will tell you every lease" */
    /* Hellos queue up in a worker's socket while no producer listens; each gets a welcome. The worker takes
     * only the welcome of its latest hello (the number echoed here) and announces its free slots once. */
    w.hello_seq = m->hello_seq;
    w.batch = p->peers[pi].role != ROLE_SINK;   /* "send start/done for several items in one message" */
    w.data_frames = p->peers[pi].role != ROLE_SINK;   /* "send tensors with a data frame" */
    pf_prod_send_to(p, pi, &w);
    if (p->peers[pi].role == ROLE_SINK)   /* a (re)joining sink must learn the leases it may see records for */
        pf_prod_note_all_leases(p, pi);
}

void pf_prod_add_credit(prod *p, int pi, const pf_msg *m)
{
    if (p->peers[pi].quarantined)
        return;
    if (m->instance && strcmp(m->instance, p->instance) == 0) {
        p->peers[pi].credit += m->credit;
        if (p->peers[pi].credit > (1 << 20))
            p->peers[pi].credit = 1 << 20;
    }
}

static void on_start(prod *p, pf_wire_in *in, int pi)
{
    flight *f = pf_prod_flight_find(p, in->msg.id);
    if (pf_prod_from_holder(p, in, pi, f, FL_PRE, FL_INF))
        f->started = 1;
}

/* Present entry I of a batched start/done as the single message that would carry it (id, key, and for a
 * `done` the error reason), so that every entry meets exactly the checks of a single message: its holder,
 * its key, a refusal logged and counted per entry. */
static void batch_entry(pf_msg *m, size_t i)
{
    m->id = m->items[i].id;
    m->key = m->items[i].key;
    m->stage = m->items[i].stage;
    m->message = m->items[i].message;
}

/* A batched start/done. Its credit (one per item for a `done`) is counted once, as a single message's is:
 * before the holder checks, which only say what happens to the item. */
static void on_batch(prod *p, pf_wire_in *in, int pi, double now)
{
    pf_msg *m = &in->msg;
    int64_t credit = m->credit;
    if (m->type == PF_MSG_DONE)
        pf_prod_add_credit(p, pi, m);
    m->credit = 0;
    for (size_t i = 0; i < m->n_items; i++) {
        batch_entry(m, i);
        if (m->type == PF_MSG_START)
            on_start(p, in, pi);
        else
            pf_prod_on_done(p, pi, in, now);
    }
    m->id = -1;
    m->key = m->stage = m->message = NULL;
    m->credit = credit;
}

void pf_prod_handle(prod *p, pf_wire_in *in, double now)
{
    pf_msg *m = &in->msg;
    if (m->type == PF_MSG_HELLO) {
        on_hello(p, in, now);
        return;
    }
    int pi = pf_prod_peer_find(p, in->ident, in->ident_len);
    if (pi < 0) {
        if (m->type != PF_MSG_BYE)
            send_reset(p, in->ident, in->ident_len);
        /* Nothing from a peer that did not say hello acts on the job (a sink or worker of a previous run
         * says hello after the reset; what it finished meanwhile is redone, and deduplicated by the sink).
         * What it addressed to a previous run of ours (its `instance`) is what a restart leaves queued: counted
         * as refused (previous_run), not warned about. */
        int judged = m->type == PF_MSG_ACK || m->type == PF_MSG_TENSOR || m->type == PF_MSG_DONE ||
                     m->type == PF_MSG_NACK;
        if (judged && m->instance && m->instance[0] && strcmp(m->instance, p->instance) != 0) {
            size_t n = m->n_items ? m->n_items : 1;
            for (size_t i = 0; i < n; i++)
                pf_refuse_count(&p->refused, pf_msg_type_name(m->type), "previous_run");
            pf_debug(LOG, "dropped a %s addressed to our previous run %s", pf_msg_type_name(m->type), m->instance);
        } else if (m->type == PF_MSG_DONE && m->n_items) {   /* counted per item, as single messages would be */
            for (size_t i = 0; i < m->n_items; i++)
                pf_prod_refuse(p, in, -1, "unknown_peer", "item %lld from a peer that did not say hello",
                               (long long)m->items[i].id);
        } else if (judged) {
            pf_prod_refuse(p, in, -1, "unknown_peer", "from a peer that did not say hello");
        }
        return;
    }
    p->peers[pi].last_seen = now;
    switch (m->type) {
    case PF_MSG_HB:
        break;
    case PF_MSG_CREDIT:
        pf_prod_add_credit(p, pi, m);
        break;
    case PF_MSG_TENSOR:
        pf_prod_on_tensor(p, pi, in);
        break;
    case PF_MSG_DONE:
        if (m->n_items)
            on_batch(p, in, pi, now);
        else
            pf_prod_on_done(p, pi, in, now);
        break;
    case PF_MSG_NACK:
        pf_prod_on_nack(p, pi, in);
        break;
    case PF_MSG_ACK:
        pf_prod_on_ack(p, pi, in);
        break;
    case PF_MSG_START:
        if (m->n_items)
            on_batch(p, in, pi, now);
        else
            on_start(p, in, pi);
        break;
    case PF_MSG_BYE:
        pf_info(LOG, "%s %s left", pf_prod_role_name(p->peers[pi].role), p->peers[pi].name);
        pf_prod_peer_gone(p, pi, "left");
        break;
    default:
        pf_debug(LOG, "ignoring %s from %s", pf_msg_type_name(m->type), p->peers[pi].name);
    }
}
