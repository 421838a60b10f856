/* sink_auth.c - who may say what (PROTOCOL.md, "Who may say what"), the sink's half: a worker's record is
 * written only when the producer leased its item to that worker.
 *
 * The producer sends a `lease` note (item id, key, path, stage, holder's routing id and CURVE key) before
 * it hands an item out, and an `unlease` note when the lease ends without a record; a sink that says so in its
 * hello gets the notes of one turn of the producer's loop in one `notes` message, applied here in order. The sink keeps the notes
 * in a table by item id and takes a record from a worker only when: a lease is known for the record's id; the
 * key and path are the lease's (so only the job's paths get in); the sender's routing id (workers name their
 * sink connection) and CURVE key are the holder's; and the kind fits the stage (a preprocess holder may only
 * report the item failed: an error record of stage "preprocess"; an inference holder sends the result or an
 * error record of stage "inference"). A taken record ends the lease (one record per lease), so the table
 * holds at most the items in flight at the producer.
 *
 * The note and the record travel on two connections, so a record may overtake its note (a preprocess worker
 * failing at once, an inference result coming before the note that moved the lease from the preprocess
 * worker to its sender, a sink that just (re)joined and is being told the leases): a record whose verdict a
 * note could still change (no lease, another holder, another stage) is parked (at most PARK_MAX records,
 * PARK_BYTES bytes, PARK_S seconds) and judged again when a note for its item arrives. Everything refused is counted and logged by proto/refusal.c. The producer's own error
 * records come on the sink's connection to the producer and are taken as they are.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "base/file.h"
#include "base/log.h"
#include "pipeline/sink_internal.h"
#include "proto/refusal.h"
#include "proto/wire.h"

#define PARK_MAX 4096
#define PARK_BYTES ((size_t)64 << 20)
#define PARK_S 5.0

enum { ST_PRE = 1, ST_INF = 2 };

#define HOLDER_INLINE 64   /* a holder's routing id (a worker's name) kept in the lease itself up to this size */
#define SPARE_MAX 4096     /* ended leases kept for the next ones: no malloc and free per item */

typedef struct lease {
    int64_t id;
    char key[PF_KEY_LEN + 1];
    int stage;
    char *path;            /* malloc'd; kept when the next note of the item names the same path */
    char *holder;          /* holder_buf, or malloc'd when longer */
    char holder_buf[HOLDER_INLINE];
    char holder_key[64];
    struct lease *next;
} lease;

/* A record that came before its item's lease note: the message as decoded (with its frame, which it may point
 * into) and who sent it. */
typedef struct parked {
    zmq_msg_t frame;
    pf_msg msg;
    size_t bytes;          /* what it holds: the frame and the decoded strings */
    int64_t id;
    double t;
    char holder[1100];
    pf_peer_desc from;
    struct parked *next;
} parked;

struct pf_sink_auth {
    lease **b;             /* buckets by id, power of two */
    size_t nb, n;
    parked *park, *park_tail;
    size_t n_park, park_bytes;
    /* parked records by id % PARK_MAX: a note for an item with none parked skips the scan of the parking (a
     * rogue filling the parking must not make every note cost PARK_MAX steps) */
    uint16_t park_count[PARK_MAX];
    pf_refusals refused;
    int producer_notes;    /* the producer that welcomed us sends lease notes */
    int said_old_producer;
    pf_metric *m_leases, *m_parked, *m_waited;
    int64_t waited;
    lease *spare;          /* ended leases, for reuse (at most SPARE_MAX) */
    size_t n_spare;
};

static size_t slot(const pf_sink_auth *a, int64_t id)
{
    uint64_t h = (uint64_t)id * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & (a->nb - 1);
}

int pf_sink_auth_init(sink *s)
{
    pf_sink_auth *a = calloc(1, sizeof *a);
    if (!a)
        return -1;
    a->nb = 1024;
    a->b = calloc(a->nb, sizeof *a->b);
    if (!a->b) {
        free(a);
        return -1;
    }
    pf_refusals_init(&a->refused, LOG);
    a->m_leases = pf_gauge("paliflow_sink_leases", "", "Leases the producer told the sink of that await a record");
    a->m_parked = pf_gauge("paliflow_sink_parked_records", "",
                           "Records held until the producer's note of their lease arrives");
    a->m_waited = pf_counter("paliflow_sink_parked_total", "",
                             "Records that came before the producer's note of their lease and waited for it");
    s->auth = a;
    return 0;
}

static void lease_free(pf_sink_auth *a, lease *l)
{
    free(l->path);
    if (l->holder != l->holder_buf)
        free(l->holder);
    if (a->n_spare >= SPARE_MAX) {
        free(l);
        return;
    }
    memset(l, 0, sizeof *l);
    l->next = a->spare;
    a->spare = l;
    a->n_spare++;
}

