/* proto: round trips of every message type, and hostile bytes rejected before any allocation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "base/log.h"
#include "base/metrics.h"
#include "proto/link.h"
#include "proto/proto.h"
#include "proto/refusal.h"

static pf_proto_limits L;

static uint8_t *enc(const pf_msg *m, size_t *len)
{
    uint8_t *buf = NULL;
    pf_err e = {{0}};
    assert_int_equal(pf_msg_encode(m, &buf, len, &e), 0);
    return buf;
}

/* One message through the codec: M encoded, then decoded into *D, which must succeed; the checks that follow
 * read *D (whose payloads point into the returned buffer). Free both with release(). */
static uint8_t *decode_ok(const pf_msg *m, pf_msg *d)
{
    size_t len;
    pf_err e = {{0}};
    uint8_t *buf = enc(m, &len);
    if (pf_msg_decode(buf, len, &L, d, &e) != 0)
        fail_msg("decode: %s", e.msg);
    return buf;
}

static void release(pf_msg *d, uint8_t *buf)
{
    pf_msg_free(d);
    free(buf);
}

/* A hello from ROLE named NAME, every other field at its default. */
static pf_msg hello(const char *role, const char *name)
{
    pf_msg h;
    pf_msg_init(&h, PF_MSG_HELLO);
    h.role = role;
    h.name = name;
    return h;
}

/* M encoded is refused by the decoder, with a message holding WANT (NULL: any message). */
static void decode_refused(const pf_msg *m, const char *want)
{
    size_t len;
    pf_err e = {{0}};
    pf_msg d;
    uint8_t *buf = enc(m, &len);
    assert_int_equal(pf_msg_decode(buf, len, &L, &d, &e), -1);
    if (want && !strstr(e.msg, want))
        fail_msg("refused with '%s', want '%s'", e.msg, want);
    release(&d, buf);
}

static void test_roundtrip_item(void **state)
{
    (void)state;
    pf_msg m;
    pf_msg_init(&m, PF_MSG_ITEM);
    m.id = 42;
    m.key = "00112233445566778899aabbccddeeff-0123456789abcdef";
    m.path = "imgs/a b/ü.jpg";
    m.attempt = 2;
    m.has_task = 1;
    m.task.prompt = "detect cat ; dog";
    m.task.max_new_tokens = 17;
    m.task.temperature = 0.7;
    m.task.top_k = 5;
    m.task.top_p = 0.9;
    m.task.repetition_penalty = 1.1;
    m.task.seed = 0xfedcba9876543210ull;
    m.task.autorotate = 1;
    m.image_size = 224;
    m.lease_s = 12.5;
    static const uint8_t bytes[] = {0xff, 0xd8, 0x00, 0x01, 0x02};
    m.data = bytes;
    m.data_len = sizeof bytes;
    size_t len;
    uint8_t *buf = enc(&m, &len);
    pf_msg d;
    pf_err e = {{0}};
    assert_int_equal(pf_msg_decode(buf, len, &L, &d, &e), 0);
    assert_int_equal(d.type, PF_MSG_ITEM);
    assert_int_equal(d.version, PF_PROTO_VERSION);
    assert_int_equal(d.id, 42);
    assert_string_equal(d.key, m.key);
    assert_string_equal(d.path, m.path);
    assert_int_equal(d.attempt, 2);
    assert_string_equal(d.task.prompt, "detect cat ; dog");
    assert_int_equal(d.task.max_new_tokens, 17);
    assert_true(d.task.temperature == 0.7 && d.task.top_p == 0.9 && d.task.repetition_penalty == 1.1);
    assert_int_equal(d.task.top_k, 5);
    assert_true(d.task.seed == 0xfedcba9876543210ull);
    assert_int_equal(d.task.autorotate, 1);
    assert_int_equal(d.image_size, 224);
    assert_true(d.lease_s == 12.5);
    assert_int_equal(d.data_len, sizeof bytes);
    assert_memory_equal(d.data, bytes, sizeof bytes);
    /* bin payloads are not copied: they point into the decoded buffer */
    assert_true(d.data >= buf && d.data < buf + len);
    pf_msg_free(&d);
    free(buf);
}

