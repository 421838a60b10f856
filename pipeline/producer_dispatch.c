/* producer_dispatch.c - handing items out under credit: raw items (file bytes, or the path with
 * --path-only) to preprocess workers while fewer than --max-ready images are in memory, preprocessed
 * items to inference workers, round-robin over the workers with credit. Each hand-out is a lease.
 *
 * The items of a turn are picked first (credit taken, lease noted, message encoded) and sent together by
 * pf_prod_send_picked once every sink has the turn's lease notes: one `notes` message per sink per turn instead
 * of a message per note, and never an item out before its lease note. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "base/file.h"
#include "base/grow.h"
#include "base/log.h"
#include "pipeline/producer_internal.h"

/* --path-only: the item's canonical path (malloc'd; the worker reads it) and its key from its size and
 * modification time (pf_item_stat_key), without opening the file. NULL: the item cannot be done (WHY). */
static char *stat_item(prod *p, flight *f, char *why, size_t why_cap)
{
    struct stat st;
    if (stat(f->path, &st) != 0) {   /* worded as the read without --path-only words it: "cannot open: ..." */
        snprintf(why, why_cap, "cannot stat: %s", strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, why_cap, "not a regular file");
        return NULL;
    }
    if ((uint64_t)st.st_size > (uint64_t)p->o->max_file_bytes) {
        snprintf(why, why_cap, "file too large: %lld bytes (--max-file-mb)", (long long)st.st_size);
        return NULL;
    }
    char *canon = realpath(f->path, NULL);
    if (!canon) {
        snprintf(why, why_cap, "cannot resolve the path: %s", strerror(errno));
        return NULL;
    }
    f->seen = pf_prod_file_seen(&st);
    pf_item_stat_key(canon, f->seen.size, f->seen.mtime_ns, f->settings, f->key);
    return canon;
}

/* Read a whole regular file without blocking on fifos or devices (base/file.h's shared reader), the reason
 * in WHY without the path (the record names it). */
static int read_item(const char *path, size_t max, uint8_t **out, size_t *len, char *why, size_t why_cap)
{
    pf_err e = {{0}};
    pf_file_fault fault;
    char *buf = NULL;
    if (pf_read_file_safe(path, max, &buf, len, &fault, &e)) {
        size_t pl = strlen(path);
        const char *msg = strncmp(e.msg, path, pl) == 0 && e.msg[pl] == ':' ? e.msg + pl + 2 : e.msg;
        int room = why_cap > 20 ? (int)(why_cap - 20) : 0;
        snprintf(why, why_cap, "%.*s%s", room, msg, fault == PF_FILE_TOO_BIG ? " (--max-file-mb)" : "");
        return -1;
    }
    *out = (uint8_t *)buf;
    return 0;
}

static int next_peer(prod *p, int role, int *rr)
{
    int n = p->n_peers;
    for (int k = 0; k < n; k++) {
        int i = (*rr + k) % n;
        if (p->peers[i].used && p->peers[i].role == role && p->peers[i].credit > 0) {
            *rr = (i + 1) % n;
            return i;
        }
    }
    return -1;
}

/* What every item message carries; the caller adds the stage's payload. */
static void item_msg(const prod *p, const flight *f, pf_msg *m)
{
    pf_msg_init(m, PF_MSG_ITEM);
    m->id = f->id;
    m->key = f->key;
    m->path = f->path;
    m->attempt = f->attempts;
    m->has_task = 1;
    m->task = f->task;
    m->meta = f->meta;
}

/* The item went out to worker PI (its credit was taken when it was picked): it is leased to it now, in memory
 * and in the job store. */
static void lease_to(prod *p, flight *f, int pi, int stage, double lease_s, double now)
{
    int k = pf_prod_stage_index(stage);
    f->stage = stage;
    f->peer = pi;
    f->t_lease = now;
    pf_metric_add(p->m.leased[k], 1);
    f->deadline = now + lease_s;
    pf_err e = {{0}};
    pf_prod_tx(p);
    pf_prod_dbcheck(pf_jobstore_lease(p->js, f->id, f->key, k ? "inference" : "preprocess", p->peers[pi].name,
                                      pf_prod_unix_now() + lease_s, &e),
                    &e);
}

/* An item picked for worker PI in this turn: its lease noted (the sinks' notes wait in their batches), its credit
 * taken, its message encoded. It goes out in pf_prod_send_picked, after the notes. */
