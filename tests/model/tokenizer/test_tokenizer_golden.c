/* Golden tests of the tokenizer and processor (issue 3): every case of
 * PF_GOLDEN_DIR/tokenizer/{cases,decode_cases,processor_cases,variant_cases}.jsonl through the library,
 * byte for byte; the variant file against a copy of tokenizer.json with the loc/seg `normalized` flags
 * flipped (written to a temporary directory); concurrent encoding from several threads on one shared
 * tokenizer; and long inputs (a 50 KB word, 100k spaces or newlines) that must round-trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "model/tokenizer/processor.h"
#include "model/tokenizer/tokenizer.h"

#define TOK_DIR PF_GOLDEN_DIR "/tokenizer"

static pf_tokenizer *g_tok;

/* ---- helpers ---- */

typedef struct lines {
    json_t **v;
    size_t n;
} lines;

static lines read_jsonl(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", TOK_DIR, name);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s", path);
    lines l = {0};
    size_t cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    while ((got = getline(&line, &lcap, f)) != -1) {
        if (got <= 1)
            continue;
        json_error_t jerr;
        json_t *o = json_loadb(line, (size_t)got, JSON_ALLOW_NUL, &jerr);
        if (!o)
            fail_msg("%s line %zu: %s", name, l.n + 1, jerr.text);
        if (l.n == cap) {
            cap = cap ? cap * 2 : 256;
            l.v = realloc(l.v, cap * sizeof *l.v);
        }
        l.v[l.n++] = o;
    }
    free(line);
    fclose(f);
    assert_true(l.n > 0);
    return l;
}

static void free_lines(lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        json_decref(l->v[i]);
    free(l->v);
}

/* ids (n of them) equal to the JSON array a? */
static int ids_equal(const int32_t *ids, size_t n, const json_t *a)
{
    if (!json_is_array(a) || json_array_size(a) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(a, i)) != ids[i])
            return 0;
    return 1;
}

static void show_mismatch(const char *what, size_t idx, const int32_t *ids, size_t n, const json_t *want)
{
    char *w = json_dumps(want, JSON_COMPACT);
    fprintf(stderr, "%s[%zu]: got %zu ids [", what, idx, n);
    for (size_t i = 0; i < n && i < 40; i++)
        fprintf(stderr, "%d,", ids[i]);
    fprintf(stderr, "...] want %.400s\n", w ? w : "?");
    free(w);
}