static void test_roundtrip_tensor_result_ack(void **state)
{
    (void)state;
    /* tensor: [S,S,3] uint8 */
    int S = 4;
    uint8_t rgb[4 * 4 * 3];
    for (size_t i = 0; i < sizeof rgb; i++)
        rgb[i] = (uint8_t)(i * 7);
    pf_msg t;
    pf_msg_init(&t, PF_MSG_TENSOR);
    t.id = 7;
    t.key = "k";
    t.image_size = S;
    t.width = 640;
    t.height = 480;
    t.data = rgb;
    t.data_len = sizeof rgb;
    t.credit = 1;
    t.instance = "inst";
    t.timings.preprocess_s = 0.25;
    size_t len;
    uint8_t *buf = enc(&t, &len);
    pf_msg d;
    pf_err e = {{0}};
    assert_int_equal(pf_msg_decode(buf, len, &L, &d, &e), 0);
    assert_int_equal(d.width, 640);
    assert_int_equal(d.height, 480);
    assert_int_equal(d.credit, 1);
    assert_string_equal(d.instance, "inst");
    assert_true(d.timings.preprocess_s == 0.25 && d.timings.decode_s < 0);
    assert_memory_equal(d.data, rgb, sizeof rgb);
    pf_msg_free(&d);
    free(buf);
    /* a tensor whose data does not hold S*S*3 bytes is refused */
    t.data_len = sizeof rgb - 1;
    decode_refused(&t, "data holds");

    /* result */
    pf_msg r;
    pf_msg_init(&r, PF_MSG_RESULT);
    int32_t ids[] = {256000, -1, 2147483647, 108};
    r.id = 3;
    r.key = "kk";
    r.path = "p";
    r.has_task = 1;
    r.task.prompt = "caption en";
    r.text = "a cat";
    r.ids = ids;
    r.n_ids = 4;
    r.stopped_by_eos = 1;
    r.w_preprocess = "w1";
    r.w_inference = "w2";
    buf = decode_ok(&r, &d);
    assert_int_equal(d.n_ids, 4);
    assert_memory_equal(d.ids, ids, sizeof ids);
    assert_string_equal(d.text, "a cat");
    assert_string_equal(d.w_preprocess, "w1");
    assert_string_equal(d.w_inference, "w2");
    assert_int_equal(d.stopped_by_eos, 1);
    release(&d, buf);
    /* generated text may hold NUL bytes (the byte token <0x00>): they travel with the length */
    r.text = "a\0b";
    r.text_len = 3;
    buf = decode_ok(&r, &d);
    assert_int_equal(d.text_len, 3);
    assert_memory_equal(d.text, "a\0b", 3);
    release(&d, buf);

    /* ack */
    /* end: where the record ends in the output (4th element), absent (-1) in the old 3-element form */
    pf_ack acks[3] = {{1, "a", 1, -1}, {2, "b", 0, 0}, {9000000000ll, "c", 1, 5000000000ll}};
    pf_msg a;
    pf_msg_init(&a, PF_MSG_ACK);
    a.acks = acks;
    a.n_acks = 3;
    buf = decode_ok(&a, &d);
    assert_int_equal(d.n_acks, 3);
    assert_true(d.acks[2].id == 9000000000ll);
    assert_string_equal(d.acks[1].key, "b");
    assert_int_equal(d.acks[1].ok, 0);
    assert_true(d.acks[0].end == -1 && d.acks[1].end == 0 && d.acks[2].end == 5000000000ll);
    release(&d, buf);

    /* hello / credit / hb / error */
    pf_msg h = hello("inference", "w");
    h.capacity = 10;
    buf = decode_ok(&h, &d);
    assert_int_equal(d.capacity, 10);
    assert_true(d.out_end == -1);   /* only a sink reports its output's size */
    release(&d, buf);
    h.role = "sink";
    h.out_end = 123456789012ll;
    h.out_records = 0;
    buf = decode_ok(&h, &d);
    assert_true(d.out_end == 123456789012ll && d.out_records == 0);
    release(&d, buf);
    h.out_end = h.out_records = -1;
    h.role = "boss";
    decode_refused(&h, NULL);
    pf_msg er;
    pf_msg_init(&er, PF_MSG_ERROR);
    er.id = 1;
    er.key = "k";
    er.path = "x";
    er.has_task = 1;
    er.task.prompt = "ocr";
    er.stage = "preprocess";
    er.message = "truncated";
    buf = decode_ok(&er, &d);
    assert_string_equal(d.message, "truncated");
    release(&d, buf);
}