/* A blank lease: a spare one, or a new one (NULL: out of memory). */
static lease *lease_new(pf_sink_auth *a)
{
    lease *l = a->spare;
    if (!l)
        return calloc(1, sizeof *l);
    a->spare = l->next;
    a->n_spare--;
    l->next = NULL;
    return l;
}

static void forget_all(pf_sink_auth *a)
{
    for (size_t i = 0; i < a->nb; i++)
        while (a->b[i]) {
            lease *l = a->b[i];
            a->b[i] = l->next;
            lease_free(a, l);
        }
    a->n = 0;
}

static void park_drop(pf_sink_auth *a, parked *k)
{
    a->park_count[(uint64_t)k->id % PARK_MAX]--;
    a->park_bytes -= k->bytes;
    a->n_park--;
    pf_msg_free(&k->msg);
    zmq_msg_close(&k->frame);
    free(k);
}

void pf_sink_auth_free(sink *s)
{
    pf_sink_auth *a = s->auth;
    if (!a)
        return;
    forget_all(a);
    free(a->b);
    while (a->spare) {
        lease *l = a->spare;
        a->spare = l->next;
        free(l);
    }
    while (a->park) {
        parked *k = a->park;
        a->park = k->next;
        park_drop(a, k);
    }
    free(a);
    s->auth = NULL;
}

static lease **find(pf_sink_auth *a, int64_t id)
{
    lease **pp = &a->b[slot(a, id)];
    while (*pp && (*pp)->id != id)
        pp = &(*pp)->next;
    return pp;
}

static void grow(pf_sink_auth *a)
{
    size_t nb = a->nb * 2;
    lease **b = calloc(nb, sizeof *b);
    if (!b)
        return;   /* longer chains, still correct */
    lease **old = a->b;
    size_t onb = a->nb;
    a->b = b;
    a->nb = nb;
    for (size_t i = 0; i < onb; i++)
        while (old[i]) {
            lease *l = old[i];
            old[i] = l->next;
            lease **pp = &a->b[slot(a, l->id)];
            l->next = *pp;
            *pp = l;
        }
    free(old);
}

static void remove_lease(pf_sink_auth *a, lease **pp)
{
    lease *l = *pp;
    *pp = l->next;
    lease_free(a, l);
    a->n--;
}

/* Who sent a record: its routing id (printable), always; its CURVE key when a lease names one, and the
 * description for a log line (address and all) only when the record is refused or parked: neither is looked
 * up in the frame's metadata for every record written. */
typedef struct sender {
    char holder[1100];
    const char *key;       /* NULL until looked up */
    pf_peer_desc *from;    /* NULL until described */
    pf_wire_in *in;        /* to look them up from (NULL when KEY and FROM are set) */
    pf_peer_desc buf;
} sender;

/* The CURVE key its ZAP handler admitted ("" without CURVE). */
static const char *sender_key(sender *w)
{
    if (!w->key) {
        const char *user = zmq_msg_gets(&w->in->frame, "User-Id");
        w->key = user ? user : "";
    }
    return w->key;
}

/* The verdict on record M from W: NULL when it may be written, else the refusal's reason (*detail says more).
 * *PP gets the lease's slot. */
static const char *judge(pf_sink_auth *a, const pf_msg *m, sender *w, lease ***pp, char *detail, size_t cap)
{
    *pp = find(a, m->id);
    lease *l = **pp;
    if (!l) {
        snprintf(detail, cap, "no lease for item %lld (path %s)", (long long)m->id, m->path);
        return "no_lease";
    }
    if (strcmp(l->key, m->key) != 0) {
        snprintf(detail, cap, "item %lld has key %s, the record says %s", (long long)m->id, l->key, m->key);
        return "wrong_key";
    }
    if (strcmp(l->path, m->path) != 0) {
        snprintf(detail, cap, "item %lld is %s, the record says %s", (long long)m->id, l->path, m->path);
        return "wrong_path";
    }
    if (strcmp(l->holder, w->holder) != 0 || (l->holder_key[0] && strcmp(l->holder_key, sender_key(w)) != 0)) {
        snprintf(detail, cap, "item %lld (%s) is leased to %s%s%s", (long long)m->id, l->path, l->holder,
                 l->holder_key[0] ? " with key " : "", l->holder_key);
        return "not_holder";
    }
    const char *want = l->stage == ST_PRE ? "preprocess" : "inference";
    if ((m->type == PF_MSG_RESULT && l->stage != ST_INF) ||
        (m->type == PF_MSG_ERROR && (!m->stage || strcmp(m->stage, want) != 0))) {
        snprintf(detail, cap, "item %lld (%s) is leased for %s, the record is %s%s%s", (long long)m->id, l->path,
                 want, m->type == PF_MSG_RESULT ? "a result" : "an error record of stage ",
                 m->type == PF_MSG_RESULT ? "" : m->stage ? m->stage : "?", "");
        return "wrong_stage";
    }
    return NULL;
}