static int group_setup(void **state)
{
    (void)state;
    pf_err err;
    if (pf_tokenizer_load(TOK_DIR "/tokenizer.json", &g_tok, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    pf_tokenizer_free(g_tok);
    return 0;
}

/* ---- encode ---- */

static int check_encode_file(const pf_tokenizer *tok, const char *file, const char *what)
{
    lines l = read_jsonl(file);
    int bad = 0;
    pf_ids ids = {0};
    pf_err err;
    for (size_t i = 0; i < l.n; i++) {
        json_t *c = l.v[i], *text = json_object_get(c, "text");
        ids.n = 0;
        if (pf_tokenizer_encode(tok, json_string_value(text), json_string_length(text), &ids, &err) != 0) {
            fprintf(stderr, "%s[%zu]: %s\n", what, i, err.msg);
            bad++;
            continue;
        }
        if (!ids_equal(ids.v, ids.n, json_object_get(c, "ids"))) {
            if (bad < 10)
                show_mismatch(what, i, ids.v, ids.n, json_object_get(c, "ids"));
            bad++;
            continue;
        }
        json_t *toks = json_object_get(c, "tokens");
        for (size_t k = 0; toks && k < ids.n; k++) {
            size_t len;
            const char *s = pf_tokenizer_id_to_token(tok, ids.v[k], &len);
            json_t *want = json_array_get(toks, k);
            if (!s || len != json_string_length(want) || memcmp(s, json_string_value(want), len) != 0) {
                fprintf(stderr, "%s[%zu]: token %zu (id %d) differs\n", what, i, k, ids.v[k]);
                bad++;
                break;
            }
        }
    }
    pf_ids_free(&ids);
    free_lines(&l);
    return bad;
}

static void test_encode_cases(void **state)
{
    (void)state;
    assert_int_equal(check_encode_file(g_tok, "cases.jsonl", "cases"), 0);
}

/* decode(encode(text)) == text, with U+2581 read as a space (the decoder's Replace) */
static void test_roundtrip_cases(void **state)
{
    (void)state;
    lines l = read_jsonl("cases.jsonl");
    pf_ids ids = {0};
    pf_err err;
    int bad = 0;
    for (size_t i = 0; i < l.n; i++) {
        json_t *text = json_object_get(l.v[i], "text");
        const char *t = json_string_value(text);
        size_t len = json_string_length(text);
        ids.n = 0;
        assert_int_equal(pf_tokenizer_encode(g_tok, t, len, &ids, &err), 0);
        char *out;
        size_t olen;
        assert_int_equal(pf_tokenizer_decode(g_tok, ids.v, ids.n, 0, &out, &olen, &err), 0);
        char *want = malloc(len + 1);
        size_t w = 0;
        for (size_t k = 0; k < len;) {
            if (k + 3 <= len && memcmp(t + k, "\xE2\x96\x81", 3) == 0) {
                want[w++] = ' ';
                k += 3;
            } else {
                want[w++] = t[k++];
            }
        }
        if (olen != w || memcmp(out, want, w) != 0) {
            fprintf(stderr, "roundtrip[%zu] differs\n", i);
            bad++;
        }
        free(want);
        free(out);
    }
    pf_ids_free(&ids);
    free_lines(&l);
    assert_int_equal(bad, 0);
}

/* ---- decode ---- */

static void test_decode_cases(void **state)
{
    (void)state;
    lines l = read_jsonl("decode_cases.jsonl");
    int bad = 0;
    pf_err err;
    for (size_t i = 0; i < l.n; i++) {
        json_t *c = l.v[i], *arr = json_object_get(c, "ids"), *want = json_object_get(c, "text");
        size_t n = json_array_size(arr);
        int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
        for (size_t k = 0; k < n; k++) {
            json_int_t v = json_integer_value(json_array_get(arr, k));
            ids[k] = v > INT32_MAX ? -1 : (int32_t)v;
        }
        char *out;
        size_t len;
        assert_int_equal(pf_tokenizer_decode(g_tok, ids, n, json_is_true(json_object_get(c, "skip_special")),
                                             &out, &len, &err),
                         0);
        if (len != json_string_length(want) || memcmp(out, json_string_value(want), len) != 0) {
            if (bad < 10)
                fprintf(stderr, "decode[%zu]: got \"%.*s\" want \"%s\"\n", i, (int)len, out,
                        json_string_value(want));
            bad++;
        }
        free(out);
        free(ids);
    }
    free_lines(&l);
    assert_int_equal(bad, 0);
}

/* ---- processor ---- */

static pf_proc_text text_of(const json_t *v)
{
    if (!v || json_is_null(v))
        return (pf_proc_text){NULL, 0};
    return (pf_proc_text){json_string_value(v), json_string_length(v)};
}

static int check_matrix(const int32_t *m, size_t rows, size_t cols, const json_t *want)
{
    if (!json_is_array(want) || json_array_size(want) != rows)
        return 0;
    for (size_t r = 0; r < rows; r++)
        if (!ids_equal(m + r * cols, cols, json_array_get(want, r)))
            return 0;
    return 1;
}

static void test_processor_cases(void **state)
{
    (void)state;
    lines l = read_jsonl("processor_cases.jsonl");
    int bad = 0, singles = 0, batches = 0;
    pf_err err;
    for (size_t i = 0; i < l.n; i++) {
        json_t *c = l.v[i];
        int seq = (int)json_integer_value(json_object_get(c, "image_seq_len"));
        json_t *prompts = json_object_get(c, "prompts");
        if (!prompts) {
            singles++;
            pf_proc_row row;
            pf_proc_text p = text_of(json_object_get(c, "prompt"));
            if (!p.s)
                p = (pf_proc_text){"", 0};
            int nimg = (int)json_integer_value(json_object_get(c, "num_images"));
            if (pf_processor_build_n(g_tok, p, text_of(json_object_get(c, "suffix")), seq, nimg, &row,
                                     &err) != 0) {
                fprintf(stderr, "processor[%zu]: %s\n", i, err.msg);
                bad++;
                continue;
            }
            json_t *tt = json_object_get(c, "token_type_ids"), *lab = json_object_get(c, "labels");
            int ok = ids_equal(row.input_ids.v, row.input_ids.n, json_object_get(c, "input_ids"));
            if (row.has_suffix)
                ok = ok && ids_equal(row.token_type_ids.v, row.token_type_ids.n, tt) &&
                     ids_equal(row.labels.v, row.labels.n, lab);
            else
                ok = ok && json_is_null(tt) && json_is_null(lab);
            if (!ok) {
                show_mismatch("processor", i, row.input_ids.v, row.input_ids.n,
                              json_object_get(c, "input_ids"));
                bad++;
            }
            pf_proc_row_free(&row);
            continue;
        }
        batches++;
        size_t n = json_array_size(prompts);
        json_t *sfx = json_object_get(c, "suffixes"), *nimg = json_object_get(c, "num_images");
        pf_proc_text *p = calloc(n, sizeof *p), *s = calloc(n, sizeof *s);
        int *ni = calloc(n, sizeof *ni);
        for (size_t k = 0; k < n; k++) {
            p[k] = text_of(json_array_get(prompts, k));
            if (sfx && !json_is_null(sfx))
                s[k] = text_of(json_array_get(sfx, k));
            ni[k] = (int)json_integer_value(json_array_get(nimg, k));
        }
        assert_string_equal(json_string_value(json_object_get(c, "padding_side")), "left");
        pf_proc_batch b;
        int has_sfx = sfx && !json_is_null(sfx);
        assert_int_equal(
            pf_processor_build_batch(g_tok, p, has_sfx ? s : NULL, n, seq, ni, PF_PROC_PAD_LEFT, &b, &err),
            0);
        int ok = check_matrix(b.input_ids, b.rows, b.cols, json_object_get(c, "input_ids")) &&
                 check_matrix(b.attention_mask, b.rows, b.cols, json_object_get(c, "attention_mask"));
        if (has_sfx)
            ok = ok && check_matrix(b.token_type_ids, b.rows, b.cols, json_object_get(c, "token_type_ids")) &&
                 check_matrix(b.labels, b.rows, b.cols, json_object_get(c, "labels"));
        else
            ok = ok && json_is_null(json_object_get(c, "labels"));
        if (!ok) {
            fprintf(stderr, "processor batch[%zu] differs\n", i);
            bad++;
        }
        pf_proc_batch_free(&b);
        free(p);
        free(s);
        free(ni);
    }
    free_lines(&l);
    assert_true(singles > 0 && batches > 0);
    assert_int_equal(bad, 0);
}

/* ---- variant: loc/seg normalized flags flipped ---- */

static void test_variant_cases(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *root = json_load_file(TOK_DIR "/tokenizer.json", 0, &jerr);
    assert_non_null(root);
    regex_t re;
    assert_int_equal(regcomp(&re, "^<(loc[0-9]{4}|seg[0-9]{3})>$", REG_EXTENDED | REG_NOSUB), 0);
    json_t *added = json_object_get(root, "added_tokens");
    size_t i, flipped = 0;
    json_t *a;
    json_array_foreach(added, i, a)
    {
        if (regexec(&re, json_string_value(json_object_get(a, "content")), 0, NULL, 0) == 0) {
            json_object_set_new(a, "normalized",
                                json_boolean(!json_is_true(json_object_get(a, "normalized"))));
            flipped++;
        }
    }
    regfree(&re);
    assert_int_equal(flipped, 1152);
    char dir[] = "/tmp/pf_tok_variant_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    assert_int_equal(json_dump_file(root, path, JSON_COMPACT), 0);
    json_decref(root);

    pf_tokenizer *var;
    pf_err err;
    int rc = pf_tokenizer_load(path, &var, &err);
    unlink(path);
    rmdir(dir);
    if (rc != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(check_encode_file(var, "variant_cases.jsonl", "variant"), 0);

    /* same_as_primary: the primary tokenizer gives the same ids where the file says so */
    lines l = read_jsonl("variant_cases.jsonl");
    pf_ids ids = {0};
    int same = 0;
    for (size_t k = 0; k < l.n; k++) {
        json_t *c = l.v[k], *text = json_object_get(c, "text");
        ids.n = 0;
        assert_int_equal(
            pf_tokenizer_encode(g_tok, json_string_value(text), json_string_length(text), &ids, &err), 0);
        int eq = ids_equal(ids.v, ids.n, json_object_get(c, "ids"));
        assert_int_equal(eq, json_is_true(json_object_get(c, "same_as_primary")));
        same += eq;
    }
    assert_true(same > 0);
    pf_ids_free(&ids);
    free_lines(&l);
    pf_tokenizer_free(var);
}

/* ---- threads ---- */

typedef struct thread_arg {
    lines *l;
    int bad;
} thread_arg;

static void *encode_all(void *p)
{
    thread_arg *a = p;
    pf_ids ids = {0};
    pf_err err;
    for (int rep = 0; rep < 3; rep++)
        for (size_t i = 0; i < a->l->n; i++) {
            json_t *c = a->l->v[i], *text = json_object_get(c, "text");
            ids.n = 0;
            if (pf_tokenizer_encode(g_tok, json_string_value(text), json_string_length(text), &ids, &err) !=
                    0 ||
                !ids_equal(ids.v, ids.n, json_object_get(c, "ids")))
                a->bad++;
        }
    pf_ids_free(&ids);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    lines l = read_jsonl("cases.jsonl");
    enum { N = 4 };
    pthread_t th[N];
    thread_arg args[N];
    for (int t = 0; t < N; t++) {
        args[t] = (thread_arg){&l, 0};
        assert_int_equal(pthread_create(&th[t], NULL, encode_all, &args[t]), 0);
    }
    /* All joined before any assertion: a failed one leaves this frame (longjmp) while the others still read
     * args[] and l from it (the crash test_image had). */
    for (int t = 0; t < N; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    for (int t = 0; t < N; t++)
        assert_int_equal(args[t].bad, 0);
    free_lines(&l);
}

/* Two loads at once (cJSON's hooks are global: the loader serialises its parse). */
static void *load_one(void *p)
{
    pf_tokenizer *tok;
    pf_err err;
    *(int *)p = pf_tokenizer_load(TOK_DIR "/tokenizer.json", &tok, &err) == 0 &&
                pf_tokenizer_vocab_size(tok) == pf_tokenizer_vocab_size(g_tok);
    if (*(int *)p)
        pf_tokenizer_free(tok);
    return NULL;
}

static void test_concurrent_loads(void **state)
{
    (void)state;
    pthread_t a, b;
    int ra = 0, rb = 0;
    assert_int_equal(pthread_create(&a, NULL, load_one, &ra), 0);
    assert_int_equal(pthread_create(&b, NULL, load_one, &rb), 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    assert_true(ra && rb);
}

/* ---- long inputs ---- */

static void roundtrip(const char *text, size_t len, const char *want, size_t want_len, size_t max_ids)
{
    pf_ids ids = {0};
    pf_err err;
    assert_int_equal(pf_tokenizer_encode(g_tok, text, len, &ids, &err), 0);
    assert_true(ids.n > 0 && ids.n <= max_ids);
    char *out;
    size_t olen;
    assert_int_equal(pf_tokenizer_decode(g_tok, ids.v, ids.n, 0, &out, &olen, &err), 0);
    assert_int_equal(olen, want_len);
    assert_memory_equal(out, want, want_len);
    free(out);
    pf_ids_free(&ids);
}

static void test_long_inputs(void **state)
{
    (void)state;
    size_t n = 50 * 1024;
    char *s = malloc(4 * n + 1);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) { /* one 50 KB "word": no spaces, no added tokens */
        x = x * 1103515245u + 12345u;
        s[i] = (char)('a' + (x >> 16) % 26);
    }
    roundtrip(s, n, s, n, n);
    memset(s, ' ', n); /* 50k spaces: one BPE word of U+2581 */
    roundtrip(s, n, s, n, n);
    memset(s, '\n', n); /* newline runs are added tokens */
    roundtrip(s, n, s, n, n / 31 + 1);
    for (size_t i = 0; i < n; i++) /* 50k CJK characters (3 bytes each), one word */
        memcpy(s + 3 * i, (i % 3) ? "\xE5\xAD\x97" : "\xE6\xBC\xA2", 3);
    roundtrip(s, 3 * n, s, 3 * n, 3 * n);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_cases),     cmocka_unit_test(test_roundtrip_cases),
        cmocka_unit_test(test_decode_cases),     cmocka_unit_test(test_processor_cases),
        cmocka_unit_test(test_variant_cases),    cmocka_unit_test(test_threads),
        cmocka_unit_test(test_concurrent_loads), cmocka_unit_test(test_long_inputs),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