/* The producer's lease notes to the sink, and the sink's ask for them (PROTOCOL.md, "Who may say what"). */
static void test_lease_notes(void **state)
{
    (void)state;
    pf_msg m, d;
    pf_msg_init(&m, PF_MSG_LEASE);
    m.id = 7;
    m.key = "k7";
    m.path = "in/a.jpg";
    m.stage = "inference";
    m.holder = "host-inference-12-ab";
    m.holder_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
    uint8_t *buf = decode_ok(&m, &d);
    assert_int_equal(d.type, PF_MSG_LEASE);
    assert_int_equal(d.id, 7);
    assert_string_equal(d.path, "in/a.jpg");
    assert_string_equal(d.stage, "inference");
    assert_string_equal(d.holder, "host-inference-12-ab");
    assert_string_equal(d.holder_key, m.holder_key);
    release(&d, buf);
    /* without a holder, a path, or with a stage that is not a worker's: refused by the decoder */
    const char *stages[] = {"inference", "producer", NULL};
    for (int i = 0; i < 3; i++) {
        pf_msg b = m;
        if (i == 0)
            b.holder = NULL;
        else if (i == 1)
            b.stage = stages[1];
        else
            b.path = NULL;
        decode_refused(&b, NULL);
    }
    pf_msg u;
    pf_msg_init(&u, PF_MSG_UNLEASE);
    u.id = 7;
    u.key = "k7";
    buf = decode_ok(&u, &d);
    assert_int_equal(d.type, PF_MSG_UNLEASE);
    assert_null(d.holder);
    release(&d, buf);
    u.key = NULL;
    decode_refused(&u, NULL);
    /* hello from a sink asks for notes; a welcome promises them; absent means no */
    pf_msg h = hello("sink", "s");
    h.leases = 1;
    buf = decode_ok(&h, &d);
    assert_int_equal(d.leases, 1);
    release(&d, buf);
    h.leases = 0;
    buf = decode_ok(&h, &d);
    assert_int_equal(d.leases, 0);
    release(&d, buf);
}

/* The failure-policy fields (issue 18): hello number and image size, the welcome's echo, the item's canonical
 * file, the worker-fault nack; absent ones decode as 0/NULL (older peers). */
static void test_policy_fields(void **state)
{
    (void)state;
    pf_msg d;
    pf_msg h = hello("inference", "w");
    h.capacity = 10;
    h.hello_seq = 42;
    h.image_size = 448;
    uint8_t *buf = decode_ok(&h, &d);
    assert_int_equal(d.hello_seq, 42);
    assert_int_equal(d.image_size, 448);
    release(&d, buf);
    pf_msg w;
    pf_msg_init(&w, PF_MSG_WELCOME);
    w.instance = "i1";
    buf = decode_ok(&w, &d);   /* an older producer's welcome: no number */
    assert_int_equal(d.hello_seq, 0);
    pf_msg_free(&d);
    free(buf);
    pf_msg n;
    pf_msg_init(&n, PF_MSG_NACK);
    n.id = 3;
    n.key = "k";
    n.stage = "preprocess";
    n.message = "cannot open";
    n.worker_fault = 1;
    buf = decode_ok(&n, &d);
    assert_int_equal(d.worker_fault, 1);
    assert_int_equal(d.handback, 0);
    release(&d, buf);
    pf_msg it;
    pf_msg_init(&it, PF_MSG_ITEM);
    it.id = 1;
    it.key = "k";
    it.path = "in/a.jpg";
    it.file = "/data/in/a.jpg";
    it.has_task = 1;
    it.image_size = 224;
    it.path_only = 1;
    buf = decode_ok(&it, &d);
    assert_string_equal(d.path, "in/a.jpg");
    assert_string_equal(d.file, "/data/in/a.jpg");
    release(&d, buf);
}

