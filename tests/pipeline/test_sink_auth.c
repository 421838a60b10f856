/* sink_auth: which worker records the sink writes (PROTOCOL.md, "Who may say what"), without sockets: lease
 * notes (one by one, or batched in a `notes` message) and records are fed in directly, the batch shows what
 * would be written. Malformed batches go through the sink's read of its producer connection (an inproc pair). */
#define _GNU_SOURCE   /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "base/file.h"
#include "pipeline/sink_internal.h"
#include "proto/notes.h"

#define KEY7 "0123456789abcdef0123456789abcdef-0123456789abcdef"

typedef struct fixture {
    pf_sink_params o;
    sink s;
    char out[64];   /* an empty output, for the sink's record index (dedupe) */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->o = pf_sink_default_params();
    f->s.o = &f->o;
    snprintf(f->out, sizeof f->out, "/tmp/test_sink_auth_XXXXXX");
    f->s.fd = mkstemp(f->out);
    assert_true(f->s.fd >= 0);
    int64_t from = -1;
    pf_err e = {{0}};
    assert_int_equal(pf_sink_index_open(f->out, f->s.fd, &f->s.index, &from, &e), 0);
    assert_int_equal(from, 0);
    assert_int_equal(pf_sink_auth_init(&f->s), 0);
    pf_msg w;
    pf_msg_init(&w, PF_MSG_WELCOME);
    w.instance = "run1";
    w.leases = 1;
    pf_sink_auth_welcomed(&f->s, &w, 1);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    pf_sink_batch_close(&f->s);
    pf_sink_auth_free(&f->s);
    pf_sink_index_close(f->s.index);
    close(f->s.fd);
    char *ix = pf_sink_index_path(f->out);
    static const char *const suffix[3] = {"", "-wal", "-shm"};   /* SQLite's WAL files beside it */
    for (int i = 0; ix && i < 3; i++) {
        char p[128];
        snprintf(p, sizeof p, "%s%s", ix, suffix[i]);
        unlink(p);
    }
    free(ix);
    unlink(f->out);
    free(f);
    return 0;
}

static void note(fixture *f, int type, int64_t id, const char *path, const char *stage, const char *holder)
{
    pf_msg m;
    pf_msg_init(&m, type);
    m.id = id;
    m.key = KEY7;
    m.path = path;
    m.stage = stage;
    m.holder = holder;
    pf_sink_auth_on_note(&f->s, &m, pf_now());
}

/* A record from routing id FROM, as the sink's ROUTER would hand it over. */
static void record(fixture *f, int type, int64_t id, const char *key, const char *path, const char *stage,
                   const char *from, double now)
{
    pf_msg m;
    pf_msg_init(&m, type);
    m.id = id;
    m.key = key;
    m.path = path;
    m.has_task = 1;
    m.task.prompt = "caption en";
    if (type == PF_MSG_RESULT) {
        m.text = "a cat";
    } else {
        m.stage = stage;
        m.message = "broken";
    }
    uint8_t *buf;
    size_t len;
    pf_err e = {{0}};
    assert_int_equal(pf_msg_encode(&m, &buf, &len, &e), 0);
    pf_wire_in in;
    memset(&in, 0, sizeof in);
    in.ident_len = strlen(from);
    memcpy(in.ident, from, in.ident_len);
    assert_int_equal(zmq_msg_init_size(&in.frame, len), 0);
    memcpy(zmq_msg_data(&in.frame), buf, len);
    free(buf);
    in.frame_open = 1;
    assert_int_equal(pf_msg_decode(zmq_msg_data(&in.frame), len, &f->o.lim, &in.msg, &e), 0);
    pf_sink_auth_worker_record(&f->s, &in, now);
    pf_wire_in_close(&in);
}