/* Verdicts a later lease note may change (the note is still on its way): the record waits for it. A wrong
 * key or path never becomes right: an item's id, key and path do not change. */
static int may_change(const char *why)
{
    return !strcmp(why, "no_lease") || !strcmp(why, "no_notes") || !strcmp(why, "not_holder") ||
           !strcmp(why, "wrong_stage");
}

static const pf_peer_desc *describe(sender *w)
{
    if (!w->from) {
        pf_peer_describe(&w->in->frame, w->in->ident, w->in->ident_len, &w->buf);
        w->from = &w->buf;
    }
    return w->from;
}

/* Write record M (from W) if its lease allows, else refuse it, unless CAN_WAIT and the verdict may change.
 * 1: done with (written or refused), 0: let it wait. */
static int settle(sink *s, const pf_msg *m, sender *w, int can_wait)
{
    pf_sink_auth *a = s->auth;
    lease **pp = NULL;
    char detail[1200];
    const char *why = "no_notes";
    if (a->producer_notes)
        why = judge(a, m, w, &pp, detail, sizeof detail);
    else
        snprintf(detail, sizeof detail, "the producer sends no lease notes (an older paliflow, or not welcomed yet), "
                 "so no record from a worker can be checked");
    if (!why) {
        remove_lease(a, pp);   /* one record per lease: a second one from the same holder is refused */
        pf_sink_on_record(s, m);
        return 1;
    }
    if (can_wait && may_change(why))
        return 0;
    pf_refuse(&a->refused, pf_msg_type_name(m->type), why, describe(w), "%s", detail);
    return 1;
}

/* A parked record's sender, for settle. */
static sender parked_sender(const parked *k)
{
    sender w;
    snprintf(w.holder, sizeof w.holder, "%s", k->holder);
    w.key = k->from.key;
    w.from = (pf_peer_desc *)&k->from;
    w.in = NULL;
    return w;
}

/* Keep the record IN (its frame and decoded message, moved here) until a note for its item arrives or PARK_S
 * pass. -1: no room. */
static int park(pf_sink_auth *a, pf_wire_in *in, sender *w, double now)
{
    /* the frame, and the decoded message's strings: at most twice the frame (pf_msg_decode's arena) */
    size_t len = 3 * zmq_msg_size(&in->frame) + 16;
    int64_t id = in->msg.id;
    if (a->n_park >= PARK_MAX || a->park_bytes + len > PARK_BYTES)
        return -1;
    parked *k = calloc(1, sizeof *k);
    if (!k)
        return -1;
    k->from = *describe(w);   /* from the frame's metadata: before the frame moves */
    zmq_msg_init(&k->frame);
    zmq_msg_move(&k->frame, &in->frame);
    k->msg = in->msg;   /* its strings and arrays are the parked copy's now; its bin fields point into FRAME */
    memset(&in->msg, 0, sizeof in->msg);
    k->bytes = len;
    k->id = id;
    k->t = now;
    snprintf(k->holder, sizeof k->holder, "%s", w->holder);
    if (a->park_tail)
        a->park_tail->next = k;
    else
        a->park = k;
    a->park_tail = k;
    a->n_park++;
    a->park_bytes += len;
    a->park_count[(uint64_t)id % PARK_MAX]++;   /* at most PARK_MAX parked: no overflow */
    a->waited++;
    pf_metric_add(a->m_waited, 1);
    return 0;
}

void pf_sink_auth_worker_record(sink *s, pf_wire_in *in, double now)
{
    sender w = {.in = in};
    pf_wire_ident_str(in->ident, in->ident_len, w.holder, sizeof w.holder);
    if (settle(s, &in->msg, &w, 1))
        return;
    /* Its note was sent before the item, but may have come in after the producer's connection was read in this
     * turn (the workers' drain takes a while): read it before making the record wait. */
    if (pf_sink_read_producer(s, now) && settle(s, &in->msg, &w, 1))
        return;
    if (park(s->auth, in, &w, now))
        settle(s, &in->msg, &w, 0);   /* no room to wait: the verdict stands */
}

void pf_sink_auth_producer_record(sink *s, const pf_msg *m)
{
    pf_sink_auth *a = s->auth;
    lease **pp = find(a, m->id);
    if (*pp && !strcmp((*pp)->key, m->key))   /* the producer ended the item itself (gave up on it) */
        remove_lease(a, pp);
    pf_sink_on_record(s, m);
}

/* A lease note for item ID arrived: its parked records get their verdict again; those it does not settle
 * (the note was about another holder, more notes may follow) keep waiting. */