/* Log lines captured through pf_log_set_writer: how many mention a text, and the counts their summaries give. */
static char g_log[16384];
static size_t g_log_len;

static void capture_line(const char *line)
{
    size_t n = strlen(line);
    if (g_log_len + n < sizeof g_log) {
        memcpy(g_log + g_log_len, line, n + 1);
        g_log_len += n;
    }
}

static long long log_count(const char *text, long long *suppressed)
{
    long long n = 0;
    *suppressed = 0;
    for (const char *l = g_log; *l;) {
        const char *end = strchr(l, '\n');
        size_t len = end ? (size_t)(end - l) : strlen(l);
        char line[2100];
        snprintf(line, sizeof line, "%.*s", (int)len, l);
        if (strstr(line, text)) {
            n++;
            const char *s = strstr(line, " similar messages suppressed");
            if (s) {
                while (s > line && s[-1] >= '0' && s[-1] <= '9')
                    s--;
                *suppressed += atoll(s);
            }
        }
        l += len + (end ? 1 : 0);
    }
    return n;
}

/* Refusals are all counted, by (type, reason), and the metric follows. The log goes through pf_log_limited: a
 * flood from one sender is cut to the burst, a second sender still gets its line, and what was left unsaid is
 * said once the rate allows (pf_refusals_tick) with nothing lost from the count. */
static void test_refusals(void **state)
{
    (void)state;
    pf_refusals r;
    pf_refusals_init(&r, "unit");
    pf_peer_desc from, other;
    pf_peer_describe(NULL, (const uint8_t *)"w\x01", 2, &from);
    pf_peer_describe(NULL, (const uint8_t *)"w2", 2, &other);
    assert_non_null(strstr(from.text, "routing id w\\x01 "));   /* printable, as the producer names holders */
    assert_non_null(strstr(from.text, "address local, key none"));
    g_log_len = 0;
    g_log[0] = '\0';
    pf_log_set_writer(capture_line);
    const int N = 3 * PF_LOG_LIMIT_BURST;
    for (int i = 0; i < N; i++)
        pf_refuse(&r, "ack", "not_sink", &from, "forged %d", i);
    pf_refuse(&r, "ack", "not_sink", &other, "forged by the other");
    pf_refuse(&r, "done", "not_holder", &from, "stale");
    long long sup = 0;
    long long said = log_count("refused ack from routing id w\\x01", &sup);
    assert_true(said >= PF_LOG_LIMIT_BURST && said < N);   /* the burst, then at most a line a second */
    assert_int_equal(log_count("forged by the other", &sup), 1);
    assert_int_equal(log_count("refused done", &sup), 1);
    /* the rate allows a line again (the buckets' clocks moved back instead of waiting): the tick says the rest */
    for (int i = 0; i < PF_LOG_LIMIT_KEYS; i++)
        r.kinds[0].log.slot[i].last -= 100;
    r.kinds[0].log.site.last -= 100;
    pf_refusals_tick(&r);
    pf_log_set_writer(NULL);
    long long summaries = log_count("refused ack messages [not_sink]", &sup);
    assert_int_equal(summaries, 1);
    assert_int_equal(said + sup, N);
    assert_int_equal(pf_refusals_count(&r, "ack", "not_sink"), N + 1);
    assert_int_equal(pf_refusals_count(&r, "done", NULL), 1);
    assert_int_equal(pf_refusals_count(&r, NULL, NULL), N + 2);
    pf_metric *m = pf_counter("paliflow_refused_messages_total", "component=\"unit\",type=\"ack\",reason=\"not_sink\"", "");
    assert_true(pf_metric_value(m) == (double)(N + 1));
}

/* Every proper prefix of a valid message is refused cleanly, and so is every single-byte change that
 * breaks it (those that still parse must still pass the schema checks: no crash either way). */
