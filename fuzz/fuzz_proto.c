/* libFuzzer target: the bounded msgpack decoder (proto/mpcheck.c + proto/msg.c).
 * Anything may come in; nothing may crash, leak or allocate beyond the limits. A message that decodes
 * must re-encode and decode to the same fields. Build: cmake -S . -B build-fuzz -DPALIFLOW_FUZZ=ON
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pf_proto_limits lim = pf_proto_default_limits();
    lim.max_msg_bytes = 1 << 20;
    pf_msg m;
    pf_err e;
    if (pf_msg_decode(data, size, &lim, &m, &e) == 0) {
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