static void unpark(sink *s, int64_t id)
{
    pf_sink_auth *a = s->auth;
    parked **pp = &a->park, *prev = NULL;
    while (*pp) {
        parked *k = *pp;
        int done = 0;
        if (k->id == id) {
            sender w = parked_sender(k);
            done = settle(s, &k->msg, &w, 1);
        }
        if (!done) {
            prev = k;
            pp = &k->next;
            continue;
        }
        *pp = k->next;
        if (a->park_tail == k)
            a->park_tail = prev;
        park_drop(a, k);
    }
}

/* SRC into DST[CAP], cut to fit (a key or CURVE key longer than ours then never matches a record's). */
static void copy_cut(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* The lease's path: kept when the note names the one it has (an item's second note, for its inference). */
static int set_path(lease *l, const char *path)
{
    if (l->path && !strcmp(l->path, path))
        return 0;
    char *p = strdup(path);
    if (!p)
        return -1;
    free(l->path);
    l->path = p;
    return 0;
}

static int set_holder(lease *l, const char *holder)
{
    size_t n = strlen(holder);
    char *h = n < HOLDER_INLINE ? l->holder_buf : malloc(n + 1);
    if (!h)
        return -1;
    if (l->holder && l->holder != l->holder_buf)
        free(l->holder);
    memcpy(h, holder, n + 1);
    l->holder = h;
    return 0;
}

/* One note (a lease or an unlease) from the producer. */
static void on_note(sink *s, const pf_note *m)
{
    pf_sink_auth *a = s->auth;
    lease **pp = find(a, m->id);
    if (m->type == PF_MSG_UNLEASE) {
        if (*pp && !strcmp((*pp)->key, m->key))
            remove_lease(a, pp);
        return;
    }
    lease *l = *pp;
    if (!l) {
        l = lease_new(a);
        if (!l) {
            pf_error(LOG, "out of memory noting the lease of item %lld", (long long)m->id);
            return;
        }
        l->id = m->id;
        *pp = l;
        a->n++;
    }
    if (set_path(l, m->path) || set_holder(l, m->holder)) {
        pf_error(LOG, "out of memory noting the lease of item %lld", (long long)m->id);
        remove_lease(a, find(a, m->id));
        return;
    }
    copy_cut(l->key, sizeof l->key, m->key);
    copy_cut(l->holder_key, sizeof l->holder_key, m->holder_key ? m->holder_key : "");
    l->stage = !strcmp(m->stage, "preprocess") ? ST_PRE : ST_INF;
    if (a->n > 2 * a->nb)
        grow(a);
    if (a->park_count[(uint64_t)m->id % PARK_MAX])
        unpark(s, m->id);
}

void pf_sink_auth_on_note(sink *s, const pf_msg *m, double now)
{
    (void)now;
    if (m->type == PF_MSG_NOTES) {   /* in order: an unlease and the next lease of one item may share it */
        for (size_t i = 0; i < m->n_notes; i++)
            on_note(s, &m->notes[i]);
        return;
    }
    pf_note n = {m->type, m->id, m->key, m->path, m->stage, m->holder, m->holder_key};
    on_note(s, &n);
}

void pf_sink_auth_welcomed(sink *s, const pf_msg *welcome, int new_instance)
{
    pf_sink_auth *a = s->auth;
    /* A welcome is followed by the notes of every lease the producer has: start from those only. That drops
     * the leases of another producer run (it requeued their items) and any lease whose end we did not hear
     * of while the producer counted us gone. */
    (void)new_instance;
    forget_all(a);
    a->producer_notes = welcome->leases;
    if (!a->producer_notes && !a->said_old_producer) {
        pf_error(LOG, "producer %s does not send lease notes (an older paliflow): records from workers cannot be "
                 "checked and are refused; upgrade the producer", welcome->instance);
        a->said_old_producer = 1;
    }
}

void pf_sink_auth_tick(sink *s, double now)
{
    pf_sink_auth *a = s->auth;
    while (a->park && now - a->park->t > PARK_S) {   /* oldest first: the list is in arrival order */
        parked *k = a->park;
        a->park = k->next;
        if (!a->park)
            a->park_tail = NULL;
        sender w = parked_sender(k);
        settle(s, &k->msg, &w, 0);
        park_drop(a, k);
    }
    pf_refusals_tick(&a->refused);
    pf_metric_set(a->m_leases, (double)a->n);
    pf_metric_set(a->m_parked, (double)a->n_park);
}

int64_t pf_sink_auth_refused(const sink *s)
{
    return s->auth ? s->auth->refused.total : 0;
}

int64_t pf_sink_auth_waited(const sink *s)
{
    return s->auth ? s->auth->waited : 0;
}
