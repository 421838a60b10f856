/* Unit tests of model/tokenizer*: small synthetic tokenizer.json files whose expected ids follow from the
 * Rust tokenizers rules by hand (BPE ranks and ties, byte fallback, unk fusing, added-token passes,
 * lstrip/rstrip, decoders), and malformed or unsupported files that must be refused with a clear error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "model/tokenizer/processor.h"
#include "model/tokenizer/tokenizer.h"

/* JSON in this file is written with ' for " (swapped back at run time) to stay readable. */
static char *q(const char *s)
{
    char *d = strdup(s);
    for (char *p = d; *p; p++)
        if (*p == '\'')
            *p = '"';
    return d;
}

typedef struct tok_spec {
    const char *vocab, *merges, *added, *normalizer, *decoder, *model_extra, *top_extra, *unk;
    int fuse_unk, byte_fallback;
} tok_spec;

static char *make_json(const tok_spec *s)
{
    char *buf = malloc(1 << 16);
    snprintf(buf, 1 << 16,
             "{'version':'1.0','truncation':null,'padding':null,'added_tokens':%s,'normalizer':%s,"
             "'pre_tokenizer':null,'post_processor':null,'decoder':%s,%s"
             "'model':{'type':'BPE','dropout':null,'unk_token':%s,'continuing_subword_prefix':null,"
             "'end_of_word_suffix':null,'fuse_unk':%s,'byte_fallback':%s,%s'vocab':%s,'merges':%s}}",
             s->added ? s->added : "[]", s->normalizer ? s->normalizer : "null",
             s->decoder ? s->decoder : "null", s->top_extra ? s->top_extra : "", s->unk ? s->unk : "null",
             s->fuse_unk ? "true" : "false", s->byte_fallback ? "true" : "false",
             s->model_extra ? s->model_extra : "", s->vocab, s->merges);
    char *r = q(buf);
    free(buf);
    return r;
}

static pf_tokenizer *load_spec(const tok_spec *s)
{
    char *json = make_json(s);
    pf_tokenizer *tok = NULL;
    pf_err err = {{0}};
    int rc = pf_tokenizer_load_mem(json, strlen(json), "test.json", &tok, &err);
    if (rc != 0)
        fail_msg("load failed: %s\njson: %s", err.msg, json);
    free(json);
    return tok;
}

/* Load must fail with a message containing `want`. */
static void expect_load_error_raw(const char *json, size_t len, const char *want)
{
    pf_tokenizer *tok = NULL;
    pf_err err = {{0}};
    int rc = pf_tokenizer_load_mem(json, len, "bad.json", &tok, &err);
    if (rc == 0) {
        pf_tokenizer_free(tok);
        fail_msg("load of %.200s succeeded, expected an error with \"%s\"", json, want);
    }
    assert_null(tok);
    if (!strstr(err.msg, want))
        fail_msg("error \"%s\" does not contain \"%s\"", err.msg, want);
    assert_non_null(strstr(err.msg, "bad.json")); /* names the file */
}

static void expect_load_error(const tok_spec *s, const char *want)
{
    char *json = make_json(s);
    expect_load_error_raw(json, strlen(json), want);
    free(json);
}

