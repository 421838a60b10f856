/* proto: data frames (PROTOCOL.md, "Data frames"): an item's or tensor's bytes as a second frame. Both forms
 * round trip, through the codec and over a real ZeroMQ socket pair; every malformed shape (a claim without a
 * frame, a frame without the claim, a third frame, the bytes both in the map and in a frame, a frame on a type
 * that carries none, a frame beyond max_bin) is refused with its own message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zmq.h>

#include "proto/proto.h"
#include "proto/wire.h"

static pf_proto_limits L;

#define KEY "00112233445566778899aabbccddeeff-0123456789abcdef"

/* An inference item (a tensor of S px) or a raw item, with DATA, every required field set. */
static pf_msg item(int tensor, const uint8_t *data, size_t len)
{
    pf_msg m;
    pf_msg_init(&m, PF_MSG_ITEM);
    m.id = 7;
    m.key = KEY;
    m.path = "a.jpg";
    m.has_task = 1;
    m.task.prompt = "caption en";
    m.image_size = tensor ? 4 : 224;
    if (tensor) {
        m.width = 640;
        m.height = 480;
    }
    m.data = data;
    m.data_len = len;
    return m;
}

static uint8_t *enc(const pf_msg *m, size_t *len)
{
    uint8_t *buf = NULL;
    pf_err e = {{0}};
    if (pf_msg_encode(m, &buf, len, &e))
        fail_msg("encode: %s", e.msg);
    return buf;
}

/* The map of M with `data_frame` said (its data left out). */
static uint8_t *enc_claim(pf_msg m, size_t *len)
{
    m.data = NULL;
    m.data_len = 0;
    m.data_frame = 1;
    return enc(&m, len);
}

static void refused(const uint8_t *buf, size_t len, const uint8_t *data, size_t dlen, const pf_proto_limits *lim,
                    const char *want)
{
    pf_msg d;
    pf_err e = {{0}};
    assert_int_equal(pf_msg_decode_frames(buf, len, data, dlen, lim, &d, &e), -1);
    if (!strstr(e.msg, want))
        fail_msg("refused with '%s', want '%s'", e.msg, want);
    pf_msg_free(&d);
}

static void test_codec_roundtrip(void **state)
{
    (void)state;
    uint8_t rgb[4 * 4 * 3];
    for (size_t i = 0; i < sizeof rgb; i++)
        rgb[i] = (uint8_t)(i * 7);
    for (int tensor = 0; tensor < 2; tensor++) {
        pf_msg m = item(tensor, rgb, tensor ? sizeof rgb : 10);
        size_t len;
        uint8_t *map = enc_claim(m, &len);
        pf_msg d;
        pf_err e = {{0}};
        if (pf_msg_decode_frames(map, len, rgb, m.data_len, &L, &d, &e))
            fail_msg("decode: %s", e.msg);
        assert_int_equal(d.data_frame, 1);
        assert_ptr_equal(d.data, rgb);   /* not copied: it is the data frame */
        assert_int_equal(d.data_len, m.data_len);
        assert_string_equal(d.key, KEY);
        pf_msg_free(&d);
        free(map);
        /* the single-frame form: the bytes inside the map, as older peers send them */
        map = enc(&m, &len);
        assert_int_equal(pf_msg_decode(map, len, &L, &d, &e), 0);
        assert_int_equal(d.data_frame, 0);
        assert_memory_equal(d.data, rgb, m.data_len);
        assert_true(d.data >= map && d.data < map + len);
        pf_msg_free(&d);
        free(map);
    }
    /* a tensor message too, and an empty file's item (a data frame of 0 bytes) */
    pf_msg t;
    pf_msg_init(&t, PF_MSG_TENSOR);
    t.id = 1;
    t.key = KEY;
    t.image_size = 4;
    t.width = t.height = 9;
    size_t len;
    uint8_t *map = enc_claim(t, &len);
    pf_msg d;
    pf_err e = {{0}};
    assert_int_equal(pf_msg_decode_frames(map, len, rgb, sizeof rgb, &L, &d, &e), 0);
    assert_int_equal(d.data_len, sizeof rgb);
    pf_msg_free(&d);
    free(map);
    map = enc_claim(item(0, NULL, 0), &len);
    assert_int_equal(pf_msg_decode_frames(map, len, (const uint8_t *)"", 0, &L, &d, &e), 0);
    assert_int_equal(d.data_len, 0);
    pf_msg_free(&d);
    free(map);
    /* the negotiation fields survive */
    pf_msg h;
    pf_msg_init(&h, PF_MSG_HELLO);
    h.role = "preprocess";
    h.name = "w";
    h.data_frames = 1;
    map = enc(&h, &len);
    assert_int_equal(pf_msg_decode(map, len, &L, &d, &e), 0);
    assert_int_equal(d.data_frames, 1);
    pf_msg_free(&d);
    free(map);
}