static void test_truncation_and_flips(void **state)
{
    (void)state;
    pf_msg m;
    pf_msg_init(&m, PF_MSG_RESULT);
    int32_t ids[] = {1, 2, 3};
    m.id = 5;
    m.key = "key";
    m.path = "path";
    m.has_task = 1;
    m.task.prompt = "caption en";
    m.text = "txt";
    m.ids = ids;
    m.n_ids = 3;
    size_t len;
    uint8_t *buf = enc(&m, &len);
    for (size_t cut = 0; cut < len; cut++) {
        pf_msg d;
        pf_err e = {{0}};
        assert_int_equal(pf_msg_decode(buf, cut, &L, &d, &e), -1);
        pf_msg_free(&d);
    }
    uint8_t *copy = malloc(len);
    for (size_t i = 0; i < len; i++)
        for (int v = 0; v < 256; v += 5) {
            memcpy(copy, buf, len);
            copy[i] = (uint8_t)v;
            pf_msg d;
            pf_err e = {{0}};
            pf_msg_decode(copy, len, &L, &d, &e);
            pf_msg_free(&d);
        }
    free(copy);
    free(buf);
}

static int decode_bytes(const uint8_t *b, size_t n, const pf_proto_limits *lim, char *why, size_t cap)
{
    pf_msg d;
    pf_err e = {{0}};
    int rc = pf_msg_decode(b, n, lim, &d, &e);
    pf_msg_free(&d);
    snprintf(why, cap, "%s", e.msg);
    return rc;
}

static void test_hostile(void **state)
{
    (void)state;
    char why[PF_ERR_MAX];
    /* array32 declaring 4 billion entries in 5 bytes: msgpack-c would reserve ~100 GB */
    static const uint8_t big_array[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(decode_bytes(big_array, sizeof big_array, &L, why, sizeof why), -1);
    assert_non_null(strstr(why, "limit"));
    pf_proto_limits loose = L;
    loose.max_container = UINT32_MAX;
    assert_int_equal(decode_bytes(big_array, sizeof big_array, &loose, why, sizeof why), -1);
    assert_non_null(strstr(why, "remain"));
    /* map32 with 2^31 pairs */
    static const uint8_t big_map[] = {0xdf, 0x80, 0x00, 0x00, 0x00, 0xa1, 'v'};
    assert_int_equal(decode_bytes(big_map, sizeof big_map, &loose, why, sizeof why), -1);
    /* str32 / bin32 declaring more than present */
    static const uint8_t big_str[] = {0x81, 0xa1, 'v', 0xdb, 0x7f, 0xff, 0xff, 0xff, 'x'};
    assert_int_equal(decode_bytes(big_str, sizeof big_str, &loose, why, sizeof why), -1);
    static const uint8_t big_bin[] = {0x81, 0xa1, 'v', 0xc6, 0x00, 0x00, 0x10, 0x00, 1, 2, 3};
    assert_int_equal(decode_bytes(big_bin, sizeof big_bin, &L, why, sizeof why), -1);
    assert_non_null(strstr(why, "remain"));
    /* nesting deeper than the limit */
    uint8_t deep[64];
    memset(deep, 0x91, sizeof deep);
    deep[63] = 0xc0;
    assert_int_equal(decode_bytes(deep, sizeof deep, &L, why, sizeof why), -1);
    assert_non_null(strstr(why, "nesting"));
    /* ext types, the never-used byte, trailing bytes, non-map root, non-string key */
    static const uint8_t ext[] = {0xd4, 0x01, 0x00};
    assert_int_equal(decode_bytes(ext, sizeof ext, &L, why, sizeof why), -1);
    static const uint8_t c1[] = {0xc1};
    assert_int_equal(decode_bytes(c1, sizeof c1, &L, why, sizeof why), -1);
    static const uint8_t trailing[] = {0x80, 0x00};
    assert_int_equal(decode_bytes(trailing, sizeof trailing, &L, why, sizeof why), -1);
    assert_non_null(strstr(why, "trailing"));
    static const uint8_t root_array[] = {0x90};
    assert_int_equal(decode_bytes(root_array, sizeof root_array, &L, why, sizeof why), -1);
    static const uint8_t int_key[] = {0x81, 0x01, 0x01};
    assert_int_equal(decode_bytes(int_key, sizeof int_key, &L, why, sizeof why), -1);
    assert_int_equal(decode_bytes(NULL, 0, &L, why, sizeof why), -1);
    /* too many objects in total */
    pf_proto_limits small = L;
    small.max_objects = 10;
    uint8_t many[32] = {0x9f};
    for (int i = 1; i < 16; i++)
        many[i] = 0x01;
    assert_int_equal(decode_bytes(many, 16, &small, why, sizeof why), -1);
    assert_non_null(strstr(why, "objects"));
    /* message bigger than the limit */
    small = L;
    small.max_msg_bytes = 4;
    assert_int_equal(decode_bytes(many, 16, &small, why, sizeof why), -1);
}

/* Build a map by hand with msgpack-c, to send what our encoder never would. */
static uint8_t *pack_fields(size_t *len, const char *type, int version, int bad_field)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_int(&pk, version);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, type, strlen(type));
    msgpack_pack_str_with_body(&pk, "id", 2);
    if (bad_field == 1)
        msgpack_pack_int(&pk, -5);
    else
        msgpack_pack_int(&pk, 5);
    msgpack_pack_str_with_body(&pk, "key", 3);
    if (bad_field == 2)
        msgpack_pack_str_with_body(&pk, "a\0b", 3);
    else
        msgpack_pack_str_with_body(&pk, "ab", 2);
    msgpack_pack_str_with_body(&pk, "credit", 6);
    if (bad_field == 3)
        msgpack_pack_str_with_body(&pk, "ten", 3);
    else
        msgpack_pack_int(&pk, 1);
    msgpack_pack_str_with_body(&pk, "future_field", 12);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_nil(&pk);
    *len = sb.size;
    return (uint8_t *)msgpack_sbuffer_release(&sb);
}

