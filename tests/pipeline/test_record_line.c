/* The sink's record line written straight from the message (pipeline/record_line.c) against what it replaced:
 * jansson's compact dump of pf_record_make, '\n' appended. Byte for byte, for hand-made records that reach
 * every rule (invalid UTF-8, control characters, NUL in the text, the timings' reals, boxes, objects, meta
 * fields) and for random ones; and the reals' spelling (pipeline/json_real.c) against snprintf + jansson's
 * clean-up and against jansson itself. */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pipeline/json_real.h"
#include "pipeline/record.h"
#include "pipeline/record_line.h"

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

/* ---------- reals ---------- */

static int g_real_bad;

static void real_same(double v)
{
    if (!isfinite(v))
        return;
    char fast[PF_JSON_REAL_MAX], slow[PF_JSON_REAL_MAX];
    size_t nf = pf_json_real(v, fast), ns = pf_json_real_slow(v, slow);
    if (nf != ns || strcmp(fast, slow) != 0 || strlen(fast) != nf) {
        if (g_real_bad++ < 10)
            print_error("%a: fast %s, snprintf %s\n", v, fast, slow);
    }
}

static void real_same_as_jansson(double v)
{
    char mine[PF_JSON_REAL_MAX];
    pf_json_real(v, mine);
    json_t *j = json_real(v);
    char *s = json_dumps(j, JSON_ENCODE_ANY);
    assert_non_null(s);
    if (strcmp(mine, s) != 0) {
        print_error("%a: mine %s, jansson %s\n", v, mine, s);
        g_real_bad++;
    }
    free(s);
    json_decref(j);
}

static void test_real_edges(void **state)
{
    (void)state;
    const struct {
        double v;
        const char *want;
    } known[] = {
        {0.0, "0.0"},
        {-0.0, "-0.0"},
        {1.0, "1.0"},
        {100.0, "100.0"},
        {0.1, "0.10000000000000001"},
        {0.0012345, "0.0012344999999999999"},
        {1e-5, "1.0000000000000001e-5"},
        {1e-4, "0.0001"},
        {1e16, "10000000000000000.0"},
        {1e17, "1e17"},
        {1e21, "1e21"},
        {123456789012345678.0, "1.2345678901234568e17"},
        {5e-324, "4.9406564584124654e-324"},
        {1.7976931348623157e308, "1.7976931348623157e308"},
        {ldexp(1, -25), "2.9802322387695312e-8"},   /* ...3125 exactly: a tie, to even */
        {ldexp(3, -25), "8.9406967163085938e-8"},   /* ...9375: a tie, up to even */
        {-2.5, "-2.5"},
    };
    for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
        char got[PF_JSON_REAL_MAX];
        size_t n = pf_json_real(known[i].v, got);
        if (strcmp(got, known[i].want) != 0)
            fail_msg("%a: %s, want %s", known[i].v, got, known[i].want);
        assert_int_equal(n, strlen(known[i].want));
        real_same_as_jansson(known[i].v);
    }
    /* around every power of ten (log10 is one off there), and the 9.99..95 that rounds up to the next one */
    for (int k = -330; k <= 308; k++) {
        double p = pow(10, k);
        real_same(p);
        real_same(nextafter(p, 0));
        real_same(nextafter(p, INFINITY));
        real_same(-p);
        real_same(p * 9.99999999999999995);
    }
    /* exact binary fractions: ties at the 17th digit */
    for (int j = -80; j <= 140; j++)
        for (int m = 1; m < 3000; m++)
            real_same(ldexp(m, j));
    assert_int_equal(g_real_bad, 0);
}

static void test_real_random(void **state)
{
    (void)state;
    for (long i = 0; i < 1000000; i++) {   /* any bit pattern: every exponent, the fallback included */
        uint64_t u = rnd();
        double v;
        memcpy(&v, &u, sizeof v);
        real_same(v);
    }
    for (long i = 0; i < 1000000; i++) {   /* what timings hold: seconds from ns to days */
        double v = (double)(rnd() >> 11) / 9007199254740992.0 * pow(10, (int)(rnd() % 16) - 9);
        real_same(v);
    }
    for (long i = 0; i < 20000; i++)
        real_same_as_jansson((double)(rnd() >> 11) / 9007199254740992.0 * pow(10, (int)(rnd() % 40) - 20));
    assert_int_equal(g_real_bad, 0);
}

/* ---------- record lines ---------- */

/* The line as the sink wrote it before: jansson's compact dump of pf_record_make, then '\n'. */
static int put_cb(const char *buf, size_t size, void *data)
{
    pf_line_buf *b = data;
    b->p = realloc(b->p, b->n + size + 1);
    assert_non_null(b->p);
    memcpy(b->p + b->n, buf, size);
    b->n += size;
    return 0;
}

static int g_line_bad;