static void test_codec_malformed(void **state)
{
    (void)state;
    uint8_t rgb[4 * 4 * 3] = {0};
    pf_msg m = item(1, rgb, sizeof rgb);
    size_t len;
    /* says data_frame, none follows */
    uint8_t *map = enc_claim(m, &len);
    refused(map, len, NULL, 0, &L, "says data_frame but no data frame follows");
    /* a data frame bigger than max_bin */
    pf_proto_limits tight = L;
    tight.max_bin = sizeof rgb - 1;
    refused(map, len, rgb, sizeof rgb, &tight, "data frame of 48 bytes exceeds the limit of 47 bytes");
    /* the wrong size for the tensor it claims to be: the single form's check holds */
    refused(map, len, rgb, sizeof rgb - 3, &L, "a uint8 [4,4,3] image needs 48");
    free(map);
    /* a data frame after a map that does not say so */
    map = enc(&m, &len);
    refused(map, len, rgb, sizeof rgb, &L, "does not say data_frame");
    free(map);
    /* the bytes both in the map and in the frame: the encoder never writes both, so the claim is appended to
     * the single form's map by hand (a map32: 0xdf and a 4-byte count, bumped) */
    {
        size_t l1;
        uint8_t *b1 = enc(&m, &l1);
        static const uint8_t extra[] = {0xaa, 'd', 'a', 't', 'a', '_', 'f', 'r', 'a', 'm', 'e', 0xc3};
        uint8_t *b2 = malloc(l1 + sizeof extra);
        assert_non_null(b2);
        memcpy(b2, b1, l1);
        memcpy(b2 + l1, extra, sizeof extra);
        assert_int_equal(b2[0], 0xdf);
        uint32_t n = ((uint32_t)b2[1] << 24 | (uint32_t)b2[2] << 16 | (uint32_t)b2[3] << 8 | b2[4]) + 1;
        b2[1] = (uint8_t)(n >> 24);
        b2[2] = (uint8_t)(n >> 16);
        b2[3] = (uint8_t)(n >> 8);
        b2[4] = (uint8_t)n;
        refused(b2, l1 + sizeof extra, rgb, sizeof rgb, &L, "'data' both in the map and in a data frame");
        refused(b2, l1 + sizeof extra, NULL, 0, &L, "says data_frame but no data frame follows");
        free(b1);
        free(b2);
    }
    /* a type that carries no data */
    pf_msg h;
    pf_msg_init(&h, PF_MSG_HELLO);
    h.role = "inference";
    h.name = "w";
    map = enc_claim(h, &len);
    refused(map, len, rgb, 3, &L, "only an item or a tensor carries a data frame");
    free(map);
}

/* ---------- over a socket pair ---------- */

typedef struct pair {
    void *ctx, *a, *b;
} pair;

static pair pair_open(void)
{
    static int n;
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://frames-%d", n++);
    pair p;
    pf_err e = {{0}};
    p.ctx = zmq_ctx_new();
    assert_non_null(p.ctx);
    p.a = pf_wire_socket(p.ctx, ZMQ_PAIR, &L, 0, &e);
    p.b = pf_wire_socket(p.ctx, ZMQ_PAIR, &L, 0, &e);
    assert_non_null(p.a);
    assert_non_null(p.b);
    assert_int_equal(pf_wire_bind(p.b, ep, &e), 0);
    assert_int_equal(pf_wire_connect(p.a, ep, &e), 0);
    return p;
}

