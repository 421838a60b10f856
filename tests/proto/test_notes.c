/* proto: the `notes` message (lease and unlease notes in one message, PROTOCOL.md "How the sink learns the
 * leases"): the batch builder's message decodes to the same entries in the same order, pf_msg_encode writes
 * the same wire form, the hello's `batch_notes` travels, and malformed entries refuse the whole message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "proto/notes.h"
#include "proto/proto.h"

#define K1 "00112233445566778899aabbccddeeff-0123456789abcdef"
#define K2 "ffeeddccbbaa99887766554433221100-0123456789abcdef"

static pf_proto_limits L;

static int setup(void **state)
{
    (void)state;
    L = pf_proto_default_limits();
    return 0;
}

/* An item's three notes (preprocess lease, its end, inference lease) and another item's lease under CURVE. */
static const pf_note g_notes[4] = {
    {PF_MSG_LEASE, 7, K1, "in/a.jpg", "preprocess", "host-preprocess-1", NULL},
    {PF_MSG_UNLEASE, 7, K1, NULL, NULL, NULL, NULL},
    {PF_MSG_LEASE, 7, K1, "in/a.jpg", "inference", "host-inference-2", NULL},
    {PF_MSG_LEASE, 8, K2, "in/b c/ü.jpg", "inference", "host-inference-2", "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"},
};

static int same(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

static void assert_notes(const pf_msg *d, const pf_note *want, size_t n)
{
    assert_int_equal(d->type, PF_MSG_NOTES);
    assert_int_equal(d->n_notes, n);
    for (size_t i = 0; i < n; i++) {
        const pf_note *a = &d->notes[i], *b = &want[i];
        assert_int_equal(a->type, b->type);
        assert_int_equal(a->id, b->id);
        assert_true(same(a->key, b->key) && same(a->path, b->path) && same(a->stage, b->stage) &&
                    same(a->holder, b->holder) && same(a->holder_key, b->holder_key));
    }
}

/* The batch as the producer builds it: one message, entries in order, the instance; empty after each take. */
static void test_batch_roundtrip(void **state)
{
    (void)state;
    pf_notes_batch *b = pf_notes_batch_new("run-1");
    assert_non_null(b);
    pf_err e = {{0}};
    for (int round = 0; round < 2; round++) {   /* a second message from the same batch starts afresh */
        for (size_t i = 0; i < 4; i++)
            assert_int_equal(pf_notes_batch_add(b, &g_notes[i], &e), 0);
        assert_int_equal(pf_notes_batch_count(b), 4);
        uint8_t *buf;
        size_t len;
        assert_int_equal(pf_notes_batch_take(b, &buf, &len, &e), 0);
        assert_int_equal(pf_notes_batch_count(b), 0);
        pf_msg d;
        if (pf_msg_decode(buf, len, &L, &d, &e))
            fail_msg("decode: %s", e.msg);
        assert_notes(&d, g_notes, 4);
        assert_string_equal(d.instance, "run-1");
        /* what decodes re-encodes to the same entries (pf_msg_encode's path) */
        uint8_t *buf2;
        size_t len2;
        pf_msg d2;
        assert_int_equal(pf_msg_encode(&d, &buf2, &len2, &e), 0);
        assert_int_equal(pf_msg_decode(buf2, len2, &L, &d2, &e), 0);
        assert_notes(&d2, g_notes, 4);
        pf_msg_free(&d2);
        free(buf2);
        pf_msg_free(&d);
        free(buf);
    }
    /* nothing to take; a cleared batch holds nothing */
    uint8_t *buf;
    size_t len;
    assert_int_equal(pf_notes_batch_take(b, &buf, &len, &e), -1);
    assert_int_equal(pf_notes_batch_add(b, &g_notes[0], &e), 0);
    pf_notes_batch_clear(b);
    assert_int_equal(pf_notes_batch_take(b, &buf, &len, &e), -1);
    pf_notes_batch_free(b);
}

/* A batch holds PF_NOTES_BATCH_MAX entries at most (the caller sends it and starts another), and never a note
 * the decoder would refuse. */
static void test_batch_bounds(void **state)
{
    (void)state;
    pf_notes_batch *b = pf_notes_batch_new("run-1");
    pf_err e = {{0}};
    for (int i = 0; i < PF_NOTES_BATCH_MAX; i++) {
        pf_note n = g_notes[i % 4];
        n.id = i;
        assert_int_equal(pf_notes_batch_add(b, &n, &e), 0);
    }
    assert_int_equal(pf_notes_batch_add(b, &g_notes[0], &e), -1);
    assert_non_null(strstr(e.msg, "take it first"));
    uint8_t *buf;
    size_t len;
    assert_int_equal(pf_notes_batch_take(b, &buf, &len, &e), 0);
    pf_msg d;
    assert_int_equal(pf_msg_decode(buf, len, &L, &d, &e), 0);
    assert_int_equal(d.n_notes, PF_NOTES_BATCH_MAX);
    assert_int_equal(d.notes[PF_NOTES_BATCH_MAX - 1].id, PF_NOTES_BATCH_MAX - 1);
    pf_msg_free(&d);
    free(buf);
    pf_note bad[5] = {g_notes[0], g_notes[0], g_notes[0], g_notes[1], g_notes[0]};
    bad[0].stage = "producer";   /* not a worker's stage */
    bad[1].holder = "";
    bad[2].path = NULL;
    bad[3].key = NULL;
    bad[4].type = PF_MSG_HELLO;
    for (int i = 0; i < 5; i++)
        assert_int_equal(pf_notes_batch_add(b, &bad[i], &e), -1);
    assert_int_equal(pf_notes_batch_count(b), 0);
    pf_notes_batch_free(b);
}

/* {"v": 1, "type": "notes", "notes": ENTRIES}, with ENTRIES packed by FILL. */
static uint8_t *raw_notes(void (*fill)(msgpack_packer *pk), size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "notes", 5);
    msgpack_pack_str_with_body(&pk, "notes", 5);
    fill(&pk);
    *len = sb.size;
    return (uint8_t *)msgpack_sbuffer_release(&sb);
}