static void test_holder_only(void **state)
{
    fixture *f = *state;
    double now = pf_now();
    note(f, PF_MSG_LEASE, 7, "in/a.jpg", "inference", "inf-1");
    record(f, PF_MSG_RESULT, 7, KEY7, "/etc/passwd", NULL, "inf-1", now);   /* not the job's path */
    record(f, PF_MSG_RESULT, 7, "x" KEY7, "in/a.jpg", NULL, "inf-1", now); /* not the item's key */
    assert_int_equal(pf_sink_auth_refused(&f->s), 2);
    record(f, PF_MSG_RESULT, 7, KEY7, "in/a.jpg", NULL, "rogue", now);      /* another holder: waits */
    record(f, PF_MSG_ERROR, 7, KEY7, "in/a.jpg", "preprocess", "inf-1", now); /* wrong stage: waits */
    assert_int_equal(f->s.n_batch, 0);
    assert_int_equal(pf_sink_auth_waited(&f->s), 2);
    record(f, PF_MSG_RESULT, 7, KEY7, "in/a.jpg", NULL, "inf-1", now);      /* the holder's result */
    assert_int_equal(f->s.n_batch, 1);
    record(f, PF_MSG_RESULT, 7, KEY7, "in/a.jpg", NULL, "inf-1", now);      /* one record per lease */
    assert_int_equal(f->s.n_batch, 1);
    assert_int_equal(pf_sink_auth_waited(&f->s), 3);
    pf_sink_auth_tick(&f->s, now + 6);   /* the three waiting: no note came, refused */
    assert_int_equal(pf_sink_auth_refused(&f->s), 5);
    assert_int_equal(f->s.n_batch, 1);
}

/* A record that overtakes its note waits for it; a preprocess holder may only fail the item. */
static void test_overtaking(void **state)
{
    fixture *f = *state;
    double now = pf_now();
    note(f, PF_MSG_LEASE, 3, "in/b.jpg", "preprocess", "pre-1");
    record(f, PF_MSG_RESULT, 3, KEY7, "in/b.jpg", NULL, "inf-1", now);   /* before the inference lease note */
    assert_int_equal(f->s.n_batch, 0);
    note(f, PF_MSG_UNLEASE, 3, NULL, NULL, NULL);
    note(f, PF_MSG_LEASE, 3, "in/b.jpg", "inference", "inf-1");
    assert_int_equal(f->s.n_batch, 1);
    assert_int_equal(pf_sink_auth_refused(&f->s), 0);
    note(f, PF_MSG_LEASE, 4, "in/c.jpg", "preprocess", "pre-1");
    record(f, PF_MSG_RESULT, 4, KEY7, "in/c.jpg", NULL, "pre-1", now);            /* a result from preprocess */
    record(f, PF_MSG_ERROR, 4, KEY7, "in/c.jpg", "preprocess", "pre-1", now);     /* failing it: fine */
    assert_int_equal(f->s.n_batch, 2);
    pf_sink_auth_tick(&f->s, now + 6);
    assert_int_equal(pf_sink_auth_refused(&f->s), 1);
}

/* An ended lease lets nothing in; a welcome forgets the leases (the producer sends them all again). */
static void test_unlease_and_welcome(void **state)
{
    fixture *f = *state;
    double now = pf_now();
    note(f, PF_MSG_LEASE, 5, "in/d.jpg", "inference", "inf-1");
    note(f, PF_MSG_UNLEASE, 5, NULL, NULL, NULL);
    record(f, PF_MSG_RESULT, 5, KEY7, "in/d.jpg", NULL, "inf-1", now);
    note(f, PF_MSG_LEASE, 6, "in/e.jpg", "inference", "inf-1");
    pf_msg w;
    pf_msg_init(&w, PF_MSG_WELCOME);
    w.instance = "run2";
    w.leases = 1;
    pf_sink_auth_welcomed(&f->s, &w, 1);
    record(f, PF_MSG_RESULT, 6, KEY7, "in/e.jpg", NULL, "inf-1", now);
    pf_sink_auth_tick(&f->s, now + 6);
    assert_int_equal(f->s.n_batch, 0);
    assert_int_equal(pf_sink_auth_refused(&f->s), 2);
    /* a producer that promises no notes: nothing from a worker gets in */
    w.leases = 0;
    pf_sink_auth_welcomed(&f->s, &w, 0);
    note(f, PF_MSG_LEASE, 8, "in/f.jpg", "inference", "inf-1");
    record(f, PF_MSG_RESULT, 8, KEY7, "in/f.jpg", NULL, "inf-1", now);
    pf_sink_auth_tick(&f->s, now + 6);
    assert_int_equal(f->s.n_batch, 0);
    assert_int_equal(pf_sink_auth_refused(&f->s), 3);
}