/* A start/done whose "items" is ITEMS (packed by FILL), with "id" too when WITH_ID. */
static uint8_t *pack_items(size_t *len, const char *type, int with_id, void (*fill)(msgpack_packer *))
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, with_id ? 4 : 3);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, type, strlen(type));
    if (with_id) {
        msgpack_pack_str_with_body(&pk, "id", 2);
        msgpack_pack_int(&pk, 5);
    }
    msgpack_pack_str_with_body(&pk, "items", 5);
    fill(&pk);
    *len = sb.size;
    return (uint8_t *)msgpack_sbuffer_release(&sb);
}

static void items_good(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    msgpack_pack_int(pk, 3);
    msgpack_pack_str_with_body(pk, "k3", 2);
}
static void items_empty(msgpack_packer *pk) { msgpack_pack_array(pk, 0); }
static void items_three(msgpack_packer *pk)   /* [id, key, stage]: neither form */
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 3);
    msgpack_pack_int(pk, 3);
    msgpack_pack_str_with_body(pk, "k3", 2);
    msgpack_pack_str_with_body(pk, "inference", 9);
}
static void items_no_key(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    msgpack_pack_int(pk, 3);
    msgpack_pack_nil(pk);
}
static void items_negative(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    msgpack_pack_int(pk, -3);
    msgpack_pack_str_with_body(pk, "k3", 2);
}
static void items_not_array(msgpack_packer *pk) { msgpack_pack_int(pk, 3); }
static void items_huge(msgpack_packer *pk)   /* declares 2^31 entries, holds none: refused before allocating */
{
    msgpack_pack_array(pk, 0x80000000u);
}