static void expect_ids(const pf_tokenizer *tok, const char *text, size_t len, const int32_t *want, size_t n)
{
    pf_ids ids = {0};
    pf_err err = {{0}};
    if (pf_tokenizer_encode(tok, text, len, &ids, &err) != 0)
        fail_msg("encode(\"%s\") failed: %s", text, err.msg);
    int ok = ids.n == n && (n == 0 || memcmp(ids.v, want, n * sizeof *want) == 0);
    if (!ok) {
        char got[512] = "", exp[512] = "";
        for (size_t i = 0; i < ids.n && strlen(got) < 480; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%d ", ids.v[i]);
        for (size_t i = 0; i < n && strlen(exp) < 480; i++)
            snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%d ", want[i]);
        fail_msg("encode(\"%s\"): got [%s] want [%s]", text, got, exp);
    }
    pf_ids_free(&ids);
}

#define IDS(...) ((const int32_t[]){__VA_ARGS__}), (sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t))
#define EXPECT(tok, text, ...) expect_ids(tok, text, strlen(text), IDS(__VA_ARGS__))
#define EXPECT_EMPTY(tok, text) expect_ids(tok, text, strlen(text), NULL, 0)

static void expect_decode(const pf_tokenizer *tok, const int32_t *ids, size_t n, int skip, const char *want,
                          size_t want_len)
{
    char *out;
    size_t len;
    pf_err err = {{0}};
    if (pf_tokenizer_decode(tok, ids, n, skip, &out, &len, &err) != 0)
        fail_msg("decode failed: %s", err.msg);
    if (len != want_len || memcmp(out, want, len) != 0)
        fail_msg("decode: got \"%.*s\" (%zu bytes) want \"%s\"", (int)len, out, len, want);
    assert_int_equal(out[len], '\0');
    free(out);
}

#define DECODE(tok, skip, want, ...) expect_decode(tok, IDS(__VA_ARGS__), skip, want, sizeof(want) - 1)

/* ---- BPE ---- */

static const char *V_ABC = "{'a':0,'b':1,'c':2,'ab':3,'bc':4,'abc':5,'aa':6,'<unk>':7}";

static void test_bpe_rank_order(void **state)
{
    (void)state;
    /* "b c" has the lower rank: "abc" -> a + bc (then "a bc" is not a merge) */
    tok_spec s = {.vocab = V_ABC, .merges = "['b c','a b']"};
    pf_tokenizer *tok = load_spec(&s);
    EXPECT(tok, "abc", 0, 4);
    pf_tokenizer_free(tok);
    /* reversed ranks: ab first, then "ab c" -> abc */
    tok_spec s2 = {.vocab = V_ABC, .merges = "['a b','b c','ab c']"};
    tok = load_spec(&s2);
    EXPECT(tok, "abc", 5);
    EXPECT(tok, "bcab", 4, 3);
    EXPECT_EMPTY(tok, "");
    pf_tokenizer_free(tok);
}

static void test_bpe_ties_leftmost(void **state)
{
    (void)state;
    tok_spec s = {.vocab = V_ABC, .merges = "['a a']"};
    pf_tokenizer *tok = load_spec(&s);
    EXPECT(tok, "aaa", 6, 0); /* leftmost pair merges first */
    EXPECT(tok, "aaaaa", 6, 6, 0);
    pf_tokenizer_free(tok);
}

static void test_merges_as_arrays(void **state)
{
    (void)state;
    tok_spec s = {.vocab = V_ABC, .merges = "[['a','b'],['b','c'],['ab','c']]"};
    pf_tokenizer *tok = load_spec(&s);
    EXPECT(tok, "abc", 5);
    pf_tokenizer_free(tok);
}

static void test_repeated_merge_keeps_later_rank(void **state)
{
    (void)state;
    /* 'a b' appears at rank 0 and again at rank 2: the later rank wins, so 'b c' (rank 1) goes first */
    tok_spec s = {.vocab = V_ABC, .merges = "['a b','b c','a b']"};
    pf_tokenizer *tok = load_spec(&s);
    EXPECT(tok, "abc", 0, 4);
    pf_tokenizer_free(tok);
}

static void test_version_lines_skipped(void **state)
{
    (void)state;
    tok_spec s = {.vocab = V_ABC, .merges = "['#version: 0.2','b c','a b']"};
    pf_tokenizer *tok = load_spec(&s);
    EXPECT(tok, "abc", 0, 4);
    pf_tokenizer_free(tok);
}

static const char *V_BYTES = "{'<unk>':0,'a':1,'<0xE2>':2,'<0x82>':3,'<0xAC>':4,'<0xC3>':5,'<0xA9>':6,'b':7}";

static void test_byte_fallback(void **state)
{
    (void)state;
    tok_spec s = {.vocab = V_BYTES, .merges = "[]", .unk = "'<unk>'", .fuse_unk = 1, .byte_fallback = 1};
    pf_tokenizer *tok = load_spec(&s);
    EXPECT(tok,
           "a\xE2\x82\xAC"
           "b",
           1, 2, 3, 4, 7);         /* a € b */
    EXPECT(tok, "\xC3\xA9", 5, 6); /* é */
    /* ü (C3 BC): no <0xBC> -> unk; two of them fused */
    EXPECT(tok,
           "a\xC3\xBC\xC3\xBC"
           "b",
           1, 0, 7);
    /* Rust quirk: a pending unk is emitted after the bytes of a following byte-fallback char */
    EXPECT(tok, "\xC3\xBC\xC3\xA9", 5, 6, 0);
    pf_tokenizer_free(tok);

    tok_spec s2 = {.vocab = V_BYTES, .merges = "[]", .unk = "'<unk>'", .fuse_unk = 0, .byte_fallback = 0};
    tok = load_spec(&s2);
    EXPECT(tok,
           "a\xC3\xA9\xC3\xA9"
           "b",
           1, 0, 0, 7); /* no fusing, no byte fallback */
    pf_tokenizer_free(tok);

    tok_spec s3 = {.vocab = V_BYTES, .merges = "[]", .unk = NULL};
    tok = load_spec(&s3);
    EXPECT(tok,
           "a\xC3\xA9"
           "b",
           1, 7); /* no unk token: unknown chars vanish */
    pf_tokenizer_free(tok);

    tok_spec s4 = {.vocab = V_BYTES, .merges = "[]", .unk = "'<nope>'"};
    tok = load_spec(&s4);
    pf_ids ids = {0};
    pf_err err;
    assert_int_equal(pf_tokenizer_encode(tok, "x", 1, &ids, &err), -1); /* unk needed but missing */
    assert_non_null(strstr(err.msg, "<nope>"));
    EXPECT(tok, "ab", 1, 7); /* fine while not needed */
    pf_ids_free(&ids);
    pf_tokenizer_free(tok);
}

static void test_invalid_utf8_input(void **state)
{
    (void)state;
    tok_spec s = {.vocab = V_ABC, .merges = "[]"};
    pf_tokenizer *tok = load_spec(&s);
    pf_ids ids = {0};
    pf_err err;
    const char *bad[] = {"a\xC3", "a\xED\xA0\x80", "\xC0\xAF", "\xF4\x90\x80\x80", "\xFF"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(pf_tokenizer_encode(tok, bad[i], strlen(bad[i]), &ids, &err), -1);
        assert_non_null(strstr(err.msg, "UTF-8"));
    }
    pf_ids_free(&ids);
    pf_tokenizer_free(tok);
}

static void test_ignore_merges(void **state)
{
    (void)state;
    /* with ignore_merges a word that is itself a token is taken whole, even if merges would not build it */
    tok_spec s = {.vocab = V_ABC, .merges = "['a b']", .model_extra = "'ignore_merges':true,"};
    pf_tokenizer *tok = load_spec(&s);
    EXPECT(tok, "abc", 5);
    EXPECT(tok, "abab", 3, 3);
    pf_tokenizer_free(tok);
}

/* ---- added tokens and the normalizer ---- */

static const char *V_SP =
    "{'<unk>':0,'\\u2581':1,'h':2,'i':3,'\\u2581h':4,'hi':5,'\\u2581hi':6,'x':7,'y':8,'<':9,"
    "'m':10,'>':11,'a':12,'b':13,'c':14,'d':15}";
static const char *M_SP = "['\\u2581 h','h i','\\u2581h i']";
static const char *N_SP = "{'type':'Replace','pattern':{'String':' '},'content':'\\u2581'}";

static char *added(const char *content, int id, int special, int normalized, int lstrip, int rstrip)
{
    char buf[512];
    snprintf(
        buf, sizeof buf,
        "{'id':%d,'content':'%s','single_word':false,'lstrip':%s,'rstrip':%s,'normalized':%s,'special':%s}",
        id, content, lstrip ? "true" : "false", rstrip ? "true" : "false", normalized ? "true" : "false",
        special ? "true" : "false");
    return strdup(buf);
}

static void test_normalizer_replace(void **state)
{
    (void)state;
    tok_spec s = {.vocab = V_SP, .merges = M_SP, .normalizer = N_SP, .unk = "'<unk>'"};
    pf_tokenizer *tok = load_spec(&s);
    EXPECT(tok, " hi", 6);
    EXPECT(tok, "hi hi", 5, 6);
    EXPECT(tok, "\xE2\x96\x81hi", 6); /* a literal U+2581 is the same after normalization */
    EXPECT(tok, "\thi", 0, 5);        /* only U+0020 is replaced */
    pf_tokenizer_free(tok);
}

static void test_merge_across_space(void **state)
{
    (void)state;
    /* a vocabulary with a token "a\u2581b": merges may cross U+2581, so BPE words must not be cut there */
    tok_spec s = {.vocab = "{'a':0,'\\u2581':1,'b':2,'a\\u2581':3,'a\\u2581b':4,'\\u2581b':5}",
                  .merges = "['a \\u2581','a\\u2581 b','\\u2581 b']",
                  .normalizer = N_SP};
    pf_tokenizer *tok = load_spec(&s);
    EXPECT(tok, "a b", 4);
    EXPECT(tok, "b b", 2, 5);
    pf_tokenizer_free(tok);
    /* without such tokens the cut is taken (same ids as merging the whole word) */
    tok_spec s2 = {.vocab = "{'a':0,'\\u2581':1,'b':2,'\\u2581b':5,'ab':6}",
                   .merges = "['\\u2581 b','a b']",
                   .normalizer = N_SP};
    tok = load_spec(&s2);
    EXPECT(tok, "a b", 0, 5);
    EXPECT(tok, "ab ab  b", 6, 1, 6, 1, 5);
    pf_tokenizer_free(tok);
}

static void test_added_normalized_flag(void **state)
{
    (void)state;
    /* normalized=false: the token is matched in the raw text only; normalized=true: its normalized form is
     * matched in the normalized text (" " -> U+2581), so a raw space or a literal U+2581 both match. */
    char *b0 = added("xy", 16, 0, 0, 0, 0), *b1 = added("x y", 16, 0, 1, 0, 0),
         *b2 = added("x y", 16, 0, 0, 0, 0);
    char l0[600], l1[600], l2[600];
    snprintf(l0, sizeof l0, "[%s]", b0);
    snprintf(l1, sizeof l1, "[%s]", b1);
    snprintf(l2, sizeof l2, "[%s]", b2);
    tok_spec s = {.vocab = V_SP, .merges = M_SP, .normalizer = N_SP, .unk = "'<unk>'"};

    s.added = l0; /* raw "xy" */
    pf_tokenizer *tok = load_spec(&s);
    EXPECT(tok, "axyb", 12, 16, 13);
    EXPECT(tok, "x y", 7, 1, 8);
    pf_tokenizer_free(tok);

    s.added =
        l1; /* normalized "x y" -> matches "x\u2581y" in normalized text, i.e. raw "x y" or "x\u2581y" */
    tok = load_spec(&s);
    EXPECT(tok, "x y", 16);
    EXPECT(tok, "x\xE2\x96\x81y", 16);
    EXPECT(tok, "ax yb", 12, 16, 13);
    pf_tokenizer_free(tok);

    s.added = l2; /* non-normalized "x y": raw text only */
    tok = load_spec(&s);
    EXPECT(tok, "x y", 16);
    EXPECT(tok, "x\xE2\x96\x81y", 7, 1, 8);
    pf_tokenizer_free(tok);
    free(b0);
    free(b1);
    free(b2);
}

static void test_added_leftmost_longest(void **state)
{
    (void)state;
    char list[1200];
    char *t1 = added("ab", 16, 0, 0, 0, 0), *t2 = added("abc", 17, 0, 0, 0, 0),
         *t3 = added("bcd", 18, 1, 0, 0, 0);
    snprintf(list, sizeof list, "[%s,%s,%s]", t1, t2, t3);
    tok_spec s = {.vocab = V_SP, .merges = M_SP, .normalizer = N_SP, .unk = "'<unk>'", .added = list};
    pf_tokenizer *tok = load_spec(&s);
    EXPECT(tok, "abcd", 17, 15); /* earliest start wins, then the longest: abc + d */
    EXPECT(tok, "xbcdab", 7, 18, 16);
    EXPECT(tok, "aabcdd", 12, 17, 15, 15);
    assert_int_equal(pf_tokenizer_token_to_id(tok, "abc"), 17);
    assert_int_equal(pf_tokenizer_token_to_id(tok, "hi"), 5);
    assert_int_equal(pf_tokenizer_token_to_id(tok, "nope"), -1);
    size_t len;
    const char *str = pf_tokenizer_id_to_token(tok, 18, &len);
    assert_non_null(str);
    assert_int_equal(len, 3);
    assert_memory_equal(str, "bcd", 3);
    assert_null(pf_tokenizer_id_to_token(tok, 19, &len));
    assert_null(pf_tokenizer_id_to_token(tok, -1, &len));
    assert_int_equal(pf_tokenizer_vocab_size(tok), 19);
    assert_int_equal(pf_tokenizer_is_special(tok, 18), 1);
    assert_int_equal(pf_tokenizer_is_special(tok, 17), 0);
    pf_tokenizer_free(tok);
    free(t1);
    free(t2);
    free(t3);
}

static void test_added_strip(void **state)
{
    (void)state;
    char list[600];
    char *t = added("<m>", 16, 1, 0, 1, 1);
    snprintf(list, sizeof list, "[%s]", t);
    tok_spec s = {.vocab = V_SP, .merges = M_SP, .normalizer = N_SP, .unk = "'<unk>'", .added = list};
    pf_tokenizer *tok = load_spec(&s);
    /* lstrip/rstrip swallow Unicode whitespace around the match (tab, NBSP, ideographic space too) */
    EXPECT(tok, "x  <m> \t y", 7, 16, 8);
    EXPECT(tok, "x\xC2\xA0<m>\xE3\x80\x80y", 7, 16, 8);
    EXPECT(tok, "<m><m>", 16, 16);
    EXPECT(tok, "<m> <m>", 16, 16); /* the second lstrip stops at the end of the first match */
    pf_tokenizer_free(tok);
    free(t);
}

static void test_single_word_rejected(void **state)
{
    (void)state;
    tok_spec s = {.vocab = V_SP,
                  .merges = M_SP,
                  .added = "[{'id':16,'content':'<m>','single_word':true,'lstrip':false,'rstrip':false,"
                           "'normalized':false,'special':true}]"};
    expect_load_error(&s, "single_word");
}

/* ---- decoders ---- */

static const char *D_GEMMA =
    "{'type':'Sequence','decoders':[{'type':'Replace','pattern':{'String':'\\u2581'},"
    "'content':' '},{'type':'ByteFallback'},{'type':'Fuse'}]}";

static void test_decode_byte_fallback(void **state)
{
    (void)state;
    tok_spec s = {.vocab =
                      "{'<unk>':0,'\\u2581':1,'h':2,'<0xE3>':3,'<0x81>':4,'<0x82>':5,'<0xFF>':6,'<0x+F>':7,"
                      "'<0x41>':8,'<s>':9,'\\u2581\\u2581':10}",
                  .merges = "[]",
                  .decoder = D_GEMMA,
                  .unk = "'<unk>'",
                  .added = "[{'id':9,'content':'<s>','single_word':false,'lstrip':false,'rstrip':false,"
                           "'normalized':false,'special':true}]"};
    pf_tokenizer *tok = load_spec(&s);
    DECODE(tok, 0, " h", 1, 2);
    DECODE(tok, 0, "\xE3\x81\x82", 3, 4, 5);          /* valid run */
    DECODE(tok, 0, "\xEF\xBF\xBD\xEF\xBF\xBD", 3, 4); /* truncated: one U+FFFD per byte */
    DECODE(tok, 0, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDh", 3, 4, 5, 6, 2);
    DECODE(tok, 0,
           "\x0F"
           "A",
           7, 8); /* "<0x+F>" parses as 0x0F, like Rust */
    DECODE(tok, 0, "\xEF\xBF\xBD\xEF\xBF\xBD<s>\xEF\xBF\xBD", 3, 4, 9, 5); /* a token splits the run */
    DECODE(tok, 1, "\xE3\x81\x82", 3, 4, 9, 5); /* skipped before the decoder: joined */
    DECODE(tok, 0, "  h", 10, 2);
    DECODE(tok, 0, "h", 2, 99, -5, 1000000); /* unknown ids are dropped */
    DECODE(tok, 0, "", 99);
    pf_tokenizer_free(tok);
}

static void test_decode_nul(void **state)
{
    (void)state;
    tok_spec s = {.vocab = "{'<0x00>':0,'a':1}", .merges = "[]", .decoder = D_GEMMA, .byte_fallback = 1};
    pf_tokenizer *tok = load_spec(&s);
    expect_ids(tok, "a\0a", 3, IDS(1, 0, 1));
    DECODE(tok, 0, "a\0a", 1, 0, 1);
    pf_tokenizer_free(tok);
}

static void test_llama_style(void **state)
{
    (void)state;
    /* Prepend + Replace normalizer, Strip decoder (Llama / old Gemma files) */
    tok_spec s = {.vocab = V_SP,
                  .merges = M_SP,
                  .normalizer = "{'type':'Sequence','normalizers':[{'type':'Prepend','prepend':'\\u2581'},"
                                "{'type':'Replace','pattern':{'String':' '},'content':'\\u2581'}]}",
                  .decoder =
                      "{'type':'Sequence','decoders':[{'type':'Replace','pattern':{'String':'\\u2581'},"
                      "'content':' '},{'type':'ByteFallback'},{'type':'Fuse'},"
                      "{'type':'Strip','content':' ','start':1,'stop':0}]}",
                  .unk = "'<unk>'"};
    pf_tokenizer *tok = load_spec(&s);
    EXPECT(tok, "hi", 6);
    EXPECT(tok, "hi hi", 6, 6);
    EXPECT_EMPTY(tok, "");
    DECODE(tok, 0, "hi hi", 6, 6);
    DECODE(tok, 0, "h hi", 4, 6);
    pf_tokenizer_free(tok);
}

static void test_no_decoder(void **state)
{
    (void)state;
    tok_spec s = {.vocab = V_ABC, .merges = "[]"};
    pf_tokenizer *tok = load_spec(&s);
    DECODE(tok, 0, "ab c a", 3, 2, 0); /* tokens joined with spaces */
    DECODE(tok, 0, "", 42);
    pf_tokenizer_free(tok);
}

/* ---- processor on a small vocabulary ---- */

static void test_processor_small(void **state)
{
    (void)state;
    char list[2000];
    char *t0 = added("<pad>", 16, 1, 0, 0, 0), *t1 = added("<eos>", 17, 1, 0, 0, 0),
         *t2 = added("<bos>", 18, 1, 0, 0, 0), *t3 = added("<image>", 19, 1, 0, 0, 0),
         *t4 = added("\\n", 20, 0, 0, 0, 0);
    snprintf(list, sizeof list, "[%s,%s,%s,%s,%s]", t0, t1, t2, t3, t4);
    tok_spec s = {.vocab = V_SP, .merges = M_SP, .normalizer = N_SP, .unk = "'<unk>'", .added = list};
    pf_tokenizer *tok = load_spec(&s);
    pf_proc_row row;
    pf_err err;
    assert_int_equal(pf_processor_build(tok, "hi", "x", 2, 1, &row, &err), 0);
    int32_t want[] = {19, 19, 18, 5, 20, 7, 17};
    assert_int_equal(row.input_ids.n, 7);
    assert_memory_equal(row.input_ids.v, want, sizeof want);
    assert_int_equal(row.has_suffix, 1);
    int32_t types[] = {0, 0, 0, 0, 0, 1, 1}, labels[] = {-100, -100, -100, -100, -100, 7, 17};
    assert_memory_equal(row.token_type_ids.v, types, sizeof types);
    assert_memory_equal(row.labels.v, labels, sizeof labels);
    pf_proc_row_free(&row);

    /* "<image>" in the prompt: expanded in place, bos after the last one, suffix without eos */
    assert_int_equal(pf_processor_build(tok, "a<image>b", "x", 2, 5, &row, &err), 0);
    int32_t want2[] = {12, 19, 19, 18, 13, 20, 7};
    assert_int_equal(row.input_ids.n, 7);
    assert_memory_equal(row.input_ids.v, want2, sizeof want2);
    pf_proc_row_free(&row);

    /* batch: one prompt with <image> switches the whole batch; left padding with <pad> */
    pf_proc_text prompts[2] = {{"<image>a", 8}, {"hi hi", 5}};
    int nimg[2] = {1, 1};
    pf_proc_batch b;
    assert_int_equal(pf_processor_build_batch(tok, prompts, NULL, 2, 1, nimg, PF_PROC_PAD_LEFT, &b, &err), 0);
    assert_int_equal(b.rows, 2);
    assert_int_equal(b.cols, 4);
    int32_t bi[] = {19, 18, 12, 20, 18, 5, 6, 20};
    int32_t am[] = {1, 1, 1, 1, 1, 1, 1, 1};
    assert_memory_equal(b.input_ids, bi, sizeof bi);
    assert_memory_equal(b.attention_mask, am, sizeof am);
    assert_null(b.token_type_ids);
    pf_proc_batch_free(&b);
    /* no <image> anywhere: image tokens and <bos> prepended, suffixes get <eos>; row 0 padded on the left */
    pf_proc_text p2[2] = {{"a", 1}, {"hi hi hi", 8}}, sfx[2] = {{"x", 1}, {"", 0}};
    assert_int_equal(pf_processor_build_batch(tok, p2, sfx, 2, 1, nimg, PF_PROC_PAD_LEFT, &b, &err), 0);
    assert_int_equal(b.cols, 7);
    int32_t r0[] = {16, 19, 18, 12, 20, 7, 17}, r1[] = {19, 18, 5, 6, 6, 20, 17};
    assert_memory_equal(b.input_ids, r0, sizeof r0);
    assert_memory_equal(b.input_ids + 7, r1, sizeof r1);
    assert_int_equal(b.attention_mask[0], 0);
    assert_int_equal(b.labels[0], -100);
    assert_int_equal(b.labels[5], 7);
    assert_int_equal(b.token_type_ids[13], 1);
    assert_int_equal(b.labels[13], 17);
    pf_proc_batch_free(&b);
    pf_tokenizer_free(tok);
    free(t0);
    free(t1);
    free(t2);
    free(t3);
    free(t4);
}

/* ---- malformed and unsupported files ---- */

static void test_malformed(void **state)
{
    (void)state;
    tok_spec ok = {.vocab = V_ABC, .merges = "['a b']"};
    char *good = make_json(&ok);
    /* every proper prefix of a valid file is an error, never a crash */
    for (size_t n = 0; n < strlen(good); n += 7)
        expect_load_error_raw(good, n, n == 0 ? "empty" : "");
    expect_load_error_raw(good, strlen(good) / 2, "JSON");
    char *trail = malloc(strlen(good) + 8);
    sprintf(trail, "%s  x", good);
    expect_load_error_raw(trail, strlen(trail), "trailing");
    free(trail);
    char *nul = strdup(good);
    nul[10] = '\0';
    expect_load_error_raw(nul, strlen(good), "NUL byte");
    free(nul);
    free(good);

    expect_load_error_raw("[]", 2, "top level");
    expect_load_error_raw("{}", 2, "added_tokens");
    char *j = q("{'added_tokens':[]}");
    expect_load_error_raw(j, strlen(j), "model: missing");
    free(j);

    /* deep nesting: cJSON's nesting limit, no stack overflow */
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 1);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    expect_load_error_raw(deep, 2 * depth, "invalid JSON");
    free(deep);

    struct {
        tok_spec s;
        const char *want;
    } cases[] = {
        {{.vocab = V_ABC, .merges = "7"}, "model.merges: expected an array"},
        {{.vocab = "[]", .merges = "[]"}, "model.vocab: expected an object"},
        {{.vocab = V_ABC, .merges = "['a x']"}, "not in the vocabulary"},
        {{.vocab = V_ABC, .merges = "['a c']"}, "merged token"},
        {{.vocab = V_ABC, .merges = "['a b c']"}, "not two tokens"},
        {{.vocab = V_ABC, .merges = "['ab']"}, "not two tokens"},
        {{.vocab = V_ABC, .merges = "['a b',['b','c']]"}, "like the first merge"},
        {{.vocab = V_ABC, .merges = "[['a','b','c']]"}, "pair of strings"},
        {{.vocab = V_ABC, .merges = "[['a',1]]"}, "pair of strings"},
        {{.vocab = "{'a':-1}", .merges = "[]"}, "expected an integer id"},
        {{.vocab = "{'a':1e300}", .merges = "[]"}, "expected an integer id"},
        {{.vocab = "{'a':2.5}", .merges = "[]"}, "expected an integer id"},
        {{.vocab = "{'a':'0'}", .merges = "[]"}, "expected an integer id"},
        {{.vocab = "{'a':true}", .merges = "[]"}, "expected an integer id"},
        {{.vocab = "{'a':0,'b':0}", .merges = "[]"}, "used twice"},
        {{.vocab = "{'a':0,'a':1}", .merges = "[]"}, "appears twice"},
        {{.vocab = "{'a':0,'b':60000000}", .merges = "[]"}, "too large or too sparse"},
        {{.vocab = "{'a':0,'b':4294967295}", .merges = "[]"}, "expected an integer id"},
        {{.vocab = "{'a':0,'\\u0000':1}", .merges = "[]"}, "\\u0000"},
        {{.vocab = "{'a':0,'\xC3':1}", .merges = "[]"}, "invalid UTF-8"},
        {{.vocab = V_ABC, .merges = "[]", .model_extra = "'type':'WordPiece',"}, "duplicate key"},
        {{.vocab = V_ABC, .merges = "[]", .model_extra = "'dropout':0.1,"}, "duplicate key"},
        {{.vocab = V_ABC, .merges = "[]", .model_extra = "'fuse_unk':1,"}, "duplicate key"},
        {{.vocab = V_ABC, .merges = "[]", .normalizer = "{'type':'NFKC'}"}, "normalizer type \"NFKC\""},
        {{.vocab = V_ABC,
          .merges = "[]",
          .normalizer = "{'type':'Replace','pattern':{'Regex':' '},'content':'x'}"},
         "Regex"},
        {{.vocab = V_ABC,
          .merges = "[]",
          .normalizer = "{'type':'Replace','pattern':{'String':''},'content':'x'}"},
         "empty pattern"},
        {{.vocab = V_ABC, .merges = "[]", .normalizer = "{'type':'Sequence','normalizers':7}"},
         "normalizers"},
        {{.vocab = V_ABC, .merges = "[]", .normalizer = "[1]"}, "expected an object"},
        {{.vocab = V_ABC, .merges = "[]", .decoder = "{'type':'Metaspace'}"}, "decoder type \"Metaspace\""},
        {{.vocab = V_ABC, .merges = "[]", .decoder = "{'type':'Strip','content':'ab','start':1,'stop':0}"},
         "one character"},
        {{.vocab = V_ABC, .merges = "[]", .decoder = "{'type':'Strip','content':' ','start':-1,'stop':0}"},
         "start"},
        {{.vocab = V_ABC, .merges = "[]", .top_extra = "'truncation':{'max_length':5},"}, "duplicate key"},
        {{.vocab = V_ABC, .merges = "[]", .added = "{}"}, "added_tokens: expected an array"},
        {{.vocab = V_ABC, .merges = "[]", .added = "[{'id':3,'content':'ab'}]"}, "missing field"},
        {{.vocab = V_ABC,
          .merges = "[]",
          .added = "[{'id':9,'content':'zz','single_word':false,'lstrip':false,'rstrip':false,"
                   "'normalized':false,'special':true}]"},
         "would assign 8"},
        {{.vocab = V_ABC,
          .merges = "[]",
          .added =
              "[{'id':8,'content':'zz','single_word':false,'lstrip':false,'rstrip':false,"
              "'normalized':false,'special':true},{'id':8,'content':'zz','single_word':false,'lstrip':false,"
              "'rstrip':false,'normalized':false,'special':true}]"},
         "appears twice"},
        {{.vocab = V_ABC,
          .merges = "[]",
          .added = "[{'id':8,'content':'zz','single_word':false,'lstrip':0,'rstrip':false,"
                   "'normalized':false,'special':true}]"},
         "lstrip: expected a boolean"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_load_error(&cases[i].s, cases[i].want);

    /* components given at top level (the template has them as null: these replace it in a copy) */
    struct {
        const char *from, *to, *want;
    } swaps[] = {
        {"'pre_tokenizer':null", "'pre_tokenizer':{'type':'ByteLevel'}", "pre_tokenizer: \"ByteLevel\""},
        {"'post_processor':null", "'post_processor':{'type':'ByteLevel'}", "post_processor"},
        {"'truncation':null", "'truncation':{'max_length':5}", "truncation"},
        {"'padding':null", "'padding':{}", "padding"},
        {"'version':'1.0'", "'version':'2.0'", "version"},
        {"'type':'BPE'", "'type':'WordPiece'", "model.type: \"WordPiece\""},
        {"'dropout':null", "'dropout':0.1", "dropout"},
        {"'dropout':null", "'dropout':7", "dropout"},
        {"'continuing_subword_prefix':null", "'continuing_subword_prefix':'##'", "continuing_subword_prefix"},
        {"'end_of_word_suffix':null", "'end_of_word_suffix':'</w>'", "end_of_word_suffix"},
        {"'fuse_unk':false", "'fuse_unk':1", "fuse_unk: expected a boolean"},
        {"'unk_token':null", "'unk_token':5", "unk_token"},
    };
    for (size_t i = 0; i < sizeof swaps / sizeof *swaps; i++) {
        char *base = make_json(&ok);
        char *from = q(swaps[i].from), *to = q(swaps[i].to);
        char *at = strstr(base, from);
        assert_non_null(at);
        char *m = malloc(strlen(base) + strlen(to) + 1);
        sprintf(m, "%.*s%s%s", (int)(at - base), base, to, at + strlen(from));
        expect_load_error_raw(m, strlen(m), swaps[i].want);
        free(m);
        free(from);
        free(to);
        free(base);
    }

    /* a zero dropout and "" prefixes are the same as none */
    tok_spec z = {.vocab = V_ABC, .merges = "['a b']"};
    char *base = make_json(&z);
    char *at = strstr(base, "\"dropout\":null");
    char *m = malloc(strlen(base) + 8);
    sprintf(m, "%.*s\"dropout\":0.0%s", (int)(at - base), base, at + strlen("\"dropout\":null"));
    pf_tokenizer *tok;
    pf_err err;
    assert_int_equal(pf_tokenizer_load_mem(m, strlen(m), "z.json", &tok, &err), 0);
    EXPECT(tok, "ab", 3);
    pf_tokenizer_free(tok);
    free(m);
    free(base);

    assert_int_equal(pf_tokenizer_load("/nonexistent/tokenizer.json", &tok, &err), -1);
    assert_null(tok);
    assert_non_null(strstr(err.msg, "/nonexistent/tokenizer.json"));
}

static void test_ids_vector(void **state)
{
    (void)state;
    pf_ids ids = {0};
    pf_err err;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(pf_ids_push(&ids, i, &err), 0);
    assert_int_equal(ids.n, 1000);
    assert_int_equal(ids.v[999], 999);
    assert_true(ids.cap >= 1000);
    pf_ids_free(&ids);
    assert_null(ids.v);
    assert_int_equal(ids.n, 0);
    pf_ids_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bpe_rank_order),
        cmocka_unit_test(test_bpe_ties_leftmost),
        cmocka_unit_test(test_merges_as_arrays),
        cmocka_unit_test(test_repeated_merge_keeps_later_rank),
        cmocka_unit_test(test_version_lines_skipped),
        cmocka_unit_test(test_byte_fallback),
        cmocka_unit_test(test_invalid_utf8_input),
        cmocka_unit_test(test_ignore_merges),
        cmocka_unit_test(test_normalizer_replace),
        cmocka_unit_test(test_merge_across_space),
        cmocka_unit_test(test_added_normalized_flag),
        cmocka_unit_test(test_added_leftmost_longest),
        cmocka_unit_test(test_added_strip),
        cmocka_unit_test(test_single_word_rejected),
        cmocka_unit_test(test_decode_byte_fallback),
        cmocka_unit_test(test_decode_nul),
        cmocka_unit_test(test_llama_style),
        cmocka_unit_test(test_no_decoder),
        cmocka_unit_test(test_processor_small),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_ids_vector),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