/* The producer's own error record is written, and ends the item's lease. */
static void test_producer_record(void **state)
{
    fixture *f = *state;
    note(f, PF_MSG_LEASE, 9, "in/g.jpg", "inference", "inf-1");
    pf_msg m;
    pf_msg_init(&m, PF_MSG_ERROR);
    m.id = 9;
    m.key = KEY7;
    m.path = "in/g.jpg";
    m.has_task = 1;
    m.task.prompt = "caption en";
    m.stage = "producer";
    m.message = "gave up after 3 attempts";
    pf_sink_auth_producer_record(&f->s, &m);
    assert_int_equal(f->s.n_batch, 1);
    record(f, PF_MSG_RESULT, 9, KEY7, "in/g.jpg", NULL, "inf-1", pf_now());
    pf_sink_auth_tick(&f->s, pf_now() + 6);
    assert_int_equal(f->s.n_batch, 1);
    assert_int_equal(pf_sink_auth_refused(&f->s), 1);
}

/* NOTES as one `notes` message, through the codec (what the producer's batch makes, as the sink decodes it). */
static void notes_msg(const pf_note *notes, size_t n, uint8_t **buf, size_t *len)
{
    pf_notes_batch *b = pf_notes_batch_new("run1");
    pf_err e = {{0}};
    for (size_t i = 0; i < n; i++)
        assert_int_equal(pf_notes_batch_add(b, &notes[i], &e), 0);
    assert_int_equal(pf_notes_batch_take(b, buf, len, &e), 0);
    pf_notes_batch_free(b);
}

static void batch(fixture *f, const pf_note *notes, size_t n)
{
    uint8_t *buf;
    size_t len;
    notes_msg(notes, n, &buf, &len);
    pf_msg m;
    pf_err e = {{0}};
    assert_int_equal(pf_msg_decode(buf, len, &f->o.lim, &m, &e), 0);
    pf_sink_auth_on_note(&f->s, &m, pf_now());
    pf_msg_free(&m);
    free(buf);
}

/* An item's whole life in one batch: preprocess lease, its end, inference lease. Applied in order: the
 * inference holder's result is taken, the preprocess holder has no say any more. */
static const pf_note g_life[3] = {
    {PF_MSG_LEASE, 11, KEY7, "in/h.jpg", "preprocess", "pre-1", NULL},
    {PF_MSG_UNLEASE, 11, KEY7, NULL, NULL, NULL, NULL},
    {PF_MSG_LEASE, 11, KEY7, "in/h.jpg", "inference", "inf-1", NULL},
};

static void test_batch_in_order(void **state)
{
    fixture *f = *state;
    double now = pf_now();
    batch(f, g_life, 3);
    record(f, PF_MSG_ERROR, 11, KEY7, "in/h.jpg", "preprocess", "pre-1", now);   /* its lease ended: waits */
    assert_int_equal(f->s.n_batch, 0);
    record(f, PF_MSG_RESULT, 11, KEY7, "in/h.jpg", NULL, "inf-1", now);
    assert_int_equal(f->s.n_batch, 1);
    pf_sink_auth_tick(&f->s, now + 6);   /* the preprocess holder's error: no note came for it */
    assert_int_equal(pf_sink_auth_refused(&f->s), 1);
    assert_int_equal(f->s.n_batch, 1);
    /* the other order (the inference lease, then its end): nothing from the holder gets in */
    const pf_note ended[2] = {{PF_MSG_LEASE, 12, KEY7, "in/i.jpg", "inference", "inf-1", NULL},
                              {PF_MSG_UNLEASE, 12, KEY7, NULL, NULL, NULL, NULL}};
    batch(f, ended, 2);
    record(f, PF_MSG_RESULT, 12, KEY7, "in/i.jpg", NULL, "inf-1", now);
    pf_sink_auth_tick(&f->s, now + 6);
    assert_int_equal(f->s.n_batch, 1);
    assert_int_equal(pf_sink_auth_refused(&f->s), 2);
}

