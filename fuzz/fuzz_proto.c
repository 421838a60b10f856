/* libFuzzer target: the bounded msgpack decoder (proto/mpcheck.c + proto/msg.c).
 * Anything may come in; nothing may crash, leak or allocate beyond the limits. A message that decodes
 * must re-encode and decode to the same fields, in both forms an item or a tensor may take (PROTOCOL.md,
 * "Data frames": its data in the map, or as a second frame).
 * Each input is decoded as a one-frame message, and, when it is at least 4 bytes long, also as a two-frame
 * message: a big-endian u32 N, then N bytes of map, the rest the data frame (N larger than what remains: the
 * map is all of it and no data frame comes, the shape "says data_frame, no frame follows"). Build: cmake -S . -B build-fuzz -DPALIFLOW_FUZZ=ON
 * -DCMAKE_C_COMPILER=clang-14 && cmake --build build-fuzz --target fuzz_proto
 * Run:   build-fuzz/fuzz/fuzz_proto -max_total_time=300 -rss_limit_mb=512 CORPUS/ */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

static int same_str(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

/* A `notes` message's entries survive the round trip in order (proto/notes.h). */
static int same_notes(const pf_msg *a, const pf_msg *b)
{
    if (a->n_notes != b->n_notes)
        return 0;
    for (size_t i = 0; i < a->n_notes; i++) {
        const pf_note *x = &a->notes[i], *y = &b->notes[i];
        if (x->type != y->type || x->id != y->id || !same_str(x->key, y->key) || !same_str(x->path, y->path) ||
            !same_str(x->stage, y->stage) || !same_str(x->holder, y->holder) ||
            !same_str(x->holder_key, y->holder_key))
            return 0;
    }
    return 1;
}

/* The entries of a batched start/done survive the round trip. */
static int same_items(const pf_msg *a, const pf_msg *b)
{
    if (a->n_items != b->n_items || a->batch != b->batch)
        return 0;
    for (size_t i = 0; i < a->n_items; i++)
        if (a->items[i].id != b->items[i].id || !same_str(a->items[i].key, b->items[i].key) ||
            !same_str(a->items[i].stage, b->items[i].stage) || !same_str(a->items[i].message, b->items[i].message))
            return 0;
    return 1;
}

static int same_msg(const pf_msg *m, const pf_msg *d)
{
    return d->type == m->type && d->id == m->id && same_str(d->key, m->key) && same_str(d->path, m->path) &&
           d->n_ids == m->n_ids && d->n_acks == m->n_acks && d->data_len == m->data_len &&
           (!m->data_len || !memcmp(d->data, m->data, m->data_len)) &&
           (!m->n_ids || !memcmp(d->ids, m->ids, m->n_ids * sizeof *m->ids)) && same_notes(m, d) &&
           d->batch_notes == m->batch_notes && d->data_frames == m->data_frames && same_items(m, d);
}

/* M (decoded) sent in the form FRAME (1: data as a second frame) must decode to the same fields. */
static void resend(const pf_msg *m, int frame, const pf_proto_limits *lim)
{
    pf_msg t = *m;
    t.data_frame = frame;
    uint8_t *buf = NULL;
    size_t len = 0;
    pf_err e;
    if (pf_msg_encode(&t, &buf, &len, &e) != 0)
        return;
    pf_msg d;
    const uint8_t *data = frame ? (m->data ? m->data : (const uint8_t *)"") : NULL;
    if (pf_msg_decode_frames(buf, len, data, frame ? m->data_len : 0, lim, &d, &e) != 0)
        abort();   /* what we decoded, we must be able to send, in either form */
    if (!same_msg(m, &d) || d.data_frame != frame)
        abort();
    pf_msg_free(&d);
    free(buf);
}

/* The input as [u32 N][N bytes of map][data frame]. */
static void two_frames(const uint8_t *data, size_t size, const pf_proto_limits *lim)
{
    if (size < 4)
        return;
    size_t n = (size_t)data[0] << 24 | (size_t)data[1] << 16 | (size_t)data[2] << 8 | data[3];
    const uint8_t *map = data + 4, *frame = NULL;
    size_t map_len = size - 4, frame_len = 0;
    if (n <= map_len) {
        frame = map + n;
        frame_len = map_len - n;
        map_len = n;
    }
    pf_msg m;
    pf_err e;
    if (pf_msg_decode_frames(map, map_len, frame, frame_len, lim, &m, &e) == 0) {
        if (frame && (!m.data_frame || m.data != frame || m.data_len != frame_len))
            abort();   /* the data frame is the message's data, not copied */
        if (m.type == PF_MSG_ITEM || m.type == PF_MSG_TENSOR)   /* the only types that may have a data frame */
            resend(&m, 1, lim);
        resend(&m, 0, lim);
    }
    pf_msg_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pf_proto_limits lim = pf_proto_default_limits();
    lim.max_msg_bytes = 1 << 20;
    two_frames(data, size, &lim);
    pf_msg m;
    pf_err e;
    if (pf_msg_decode(data, size, &lim, &m, &e) == 0) {
        if (m.data && (m.type == PF_MSG_ITEM || m.type == PF_MSG_TENSOR))
            resend(&m, 1, &lim);   /* the same item with its data as a frame */
        uint8_t *buf = NULL;
        size_t len = 0;
        if (pf_msg_encode(&m, &buf, &len, &e) == 0) {
            pf_msg d;
            if (pf_msg_decode(buf, len, &lim, &d, &e) != 0)
                abort();   /* what we decoded, we must be able to send */
            if (d.type != m.type || d.id != m.id || !same_str(d.key, m.key) || !same_str(d.path, m.path) ||
                d.n_ids != m.n_ids || d.n_acks != m.n_acks || d.data_len != m.data_len ||
                (m.n_ids && memcmp(d.ids, m.ids, m.n_ids * sizeof *m.ids)) || !same_notes(&m, &d) ||
                d.batch_notes != m.batch_notes || !same_items(&m, &d))
                abort();
            pf_msg_free(&d);
            free(buf);
        }
    }
    pf_msg_free(&m);
    /* tight limits take other paths through the walker */
    pf_proto_limits tight = {64, 3, 4, 16, 16, 16};
    pf_msg_decode(data, size, &tight, &m, &e);
    pf_msg_free(&m);
    return 0;
}