typedef struct pf_prod_out {
    flight *f;
    int pi, stage;
    uint8_t *buf;
    size_t len;
    zmq_msg_t data;   /* the item's bytes or tensor as the message's data frame, to a worker that takes one */
    int has_data;
} pf_prod_out;

/* Encoded items waiting at most (a raw item carries its file): past it they go out before more are picked. */
#define PICKED_BYTES ((size_t)64 << 20)

/* DATA: the item's bytes or tensor as a data frame (M's data is NULL then), consumed whatever happens; NULL:
 * M's data goes in the map (a worker that did not say data_frames). */
static int pick(prod *p, flight *f, int pi, int stage, pf_msg *m, zmq_msg_t *data)
{
    if (PF_GROW(p->out, p->cap_out, p->n_out, 1, 64)) {
        if (data)
            zmq_msg_close(data);
        return -1;
    }
    pf_err e = {{0}};
    uint8_t *buf;
    size_t len;
    m->instance = p->instance;
    m->data_frame = data != NULL;
    if (pf_msg_encode(m, &buf, &len, &e)) {
        pf_error(LOG, "%s: %s", f->path, e.msg);
        if (data)
            zmq_msg_close(data);
        return -1;
    }
    pf_prod_out *o = &p->out[p->n_out++];
    *o = (pf_prod_out){f, pi, stage, buf, len, .has_data = data != NULL};
    if (data) {
        zmq_msg_init(&o->data);
        zmq_msg_move(&o->data, data);
        len += zmq_msg_size(&o->data);
    }
    p->out_bytes += len;
    p->peers[pi].credit--;   /* taken now: the next pick sees it */
    return 0;
}

/* A ready item's tensor as a data frame, without a copy: the received frame's bytes are shared, not copied
 * (ZeroMQ counts references; the flight keeps its own, the item goes back to the ready queue with its tensor if
 * the lease is lost). A tensor that came inside a map (a worker that sends single frames) is the middle of its
 * frame: a frame of its own is made over those bytes, holding a reference to the received frame until ZeroMQ
 * has sent it. */
static void release_ref(void *data, void *hint)
{
    (void)data;
    zmq_msg_close(hint);
    free(hint);
}

static int tensor_frame(flight *f, size_t len, zmq_msg_t *out)
{
    if (!f->has_frame)
        return -1;
    zmq_msg_init(out);
    if (f->rgb == zmq_msg_data(&f->frame) && zmq_msg_size(&f->frame) == len)
        return zmq_msg_copy(out, &f->frame);
    zmq_msg_t *ref = malloc(sizeof *ref);
    if (!ref)
        return -1;
    zmq_msg_init(ref);
    if (zmq_msg_copy(ref, &f->frame) != 0 || zmq_msg_init_data(out, f->rgb, len, release_ref, ref) != 0) {
        zmq_msg_close(ref);
        free(ref);
        return -1;
    }
    return 0;
}

/* A picked item that did not go out: back in front of its queue, untouched (no attempt counted); the sinks hear
 * that its lease ended. CREDIT: the worker gets its credit back (it never saw the item). */
static void put_back(prod *p, pf_prod_out *o, int credit)
{
    flight *f = o->f;
    free(o->buf);
    o->buf = NULL;
    if (o->has_data)
        zmq_msg_close(&o->data);
    o->has_data = 0;
    if (credit && p->peers[o->pi].used)
        p->peers[o->pi].credit++;
    pf_prod_note_unlease(p, f);
    if (o->stage == FL_INF) {
        pf_prod_ready_push(p, f, 1);
        return;
    }
    pf_prod_queue_push(p, f->id, f->path, f->attempts, 1);
    pf_prod_flight_remove(p, f);
}