/* The result comes before the batch that leases its item to its sender (the batch travels on the producer's
 * connection): it waits, and the batch lets it in once, with nothing refused. */
static void test_record_overtakes_batch(void **state)
{
    fixture *f = *state;
    double now = pf_now();
    record(f, PF_MSG_RESULT, 11, KEY7, "in/h.jpg", NULL, "inf-1", now);
    record(f, PF_MSG_RESULT, 11, KEY7, "in/h.jpg", NULL, "rogue", now);   /* a guess beside it */
    assert_int_equal(f->s.n_batch, 0);
    assert_int_equal(pf_sink_auth_waited(&f->s), 2);
    batch(f, g_life, 3);
    assert_int_equal(f->s.n_batch, 1);
    assert_int_equal(pf_sink_auth_refused(&f->s), 0);
    pf_sink_auth_tick(&f->s, now + 6);   /* the guess: its verdict stands after the wait */
    assert_int_equal(pf_sink_auth_refused(&f->s), 1);
    assert_int_equal(f->s.n_batch, 1);
}

/* Malformed batches on the sink's connection to the producer: dropped whole by the decoder (logged), no crash,
 * no lease taken from them; the good batch after them is applied. Through the sink's own read of that
 * connection (pf_sink_read_producer), on an inproc pair. */
static void test_malformed_batch(void **state)
{
    fixture *f = *state;
    void *ctx = zmq_ctx_new();
    void *feed = zmq_socket(ctx, ZMQ_PAIR);
    f->s.psock = zmq_socket(ctx, ZMQ_PAIR);
    assert_int_equal(zmq_bind(feed, "inproc://test_sink_auth_notes"), 0);
    assert_int_equal(zmq_connect(f->s.psock, "inproc://test_sink_auth_notes"), 0);
    uint8_t *good;
    size_t len;
    notes_msg(g_life, 3, &good, &len);
    /* truncated in the middle of an entry */
    assert_int_equal(zmq_send(feed, good, len - 7, 0), (int)len - 7);
    /* an entry's stage replaced by one that is not a worker's ("preprocess" -> "producer!!"): a whole
     * message, well formed msgpack, refused for that entry */
    uint8_t *bad = malloc(len);
    memcpy(bad, good, len);
    uint8_t *at = memmem(bad, len, "preprocess", 10);
    assert_non_null(at);
    memcpy(at, "producer!!", 10);
    assert_int_equal(zmq_send(feed, bad, len, 0), (int)len);
    /* an entry count larger than the entries that follow */
    memcpy(bad, good, len);
    at = memmem(bad, len, "notes\xdd", 6);
    assert_non_null(at);
    at[6] = 0x7f;   /* 2^31 entries: more than the limit and than the bytes that follow */
    assert_int_equal(zmq_send(feed, bad, len, 0), (int)len);
    assert_int_equal(pf_sink_read_producer(&f->s, pf_now()), 0);   /* nothing valid came */
    double now = pf_now();
    record(f, PF_MSG_RESULT, 11, KEY7, "in/h.jpg", NULL, "inf-1", now);
    assert_int_equal(f->s.n_batch, 0);   /* no lease came of them: it waits */
    assert_int_equal(zmq_send(feed, good, len, 0), (int)len);
    record(f, PF_MSG_RESULT, 12, KEY7, "in/i.jpg", NULL, "inf-1", now);   /* reads the good batch before waiting */
    assert_int_equal(f->s.n_batch, 1);   /* item 11's result, let in by the batch */
    pf_sink_auth_tick(&f->s, now + 6);
    assert_int_equal(pf_sink_auth_refused(&f->s), 1);   /* item 12: no lease for it anywhere */
    free(bad);
    free(good);
    zmq_close(feed);
    zmq_close(f->s.psock);
    f->s.psock = NULL;
    zmq_ctx_term(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_holder_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overtaking, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unlease_and_welcome, setup, teardown),
        cmocka_unit_test_setup_teardown(test_producer_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_overtakes_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_batch, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