/* Batched start/done (PROTOCOL.md, "Batched start and done"): the round trip, and what is refused. */
static void test_batches(void **state)
{
    (void)state;
    pf_item_ref items[3] = {
        {1, "k1", NULL, NULL}, {9000000000ll, "k2", "inference", "no such thing"}, {0, "k0", NULL, NULL}};
    pf_msg m, d;
    pf_msg_init(&m, PF_MSG_DONE);
    m.items = items;
    m.n_items = 3;
    m.credit = 3;
    uint8_t *buf = decode_ok(&m, &d);
    assert_int_equal(d.n_items, 3);
    assert_true(d.id == -1 && d.key == NULL && d.credit == 3);
    assert_true(d.items[0].id == 1 && d.items[1].id == 9000000000ll && d.items[2].id == 0);
    assert_string_equal(d.items[1].key, "k2");
    assert_null(d.items[0].stage);
    assert_null(d.items[0].message);
    assert_string_equal(d.items[1].stage, "inference");
    assert_string_equal(d.items[1].message, "no such thing");
    release(&d, buf);
    m.type = PF_MSG_START;
    m.credit = 0;
    m.n_items = 2;
    buf = decode_ok(&m, &d);
    assert_int_equal(d.type, PF_MSG_START);
    assert_int_equal(d.n_items, 2);
    release(&d, buf);
    /* the welcome's flag */
    pf_msg w;
    pf_msg_init(&w, PF_MSG_WELCOME);
    w.instance = "i";
    buf = decode_ok(&w, &d);
    assert_int_equal(d.batch, 0);   /* an older producer's welcome: no batches */
    release(&d, buf);
    w.batch = 1;
    buf = decode_ok(&w, &d);
    assert_int_equal(d.batch, 1);
    release(&d, buf);

    char why[PF_ERR_MAX];
    size_t len;
    uint8_t *b = pack_items(&len, "start", 0, items_good);
    assert_int_equal(decode_bytes(b, len, &L, why, sizeof why), 0);
    free(b);
    static const struct {
        const char *type;
        int with_id;
        void (*fill)(msgpack_packer *);
        const char *why;
    } bad[] = {
        {"start", 1, items_good, "both 'items' and"},   /* which one counts? neither */
        {"done", 0, items_empty, "items"},
        {"done", 0, items_three, "items[]"},
        {"start", 0, items_no_key, "items[]"},
        {"start", 0, items_negative, "items[]"},
        {"done", 0, items_not_array, "items"},
        {"done", 0, items_huge, "array"},
        {"nack", 0, items_good, "id/key"},   /* only start and done come in batches */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        b = pack_items(&len, bad[i].type, bad[i].with_id, bad[i].fill);
        assert_int_equal(decode_bytes(b, len, &L, why, sizeof why), -1);
        if (!strstr(why, bad[i].why))
            fail_msg("case %zu: '%s' does not say '%s'", i, why, bad[i].why);
        free(b);
    }
}

static void test_schema(void **state)
{
    (void)state;
    char why[PF_ERR_MAX];
    size_t len;
    uint8_t *b = pack_fields(&len, "done", 1, 0);
    assert_int_equal(decode_bytes(b, len, &L, why, sizeof why), 0);   /* unknown fields are ignored */
    free(b);
    b = pack_fields(&len, "done", 2, 0);
    assert_int_equal(decode_bytes(b, len, &L, why, sizeof why), -1);
    assert_non_null(strstr(why, "version"));
    free(b);
    b = pack_fields(&len, "launch", 1, 0);
    assert_int_equal(decode_bytes(b, len, &L, why, sizeof why), -1);
    assert_non_null(strstr(why, "unknown type"));
    free(b);
    for (int bad = 1; bad <= 3; bad++) {
        b = pack_fields(&len, "done", 1, bad);
        assert_int_equal(decode_bytes(b, len, &L, why, sizeof why), -1);
        free(b);
    }
    /* an item without a task is refused */
    b = pack_fields(&len, "item", 1, 0);
    assert_int_equal(decode_bytes(b, len, &L, why, sizeof why), -1);
    assert_non_null(strstr(why, "item"));
    free(b);
}

static void test_keys(void **state)
{
    (void)state;
    pf_task t;
    t = pf_task_default_params();
    t.prompt = "caption en";
    uint64_t h1 = pf_task_hash(&t, 224), h2 = pf_task_hash(&t, 448);
    assert_true(h1 != h2);
    t.max_new_tokens = 10;
    assert_true(pf_task_hash(&t, 224) != h1);
    char k1[PF_KEY_LEN + 1], k2[PF_KEY_LEN + 1], k3[PF_KEY_LEN + 1];
    pf_item_key("abc", 3, h1, k1);
    pf_item_key("abc", 3, h1, k2);
    pf_item_key("abd", 3, h1, k3);
    assert_int_equal(strlen(k1), PF_KEY_LEN);
    assert_string_equal(k1, k2);
    assert_string_not_equal(k1, k3);
    assert_memory_equal(k1 + 32, k3 + 32, 17);   /* same settings part */
    assert_true(pf_task_is_detect("detect cat ; dog"));
    assert_true(pf_task_is_detect("detect"));
    assert_false(pf_task_is_detect("detector"));
    assert_false(pf_task_is_detect("caption en"));
}