static void line_same(const pf_msg *m)
{
    json_t *rec = pf_record_make(m);
    pf_line_buf want = {0}, got = {0};
    assert_int_equal(json_dump_callback(rec, put_cb, &want, JSON_COMPACT), 0);
    put_cb("\n", 1, &want);
    json_decref(rec);
    assert_int_equal(pf_record_line(m, &got), 0);
    if (got.n != want.n || memcmp(got.p, want.p, got.n) != 0) {
        if (g_line_bad++ < 5)
            print_error("line differs:\n got  %.*s want %.*s", (int)got.n, got.p, (int)want.n, want.p);
    }
    /* appended: a second line after the first, the first unchanged */
    size_t n1 = got.n;
    assert_int_equal(pf_record_line(m, &got), 0);
    assert_int_equal(got.n, 2 * n1);
    assert_memory_equal(got.p, got.p + n1, n1);
    free(want.p);
    free(got.p);
}

static pf_msg result(void)
{
    pf_msg m;
    pf_msg_init(&m, PF_MSG_RESULT);
    m.id = 7;
    m.path = "/data/a.jpg";
    m.key = "0123456789abcdef0123456789abcdef-0123456789abcdef";
    m.task.prompt = "caption en";
    m.text = "a cat on a mat";
    m.text_len = strlen(m.text);
    m.width = 640;
    m.height = 480;
    m.attempt = 0;
    m.timings = (pf_timings){0.0012345, 0.01, 0.5, 0.1, 1.25, 1.35};
    m.w_preprocess = "host-pre-1";
    m.w_inference = "host-inf-1";
    return m;
}

static void test_line_cases(void **state)
{
    (void)state;
    static int32_t ids[] = {2, 0, -5, 2147483647, -2147483647 - 1};
    pf_msg m = result();
    m.ids = ids;
    m.n_ids = 5;
    m.stopped_by_eos = 1;
    line_same(&m);

    pf_msg t = m;   /* strings that need escaping, invalid UTF-8, NUL in the text */
    t.path = "/d/\"q\"\\b\x01\t\n\x7f/\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80.jpg";
    line_same(&t);
    t.path = "/d/\xff\xfe bad \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \xe2\x82 cut\xf0\x9f\x98";   /* + path_b64 */
    t.key = "k\xff";
    t.task.prompt = "caption \x80 en";
    line_same(&t);
    static const char nul_text[] = "nul\0inside\x1f\"\\";
    t.text = nul_text;
    t.text_len = sizeof nul_text - 1;
    line_same(&t);
    t.text = "bad \xff text";   /* json_stringn refuses it: no "text" field at all */
    t.text_len = strlen(t.text);
    line_same(&t);
    t.text = NULL;
    t.text_len = 0;
    t.n_ids = 0;
    t.stopped_by_eos = 0;
    line_same(&t);
    t.path = NULL;
    t.key = NULL;
    t.task.prompt = NULL;
    t.w_preprocess = t.w_inference = NULL;
    line_same(&t);

    pf_msg r = m;   /* timings: absent (-1), zero, minus zero, infinity (json_real refuses it), NaN */
    r.timings = (pf_timings){-1, 0.0, -0.0, INFINITY, NAN, 1e-7};
    r.width = 0;
    r.attempt = 3;
    r.content_key = "fedcba9876543210fedcba9876543210-0123456789abcdef";
    r.w_preprocess = "";
    line_same(&r);
    r.timings = (pf_timings){-1, -1, -1, -1, -1, -1};
    r.height = 0;
    r.width = 5;
    r.w_preprocess = NULL;
    line_same(&r);

    pf_msg d = m;   /* a detect prompt: boxes */
    d.task.prompt = "detect cat ; dog";
    d.text = "<loc0100><loc0200><loc0300><loc0400> cat ; <loc0000><loc0000><loc1023><loc1023> d\xc3\xb6g ; junk";
    d.text_len = strlen(d.text);
    line_same(&d);
    d.text = "nothing found";
    d.text_len = strlen(d.text);
    line_same(&d);

    pf_msg s = m;   /* a segment prompt: objects from the text, from the worker, or a note */
    s.task.prompt = "segment cat";
    s.text = "<loc0100><loc0200><loc0300><loc0400><seg001><seg002><seg003><seg004><seg005><seg006><seg007><seg008>"
             "<seg009><seg010><seg011><seg012><seg013><seg014><seg015><seg016> cat";
    s.text_len = strlen(s.text);
    line_same(&s);
    s.objects = "[{\"label\":\"cat\",\"x0\":1.5,\"loc\":[1,2,3,4],\"mask\":null}]";
    s.objects_len = strlen(s.objects);
    line_same(&s);
    s.objects = "{not an array";
    s.objects_len = strlen(s.objects);
    line_same(&s);

    pf_msg e;   /* error records */
    pf_msg_init(&e, PF_MSG_ERROR);
    e.id = 3;
    e.path = "/data/b.png";
    e.key = m.key;
    e.task.prompt = "ocr";
    e.stage = "preprocess";
    e.message = "cannot decode: \"truncated\"\n\xff";
    e.timings.read_s = 0.25;
    e.w_preprocess = "pre";
    line_same(&e);
    e.stage = e.message = NULL;
    e.width = e.height = 3;
    line_same(&e);

    /* meta fields: added unless the record has the field (text is not a field when it was refused) */
    pf_msg mm = m;
    mm.meta = "{\"id\":\"x-1\",\"key\":\"forged\",\"extra\":{\"score\":0.1,\"n\":[1,2.5,null,true]},\"text\":1,"
              "\"\xc3\xa9\\u00e9\\n\":\"\\u0001\",\"path_b64\":\"no\",\"note\":-0.0,\"boxes\":1e300}";
    line_same(&mm);
    mm.text = "\xff";
    mm.text_len = 1;
    line_same(&mm);
    mm.meta = "[1,2]";   /* not an object: dropped */
    line_same(&mm);
    mm.meta = "{broken";
    line_same(&mm);
    mm.meta = "";
    line_same(&mm);
    assert_int_equal(g_line_bad, 0);
}