static void pair_close(pair *p)
{
    zmq_close(p->a);
    zmq_close(p->b);
    zmq_ctx_term(p->ctx);
}

/* Wait for a message on P's b side and receive it: the pf_wire_recv result, IN filled as it says. */
static int recv_one(pair *p, pf_wire_in *in, pf_err *e)
{
    zmq_pollitem_t it = {p->b, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&it, 1, 5000), 1);
    return pf_wire_recv(p->b, 0, &L, in, e);
}

static void send_frames(void *sock, const uint8_t *const *parts, const size_t *lens, int n)
{
    for (int i = 0; i < n; i++)
        assert_true(zmq_send(sock, parts[i], lens[i], i + 1 < n ? ZMQ_SNDMORE : 0) >= 0);
}

static void test_wire(void **state)
{
    (void)state;
    pair p = pair_open();
    uint8_t *rgb = malloc(48);
    assert_non_null(rgb);
    for (int i = 0; i < 48; i++)
        rgb[i] = (uint8_t)(255 - i);
    pf_msg m = item(1, NULL, 0);
    pf_err e = {{0}};
    /* two frames, the buffer handed to ZeroMQ (freed by it) */
    zmq_msg_t data;
    assert_int_equal(pf_wire_msg_own(&data, rgb, 48, &e), 0);
    assert_int_equal(pf_wire_send_data(p.a, NULL, 0, &m, &data, &e), 0);
    pf_wire_in in;
    assert_int_equal(recv_one(&p, &in, &e), 1);
    assert_int_equal(in.msg.data_frame, 1);
    assert_int_equal(in.data_open, 1);
    assert_ptr_equal(in.msg.data, zmq_msg_data(&in.data));
    assert_int_equal(in.msg.data_len, 48);
    assert_int_equal(in.msg.data[0], 255);
    assert_int_equal(in.msg.data[47], 255 - 47);
    pf_wire_in_close(&in);
    /* one frame, as before */
    uint8_t small[48] = {1};
    m.data = small;
    m.data_len = sizeof small;
    assert_int_equal(pf_wire_send(p.a, NULL, 0, &m, &e), 0);
    assert_int_equal(recv_one(&p, &in, &e), 1);
    assert_int_equal(in.msg.data_frame, 0);
    assert_int_equal(in.data_open, 0);
    assert_int_equal(in.msg.data_len, 48);
    pf_wire_in_close(&in);
    /* a third frame */
    size_t len;
    uint8_t *map = enc_claim(m, &len);
    const uint8_t *three[] = {map, small, small};
    const size_t three_len[] = {len, sizeof small, 1};
    send_frames(p.a, three, three_len, 3);
    assert_int_equal(recv_one(&p, &in, &e), -1);
    assert_non_null(strstr(e.msg, "more than two frames"));
    /* a claim without its frame */
    send_frames(p.a, three, three_len, 1);
    assert_int_equal(recv_one(&p, &in, &e), -1);
    assert_non_null(strstr(e.msg, "no data frame follows"));
    free(map);
    /* a second frame without the claim */
    map = enc(&m, &len);
    const uint8_t *two[] = {map, small};
    const size_t two_len[] = {len, sizeof small};
    send_frames(p.a, two, two_len, 2);
    assert_int_equal(recv_one(&p, &in, &e), -1);
    assert_non_null(strstr(e.msg, "does not say data_frame"));
    free(map);
    /* and the socket still works after the refusals: nothing of them is left queued */
    m.data = NULL;
    m.data_len = 0;
    assert_int_equal(pf_wire_msg_own(&data, NULL, 0, &e), 0);
    pf_msg raw = item(0, NULL, 0);
    assert_int_equal(pf_wire_send_data(p.a, NULL, 0, &raw, &data, &e), 0);
    assert_int_equal(recv_one(&p, &in, &e), 1);
    assert_int_equal(in.msg.data_len, 0);
    assert_non_null(in.msg.data);
    pf_wire_in_close(&in);
    pair_close(&p);
}

int main(void)
{
    L = pf_proto_default_limits();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codec_roundtrip),
        cmocka_unit_test(test_codec_malformed),
        cmocka_unit_test(test_wire),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
