/* notes.c - see notes.h. */
#include "proto/notes.h"

#include <stdlib.h>
#include <string.h>

struct pf_notes_batch {
    msgpack_sbuffer sb;   /* the message: header, then the entries packed so far */
    msgpack_packer pk;
    size_t n;
    size_t count_at;      /* where the entries array's 32-bit count goes */
    char *instance;
};

static int pk_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

static int pk_str_or_nil(msgpack_packer *pk, const char *s)
{
    return s ? pk_str(pk, s) : msgpack_pack_nil(pk);
}

/* What the decoder takes (msg.c, decode_notes): the packer must never make an entry the sink refuses. */
static int note_ok(const pf_note *n)
{
    if (n->id < 0 || !n->key || !*n->key)
        return 0;
    if (n->type == PF_MSG_UNLEASE)
        return 1;
    return n->type == PF_MSG_LEASE && n->path && n->holder && *n->holder && n->stage &&
           (!strcmp(n->stage, "preprocess") || !strcmp(n->stage, "inference"));
}

int pf_note_pack(msgpack_packer *pk, const pf_note *n)
{
    if (!note_ok(n))
        return -1;
    if (n->type == PF_MSG_UNLEASE)
        return msgpack_pack_array(pk, 2) || msgpack_pack_int64(pk, n->id) || pk_str(pk, n->key) ? -1 : 0;
    return msgpack_pack_array(pk, 6) || msgpack_pack_int64(pk, n->id) || pk_str(pk, n->key) ||
                   pk_str(pk, n->path) || pk_str(pk, n->stage) || pk_str(pk, n->holder) ||
                   pk_str_or_nil(pk, n->holder_key)
               ? -1
               : 0;
}

pf_notes_batch *pf_notes_batch_new(const char *instance)
{
    pf_notes_batch *b = calloc(1, sizeof *b);
    if (!b || !(b->instance = strdup(instance ? instance : ""))) {
        free(b);
        return NULL;
    }
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
    return b;
}

void pf_notes_batch_clear(pf_notes_batch *b)
{
    if (!b)
        return;
    msgpack_sbuffer_destroy(&b->sb);
    msgpack_sbuffer_init(&b->sb);
    b->n = 0;
}

void pf_notes_batch_free(pf_notes_batch *b)
{
    if (!b)
        return;
    msgpack_sbuffer_destroy(&b->sb);
    free(b->instance);
    free(b);
}

size_t pf_notes_batch_count(const pf_notes_batch *b)
{
    return b ? b->n : 0;
}

/* The message's head: {"v": 1, "type": "notes", "instance": ..., "notes": [ (array32, count patched later) */
static int begin(pf_notes_batch *b)
{
    static const char hdr[5] = {(char)0xdd, 0, 0, 0, 0};
    if (msgpack_pack_map(&b->pk, 4) || pk_str(&b->pk, "v") || msgpack_pack_int64(&b->pk, PF_PROTO_VERSION) ||
        pk_str(&b->pk, "type") || pk_str(&b->pk, "notes") || pk_str(&b->pk, "instance") ||
        pk_str(&b->pk, b->instance) || pk_str(&b->pk, "notes") || msgpack_sbuffer_write(&b->sb, hdr, 5))
        return -1;
    b->count_at = b->sb.size - 4;
    return 0;
}

int pf_notes_batch_add(pf_notes_batch *b, const pf_note *n, pf_err *err)
{
    if (!note_ok(n))
        return pf_errf(err, "notes: not a lease or unlease note (item %lld)", (long long)n->id);
    if (b->n >= PF_NOTES_BATCH_MAX)
        return pf_errf(err, "notes: the batch holds %d entries already (take it first)", PF_NOTES_BATCH_MAX);
    if ((b->n == 0 && begin(b)) || pf_note_pack(&b->pk, n)) {
        pf_notes_batch_clear(b);
        return pf_errf(err, "notes: out of memory");
    }
    b->n++;
    return 0;
}

int pf_notes_batch_take(pf_notes_batch *b, uint8_t **out, size_t *len, pf_err *err)
{
    if (!b->n)
        return pf_errf(err, "notes: nothing to send");
    unsigned char *p = (unsigned char *)b->sb.data + b->count_at;
    uint32_t n = (uint32_t)b->n;
    p[0] = (unsigned char)(n >> 24);
    p[1] = (unsigned char)(n >> 16);
    p[2] = (unsigned char)(n >> 8);
    p[3] = (unsigned char)n;
    *len = b->sb.size;
    *out = (uint8_t *)msgpack_sbuffer_release(&b->sb);
    b->n = 0;
    return 0;
}