int pf_prod_send_picked(prod *p, double now)
{
    /* Every sink hears the leases before the items go out (one `notes` message each for the turn), so that it
     * takes the holders' records; a sink that cannot be told is dropped, and nothing goes out this turn. */
    if (pf_prod_notes_flush(p) || (p->n_out && !pf_prod_sink_alive(p))) {
        for (size_t i = p->n_out; i-- > 0;)   /* backwards: each goes in front, so the order stays */
            put_back(p, &p->out[i], 1);
        p->n_out = p->out_bytes = 0;
        return -1;
    }
    for (size_t i = 0; i < p->n_out; i++) {
        pf_prod_out *o = &p->out[i];
        peer *w = &p->peers[o->pi];
        pf_err e = {{0}};
        if (!w->used) {   /* gone since it was picked (an earlier send to it failed) */
            put_back(p, o, 0);
            continue;
        }
        uint8_t *buf = o->buf;
        int has_data = o->has_data;
        o->buf = NULL;   /* ZeroMQ owns it now, sent or not, and the data frame */
        o->has_data = 0;
        if (pf_wire_send_frames(p->sock, w->ident, w->ident_len, buf, o->len, has_data ? &o->data : NULL, &e)) {
            pf_debug(LOG, "to %s (item): %s", w->name, e.msg);
            put_back(p, o, 0);   /* the worker vanished: the item goes back untouched */
            pf_prod_peer_gone(p, o->pi, "is unreachable");
            continue;
        }
        lease_to(p, o->f, o->pi, o->stage, o->stage == FL_INF ? p->o->inference_lease_s : p->o->preprocess_lease_s,
                 now);
        if (!p->handed_out++)   /* how long a (re)start takes to put work out: the job store's size shows here */
            pf_info(LOG, "first item handed out %.2f s after start", pf_now() - p->t0);
    }
    p->n_out = p->out_bytes = 0;
    return 0;
}

void pf_prod_picked_free(prod *p)
{
    for (size_t i = 0; i < p->n_out; i++) {
        free(p->out[i].buf);
        if (p->out[i].has_data)
            zmq_msg_close(&p->out[i].data);
    }
    free(p->out);
    p->out = NULL;
    p->n_out = p->cap_out = p->out_bytes = 0;
}

/* A file that cannot be read ends its item here: the producer makes its error record (stage "producer"). */
static void unreadable(prod *p, flight *f, const char *why)
{
    pf_item_key("", 0, f->settings, f->key);
    pf_err e = {{0}};
    pf_prod_tx(p);
    pf_prod_dbcheck(pf_jobstore_lease(p->js, f->id, f->key, "producer", "producer", pf_prod_unix_now(), &e), &e);
    pf_prod_make_error_record(p, f, "producer", why);
}

void pf_prod_dispatch_pre(prod *p, double now)
{
    pf_prod_release_delayed(p, now);
    pf_prod_clamp_credit(p, ROLE_PRE);
    size_t in_memory = pf_prod_count_stage(p, FL_PRE) + pf_prod_count_stage(p, FL_READY);
    while (p->raw.n > 0 && in_memory < (size_t)p->o->max_ready) {
        int pi = next_peer(p, ROLE_PRE, &p->rr_pre);
        if (pi < 0)
            return;
        pending *e = pf_prod_queue_pop(p);
        if (pf_prod_flight_find(p, e->id)) {   /* a stale entry: the item is in flight already */
            free(e);
            continue;
        }
        flight *f = pf_prod_flight_new(p, e->id, e->path, e->attempts);
        free(e);
        if (!f) {
            pf_error(LOG, "out of memory");
            return;
        }
        int final = 0;
        pf_prod_flight_load_task(p, f, &final);
        if (final) {   /* a stale entry: finished meanwhile (the job store says; no set of finished ids is kept) */
            pf_prod_flight_remove(p, f);
            continue;
        }
        uint8_t *bytes = NULL;
        size_t len = 0;
        char why[400];
        char *canon = NULL;
        pf_msg m;
        zmq_msg_t data;
        int has_data = 0;
        double t_read = pf_now();
        int member = pf_prod_archive_read(p, f, &bytes, &len, why, sizeof why);   /* 0: not a shard's */
        if (member < 0) {
            unreadable(p, f, why);
            continue;
        }
        if (p->o->path_only && !member) {
            /* Workers read the file (shared storage): the producer only stats it, and the key is made from
             * what the stat says (PROTOCOL.md, `key`); the worker makes the bytes' key. The canonical path
             * goes out: a worker in another folder or on another host reads the same file. */
            if (!(canon = stat_item(p, f, why, sizeof why))) {
                unreadable(p, f, why);
                continue;
            }
            item_msg(p, f, &m);
            m.path_only = 1;
            m.file = canon;
        } else {   /* the bytes travel; a shard's member always does (a worker cannot open it) */
            if (!member && read_item(f->path, p->o->max_file_bytes, &bytes, &len, why, sizeof why)) {
                unreadable(p, f, why);
                continue;
            }
            f->tm.read_s = pf_now() - t_read;
            pf_item_key(bytes, len, f->settings, f->key);
            item_msg(p, f, &m);
            if (p->peers[pi].data_frames) {   /* the bytes read are the data frame: no copy into the map */
                pf_err de = {{0}};
                int bad = pf_wire_msg_own(&data, bytes, len, &de);
                bytes = NULL;   /* the frame's now (or freed) */
                if (bad) {
                    pf_error(LOG, "%s: %s", f->path, de.msg);
                    pf_prod_queue_push(p, f->id, f->path, f->attempts, 1);
                    pf_prod_flight_remove(p, f);
                    return;
                }
                has_data = 1;
            } else {
                m.data = bytes ? bytes : (const uint8_t *)"";
                m.data_len = len;
            }
        }
        m.image_size = p->image_size;
        m.lease_s = p->o->preprocess_lease_s;
        /* The sink learns the lease first (the note goes before the item: pf_prod_send_picked): it takes the
         * worker's error record for the item only then. */
        int noted = pf_prod_note_lease(p, f, pi, FL_PRE) == 0;
        if (!noted && has_data)
            zmq_msg_close(&data);   /* pick, which consumes it, is not called */
        int picked = noted && pick(p, f, pi, FL_PRE, &m, has_data ? &data : NULL) == 0;
        free(bytes);
        free(canon);
        if (!picked) {   /* a sink cannot be told (dropped), or no memory: the item stays */
            pf_prod_note_unlease(p, f);
            pf_prod_queue_push(p, f->id, f->path, f->attempts, 1);
            pf_prod_flight_remove(p, f);
            return;
        }
        in_memory++;
        if (p->out_bytes > PICKED_BYTES && pf_prod_send_picked(p, now))
            return;
    }
}