/* When a client of the producer says hello again: after RESET (throttled), or a heartbeat from another
 * producer instance (a restart; throttled); not for its own producer's heartbeats. */
static void test_wants_hello(void **state)
{
    (void)state;
    pf_msg m;
    int welcomed = 1;
    pf_msg_init(&m, PF_MSG_RESET);
    assert_int_equal(pf_msg_wants_hello(&m, "p1", &welcomed, 0.0, 1.0), 1);
    assert_int_equal(welcomed, 0);
    welcomed = 1;
    assert_int_equal(pf_msg_wants_hello(&m, "p1", &welcomed, 0.9, 1.0), 0); /* hello 0.1 s ago */
    assert_int_equal(welcomed, 0);
    pf_msg_free(&m);
    pf_msg_init(&m, PF_MSG_HB);
    m.instance = "p1";
    welcomed = 1;
    assert_int_equal(pf_msg_wants_hello(&m, "p1", &welcomed, 0.0, 1.0), 0);
    assert_int_equal(welcomed, 1);
    m.instance = "p2";
    assert_int_equal(pf_msg_wants_hello(&m, "p1", &welcomed, 0.9, 1.0), 0);
    assert_int_equal(welcomed, 1);
    assert_int_equal(pf_msg_wants_hello(&m, "p1", &welcomed, 0.0, 1.0), 1);
    assert_int_equal(welcomed, 0);
    m.instance = NULL;
    pf_msg_free(&m);
}

/* The client's link to the producer: hello each heartbeat until welcomed, silence once per gap, welcome
 * and return noticed. */
static void test_link(void **state)
{
    (void)state;
    pf_link l;
    pf_link_start(&l, 10.0);
    /* hb 1 s, timeout 3 s: first tick sends a heartbeat and (not welcomed) a hello */
    assert_int_equal(pf_link_tick(&l, 10.0, 1.0, 3.0), PF_LINK_SEND_HB | PF_LINK_SEND_HELLO);
    pf_link_said_hello(&l, 10.0);
    assert_int_equal(pf_link_tick(&l, 10.5, 1.0, 3.0), 0);
    assert_int_equal(pf_link_heard(&l, 10.6), 0);
    assert_int_equal(pf_link_welcome(&l, "p1"), 1);
    assert_true(pf_link_connected(&l));
    assert_int_equal(pf_link_tick(&l, 11.0, 1.0, 3.0), PF_LINK_SEND_HB); /* welcomed: no hello */
    assert_int_equal(pf_link_welcome(&l, "p1"), 0);                       /* the same producer again */
    /* nothing heard for more than 3 s: silent once, no longer welcomed, so hellos resume */
    assert_int_equal(pf_link_tick(&l, 13.7, 1.0, 3.0), PF_LINK_SEND_HB | PF_LINK_WENT_SILENT);
    assert_false(pf_link_connected(&l));
    assert_int_equal(pf_link_tick(&l, 14.7, 1.0, 3.0), PF_LINK_SEND_HB | PF_LINK_SEND_HELLO);
    assert_int_equal(pf_link_heard(&l, 15.0), 1); /* the producer is back */
    assert_int_equal(pf_link_heard(&l, 15.1), 0);
    assert_int_equal(pf_link_welcome(&l, "p2"), 1); /* a restarted producer */
    assert_string_equal(l.instance, "p2");
    /* a heartbeat from yet another instance asks for a hello and drops the welcome */
    pf_msg m;
    pf_msg_init(&m, PF_MSG_HB);
    m.instance = "p3";
    assert_int_equal(pf_link_wants_hello(&l, &m, 16.0), 1);
    assert_false(pf_link_connected(&l));
    m.instance = NULL;
    pf_msg_free(&m);
}

int main(void)
{
    L = pf_proto_default_limits();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_item),      cmocka_unit_test(test_roundtrip_tensor_result_ack),
        cmocka_unit_test(test_truncation_and_flips), cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_wants_hello),         cmocka_unit_test(test_link),
        cmocka_unit_test(test_schema),              cmocka_unit_test(test_keys),
        cmocka_unit_test(test_lease_notes),         cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_policy_fields),       cmocka_unit_test(test_batches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