static void s(msgpack_packer *pk, const char *v) { msgpack_pack_str_with_body(pk, v, strlen(v)); }

/* One good lease first, then the bad entry: the whole message is refused (the entries after a bad one could
 * depend on it). */
static void bad_stage(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    msgpack_pack_array(pk, 6), msgpack_pack_int(pk, 1), s(pk, K1), s(pk, "a.jpg"), s(pk, "inference"), s(pk, "w"),
        msgpack_pack_nil(pk);
    msgpack_pack_array(pk, 6), msgpack_pack_int(pk, 2), s(pk, K1), s(pk, "b.jpg"), s(pk, "producer"), s(pk, "w"),
        msgpack_pack_nil(pk);
}
static void bad_shape(msgpack_packer *pk)   /* neither [id, key] nor the six of a lease */
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 3), msgpack_pack_int(pk, 1), s(pk, K1), s(pk, "a.jpg");
}
static void bad_id(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2), msgpack_pack_int(pk, -1), s(pk, K1);
}
static void bad_key(msgpack_packer *pk)   /* an empty key */
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2), msgpack_pack_int(pk, 1), s(pk, "");
}
static void bad_holder(msgpack_packer *pk)   /* a lease must name its holder */
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 6), msgpack_pack_int(pk, 1), s(pk, K1), s(pk, "a.jpg"), s(pk, "inference"),
        msgpack_pack_nil(pk), msgpack_pack_nil(pk);
}
static void bad_nul(msgpack_packer *pk)   /* a NUL inside a path */
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 6), msgpack_pack_int(pk, 1), s(pk, K1), msgpack_pack_str_with_body(pk, "a\0b", 3),
        s(pk, "inference"), s(pk, "w"), msgpack_pack_nil(pk);
}
static void bad_entry(msgpack_packer *pk)   /* an entry that is not an array */
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_int(pk, 7);
}
static void not_array(msgpack_packer *pk) { s(pk, "lease"); }
static void empty(msgpack_packer *pk) { msgpack_pack_array(pk, 0); }

static void test_malformed(void **state)
{
    (void)state;
    void (*bad[])(msgpack_packer *) = {bad_stage, bad_shape, bad_id, bad_key, bad_holder, bad_nul, bad_entry,
                                      not_array};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len;
        uint8_t *buf = raw_notes(bad[i], &len);
        pf_msg d;
        pf_err e = {{0}};
        assert_int_equal(pf_msg_decode(buf, len, &L, &d, &e), -1);
        assert_non_null(strstr(e.msg, "notes"));
        pf_msg_free(&d);
        free(buf);
    }
    /* no entries: harmless, taken; no `notes` field at all: refused */
    size_t len;
    uint8_t *buf = raw_notes(empty, &len);
    pf_msg d;
    pf_err e = {{0}};
    assert_int_equal(pf_msg_decode(buf, len, &L, &d, &e), 0);
    assert_int_equal(d.n_notes, 0);
    pf_msg_free(&d);
    free(buf);
    pf_msg m;
    pf_msg_init(&m, PF_MSG_NOTES);
    m.notes = NULL;
    uint8_t *out;
    assert_int_equal(pf_msg_encode(&m, &out, &len, &e), 0);   /* an empty array is written */
    assert_int_equal(pf_msg_decode(out, len, &L, &d, &e), 0);
    pf_msg_free(&d);
    free(out);
    /* 65537 entries: over the decoder's per-array limit, refused before anything is allocated for them */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    s(&pk, "v"), msgpack_pack_int(&pk, 1), s(&pk, "type"), s(&pk, "notes"), s(&pk, "notes");
    msgpack_pack_array(&pk, 65537);
    for (int i = 0; i < 65537; i++)
        msgpack_pack_array(&pk, 2), msgpack_pack_int(&pk, i), s(&pk, "k");
    assert_int_equal(pf_msg_decode((uint8_t *)sb.data, sb.size, &L, &d, &e), -1);
    pf_msg_free(&d);
    msgpack_sbuffer_destroy(&sb);
}

/* A sink's hello says it takes batches; absent (an older sink) means it does not. */
static void test_hello_field(void **state)
{
    (void)state;
    pf_msg h;
    pf_msg_init(&h, PF_MSG_HELLO);
    h.role = "sink";
    h.name = "s";
    h.leases = 1;
    for (int want = 1; want >= 0; want--) {
        h.batch_notes = want;
        uint8_t *buf;
        size_t len;
        pf_err e = {{0}};
        assert_int_equal(pf_msg_encode(&h, &buf, &len, &e), 0);
        pf_msg d;
        assert_int_equal(pf_msg_decode(buf, len, &L, &d, &e), 0);
        assert_int_equal(d.batch_notes, want);
        assert_int_equal(d.leases, 1);
        pf_msg_free(&d);
        free(buf);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_roundtrip),
        cmocka_unit_test(test_batch_bounds),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_hello_field),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