/* The worker an earlier task of the image (path hash H) went to, if it is still there with credit: -1 otherwise. */
static int affine_peer(prod *p, uint64_t h)
{
    if (p->n_tasks < 2 && !p->o->manifest)
        return -1;   /* one task per image: nothing to share */
    for (size_t i = 0; i < sizeof p->affinity / sizeof p->affinity[0]; i++) {
        int pi = p->affinity[i].peer - 1;   /* 0 = empty slot */
        if (p->affinity[i].h == h && pi >= 0 && pi < p->n_peers && p->peers[pi].used &&
            p->peers[pi].role == ROLE_INF && p->peers[pi].credit > 0)
            return pi;
    }
    return -1;
}

static void remember_affinity(prod *p, uint64_t h, int pi)
{
    p->affinity[p->affinity_next++ % (sizeof p->affinity / sizeof p->affinity[0])].h = h;
    p->affinity[(p->affinity_next - 1) % (sizeof p->affinity / sizeof p->affinity[0])].peer = pi + 1;
}

void pf_prod_dispatch_inf(prod *p, double now)
{
    pf_prod_clamp_credit(p, ROLE_INF);
    while (p->ready.n > 0) {
        if (next_peer(p, ROLE_INF, &(int){p->rr_inf}) < 0)
            return;   /* no inference worker with credit (probed without moving the round-robin) */
        flight *f = pf_prod_ready_pop(p);
        if (!f)
            return;
        uint64_t h = XXH3_64bits(f->path, strlen(f->path));
        int pi = affine_peer(p, h);
        if (pi < 0)
            pi = next_peer(p, ROLE_INF, &p->rr_inf);
        remember_affinity(p, h, pi);
        pf_msg m;
        item_msg(p, f, &m);
        m.image_size = f->size;
        m.width = f->width;
        m.height = f->height;
        size_t n = (size_t)f->size * (size_t)f->size * 3;
        zmq_msg_t data;
        int has_data = 0;
        if (p->peers[pi].data_frames && tensor_frame(f, n, &data) == 0) {
            has_data = 1;
        } else {   /* a worker that takes single frames (or no memory for the reference): the tensor is copied */
            m.data = f->rgb;
            m.data_len = n;
        }
        m.w_preprocess = f->w_pre;
        m.content_key = f->content_key[0] ? f->content_key : NULL;
        m.timings = f->tm;
        m.lease_s = p->o->inference_lease_s;
        /* the sink takes the result only from this holder: the note goes first (pf_prod_send_picked) */
        int noted = pf_prod_note_lease(p, f, pi, FL_INF) == 0;
        if (!noted && has_data)
            zmq_msg_close(&data);   /* pick, which consumes it, is not called */
        if (!noted || pick(p, f, pi, FL_INF, &m, has_data ? &data : NULL)) {
            pf_prod_note_unlease(p, f);
            pf_prod_ready_push(p, f, 1);
            return;
        }
        if (p->out_bytes > PICKED_BYTES && pf_prod_send_picked(p, now))
            return;
    }
}