/* A random string from the bytes that matter: plain, escaped, control, UTF-8 lead and continuation bytes. */
static char *rand_str(char *buf, size_t cap, size_t *len, int allow_nul)
{
    static const char pool[] = "ab/ .\"\\\t\n\x01\x1f\x7f\x80\xbf\xc0\xc2\xa9\xe2\x82\xac\xed\xa0\xf0\x9f\x98\xf4\x90\xf5\xff";
    size_t n = rnd() % (cap - 1);
    for (size_t i = 0; i < n; i++) {
        buf[i] = pool[rnd() % (sizeof pool - 1)];
        if (!allow_nul && buf[i] == 0)
            buf[i] = 'z';
        if (allow_nul && rnd() % 50 == 0)
            buf[i] = 0;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

static double rand_timing(void)
{
    switch (rnd() % 6) {
    case 0: return -1;
    case 1: return 0;
    case 2: {
        uint64_t u = rnd();
        double v;
        memcpy(&v, &u, sizeof v);
        return v;
    }
    default: return (double)(rnd() >> 11) / 9007199254740992.0 * pow(10, (int)(rnd() % 10) - 6);
    }
}

static void test_line_random(void **state)
{
    (void)state;
    static const char *const prompts[] = {"caption en", "ocr", "detect cat", "segment cat ; dog", "answer en why?"};
    static const char *const texts[] = {
        "<loc0001><loc0002><loc1000><loc1020> cat", "<loc0100><loc0200><loc0300><loc0400><seg001><seg002><seg003>"
        "<seg004><seg005><seg006><seg007><seg008><seg009><seg010><seg011><seg012><seg013><seg014><seg015><seg016> dog"};
    static const char *const metas[] = {NULL, "{\"id\":1}", "{\"extra\":{\"a\":0.3}}", "{\"ids\":[]}", "7"};
    for (int it = 0; it < 20000; it++) {
        char path[40], key[40], prompt[40], text[60], stage[20], msg[40], wp[20], wi[20], ck[20];
        int32_t ids[8];
        pf_msg m;
        pf_msg_init(&m, rnd() % 3 ? PF_MSG_RESULT : PF_MSG_ERROR);
        m.path = rand_str(path, sizeof path, NULL, 0);
        m.key = rand_str(key, sizeof key, NULL, 0);
        m.task.prompt = rnd() % 2 ? prompts[rnd() % 5] : rand_str(prompt, sizeof prompt, NULL, 0);
        if (rnd() % 3 == 0) {
            m.text = texts[rnd() % 2];
            m.text_len = strlen(m.text);
        } else if (rnd() % 8) {
            m.text = rand_str(text, sizeof text, &m.text_len, 1);
        }
        m.n_ids = rnd() % 8;
        for (size_t i = 0; i < m.n_ids; i++)
            ids[i] = (int32_t)rnd();
        m.ids = ids;
        m.stopped_by_eos = (int)(rnd() % 2);
        m.stage = rnd() % 4 ? rand_str(stage, sizeof stage, NULL, 0) : NULL;
        m.message = rnd() % 4 ? rand_str(msg, sizeof msg, NULL, 0) : NULL;
        m.content_key = rnd() % 3 ? NULL : rand_str(ck, sizeof ck, NULL, 0);
        m.w_preprocess = rnd() % 3 ? rand_str(wp, sizeof wp, NULL, 0) : NULL;
        m.w_inference = rnd() % 3 ? rand_str(wi, sizeof wi, NULL, 0) : NULL;
        m.width = (int32_t)(rnd() % 3) * 100 - 1;
        m.height = (int32_t)(rnd() % 3) * 80;
        m.attempt = (int32_t)(rnd() % 5);
        m.timings = (pf_timings){rand_timing(), rand_timing(), rand_timing(),
                                 rand_timing(), rand_timing(), rand_timing()};
        m.meta = metas[rnd() % 5];
        line_same(&m);
    }
    assert_int_equal(g_line_bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_edges),
        cmocka_unit_test(test_real_random),
        cmocka_unit_test(test_line_cases),
        cmocka_unit_test(test_line_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
