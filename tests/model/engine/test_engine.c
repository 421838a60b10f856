/* The fast engine on the golden models, at every precision this machine runs:
 *  - a ragged batch of a case's rows gives, row by row, what each row gives alone (logits at every position
 *    within the case's fp32 logits tolerance, image features too);
 *  - generation: a batch (rows of different lengths, requests joining mid-flight) gives each request's solo
 *    greedy tokens;
 *  - decode through the paged KV cache equals a prefix-LM prefill over prompt + generated tokens (Gemma 2
 *    sliding window, page boundaries crossed);
 *  - the image-features cache returns the same features (bitwise) and counts its hits;
 *  - no oneDNN `ref:` implementation on any linear layer the engine runs (golden models at decode and prefill
 *    sizes; the real SigLIP patch embedding shape);
 *  - the KV page pool is reused: sequences coming and going do not grow it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../test_util.h"
#include "model/engine/engine.h"
#include "model/generate/generate.h"
#include "model/linear/mm.h"

static const char *const CASES[] = {"eos_early_stop", "hub_minimal_config", "new_layout_f16",
                                    "pg1_224_mqa_f32", "pg2_gemma2_window", "score_bf16_sharded"};
#define NCASES (sizeof CASES / sizeof CASES[0])

static double logits_atol(const char *case_name)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/model/%s/case.json", PF_GOLDEN_DIR, case_name);
    json_t *j = json_load_file(p, 0, NULL);
    assert_non_null(j);
    double a = json_number_value(json_object_get(json_object_get(json_object_get(j, "tolerances"), "logits"), "atol"));
    json_decref(j);
    assert_true(a > 0);
    return a;
}

static bool supported(pf_precision p)
{
    pf_precision out;
    pf_err err;
    return pf_precision_resolve(p, &out, &err) == 0;
}

static pf_engine *engine(const pf_model *m, pf_precision p)
{
    pf_engine *e;
    pf_err err;
    pf_engine_params o = {.precision = p};
    if (pf_engine_create(m, &o, &e, &err) != 0)
        fail_msg("%s", err.msg);
    return e;
}

static pf_engine_ctx *context(const pf_engine *e)
{
    pf_engine_ctx *c;
    pf_err err;
    if (pf_engine_ctx_create(e, &c, &err) != 0)
        fail_msg("%s", err.msg);
    return c;
}

/* Logits at every position of the rows in `which` (n of them), in one ragged batch. */
static void forward(pf_engine_ctx *c, const test_rows *r, const int *which, int n, float **lg, float **feats, size_t V,
                    size_t F)
{
    pf_engine_row rows[8];
    size_t *all = malloc(sizeof(size_t) * (size_t)r->T);
    for (int t = 0; t < r->T; t++)
        all[t] = (size_t)t;
    for (int i = 0; i < n; i++) {
        int b = which[i];
        lg[i] = malloc(sizeof(float) * r->n[b] * V);
        feats[i] = malloc(sizeof(float) * F);
        rows[i] = (pf_engine_row){.pixels = r->pixels + (size_t)b * r->img, .num_images = 1, .ids = r->ids[b],
                                  .n = r->n[b], .logits = lg[i], .logit_rows = all, .n_logit_rows = r->n[b],
                                  .image_features = feats[i]};
    }
    pf_err err;
    if (pf_engine_prefill(c, rows, (size_t)n, &err) != 0)
        fail_msg("%s", err.msg);
    free(all);
}

static void test_ragged_equals_solo(void **state)
{
    (void)state;
    int checked = 0;
    for (size_t k = 0; k < NCASES; k++) {
        pf_model *m = test_load_model(CASES[k]);
        test_rows r;
        test_load_rows(CASES[k], m, &r);
        double atol = logits_atol(CASES[k]);
        size_t V = (size_t)m->cfg.text.vocab_size, F = (size_t)m->cfg.num_image_tokens * (size_t)m->cfg.text.hidden;
        for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++) {
            if (!supported((pf_precision)p))
                continue;
            pf_engine *e = engine(m, (pf_precision)p);
            pf_engine_ctx *c = context(e);
            pf_engine_ctx_set_image_cache(c, 0);
            int all[8];
            float *lb[8], *fb[8];
            for (int b = 0; b < r.B; b++)
                all[b] = b;
            forward(c, &r, all, r.B, lb, fb, V, F);
            double worst = 0;
            for (int b = 0; b < r.B; b++) {
                float *ls[1], *fs[1];
                forward(c, &r, &all[b], 1, ls, fs, V, F);
                for (size_t i = 0; i < r.n[b] * V; i++)
                    worst = fmax(worst, fabs((double)lb[b][i] - (double)ls[0][i]));
                for (size_t i = 0; i < F; i++)
                    worst = fmax(worst, fabs((double)fb[b][i] - (double)fs[0][i]));
                free(ls[0]);
                free(fs[0]);
                free(lb[b]);
                free(fb[b]);
            }
            printf("%s %s: ragged batch vs solo max |d| %.3g (atol %.3g)\n", CASES[k],
                   pf_precision_name((pf_precision)p), worst, atol);
            assert_true(worst <= atol);
            checked++;
            pf_engine_ctx_free(c);
            pf_engine_free(e);
        }
        test_free_rows(&r);
        pf_model_free(m);
    }
    assert_true(checked >= (int)NCASES);
}

static void run_gen(const pf_model *m, pf_engine *e, const pf_gen_request *reqs, size_t n, pf_gen_result *out)
{
    pf_generator *g;
    pf_err err;
    pf_generator_params o = {.backend = &pf_gen_backend_engine, .backend_arg = e};
    if (pf_generator_create_params(m, &o, &g, &err) != 0 || pf_generate(g, reqs, n, out, &err) != 0)
        fail_msg("%s", err.msg);
    pf_generator_free(g);
    for (size_t i = 0; i < n; i++)
        if (out[i].error)
            fail_msg("request %zu: %s", i, out[i].error);
}

/* The case's rows plus shortened copies of row 0 (prompts of different lengths), all greedy. */
static void test_generate_batch_equals_solo(void **state)
{
    (void)state;
    const char *cases[] = {"pg2_gemma2_window", "pg1_224_mqa_f32", "eos_early_stop"};
    for (size_t k = 0; k < 3; k++) {
        pf_model *m = test_load_model(cases[k]);
        test_rows r;
        test_load_rows(cases[k], m, &r);
        int32_t store[3][512];
        for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++) {
            if (!supported((pf_precision)p))
                continue;
            pf_engine *e = engine(m, (pf_precision)p);
            pf_gen_request reqs[8];
            size_t n = 0;
            pf_sample_params sp = pf_sample_default_params();
            sp.max_new_tokens = 12;
            for (int b = 0; b < r.B; b++, n++)
                reqs[n] = (pf_gen_request){.pixels = r.pixels + (size_t)b * r.img, .num_images = 1, .ids = r.ids[b],
                                           .n_ids = r.n[b], .params = sp, .tag = n};
            for (size_t cut = 1; cut <= 2; cut++, n++) {
                size_t len = r.n[0] - 2 * cut;
                memcpy(store[cut], r.ids[0], len * sizeof(int32_t));
                store[cut][len - 1] = r.ids[0][r.n[0] - 1];
                reqs[n] = (pf_gen_request){.pixels = r.pixels, .num_images = 1, .ids = store[cut], .n_ids = len,
                                           .params = sp, .tag = n};
            }
            pf_gen_result batch[8], solo;
            run_gen(m, e, reqs, n, batch);
            for (size_t i = 0; i < n; i++) {
                run_gen(m, e, &reqs[i], 1, &solo);
                assert_int_equal(batch[i].n_ids, solo.n_ids);
                assert_memory_equal(batch[i].ids, solo.ids, solo.n_ids * sizeof(int32_t));
                pf_gen_result_free(&solo);
                pf_gen_result_free(&batch[i]);
            }
            pf_engine_free(e);
        }
        test_free_rows(&r);
        pf_model_free(m);
    }
}

/* Continuous batching: a request submitted while another decodes gets its solo tokens. */
static void test_join_mid_flight(void **state)
{
    (void)state;
    pf_model *m = test_load_model("pg2_gemma2_window");
    test_rows r;
    test_load_rows("pg2_gemma2_window", m, &r);
    pf_engine *e = engine(m, PF_PREC_FP32);
    pf_sample_params p = pf_sample_default_params();
    p.max_new_tokens = 9;
    pf_gen_request a = {.pixels = r.pixels, .num_images = 1, .ids = r.ids[0], .n_ids = r.n[0], .params = p, .tag = 1};
    pf_gen_request b = {.pixels = r.pixels + r.img, .num_images = 1, .ids = r.ids[1], .n_ids = r.n[1], .params = p,
                        .tag = 2};
    b.params.max_new_tokens = 5;
    pf_gen_result sa, sb;
    run_gen(m, e, &a, 1, &sa);
    run_gen(m, e, &b, 1, &sb);
    pf_generator *g;
    pf_err err;
    pf_generator_params o = {.backend = &pf_gen_backend_engine, .backend_arg = e};
    assert_int_equal(pf_generator_create_params(m, &o, &g, &err), 0);
    assert_int_equal(pf_generator_submit(g, &a, &err), 0);
    int got = 0;
    for (int step = 0; pf_generator_active(g) > 0 || step < 3; step++) {
        if (step == 3)
            assert_int_equal(pf_generator_submit(g, &b, &err), 0);
        pf_gen_result *done;
        size_t nd;
        assert_int_equal(pf_generator_step(g, &done, &nd, &err), 0);
        for (size_t i = 0; i < nd; i++, got++) {
            const pf_gen_result *want = done[i].tag == 1 ? &sa : &sb;
            assert_int_equal(done[i].n_ids, want->n_ids);
            assert_memory_equal(done[i].ids, want->ids, want->n_ids * sizeof(int32_t));
        }
        pf_gen_results_free(done, nd);
    }
    assert_int_equal(got, 2);
    pf_generator_free(g);
    pf_gen_result_free(&sa);
    pf_gen_result_free(&sb);
    pf_engine_free(e);
    test_free_rows(&r);
    pf_model_free(m);
}

/* Decode steps through the KV pages == a prefix-LM prefill over prompt + generated tokens (prompt
 * bidirectional, generated causal), at every position generated. */
static void test_decode_equals_prefix_lm(void **state)
{
    (void)state;
    const char *cases[] = {"pg2_gemma2_window", "pg1_224_mqa_f32"};
    for (size_t k = 0; k < 2; k++) {
        pf_model *m = test_load_model(cases[k]);
        test_rows r;
        test_load_rows(cases[k], m, &r);
        double atol = logits_atol(cases[k]);
        pf_engine *e = engine(m, PF_PREC_FP32);
        pf_engine_ctx *c = context(e);
        size_t V = (size_t)m->cfg.text.vocab_size, n = r.n[0], steps = 12;
        float *dec = malloc(sizeof(float) * (steps + 1) * V);
        int32_t *ids = malloc(sizeof(int32_t) * (n + steps)), *tt = calloc(n + steps, sizeof(int32_t));
        memcpy(ids, r.ids[0], n * sizeof(int32_t));
        pf_err err;
        pf_engine_seq *s = pf_engine_seq_create(c, n + steps, &err);
        assert_non_null(s);
        pf_engine_row row = {.pixels = r.pixels, .num_images = 1, .ids = ids, .n = n, .seq = s, .logits = dec};
        assert_int_equal(pf_engine_prefill(c, &row, 1, &err), 0);
        for (size_t t = 0; t < steps; t++) { /* greedy */
            const float *l = dec + t * V;
            int32_t best = 0;
            for (size_t v = 1; v < V; v++)
                best = l[v] > l[best] ? (int32_t)v : best;
            ids[n + t] = best;
            tt[n + t] = 1;
            if (t + 1 < steps && pf_engine_decode(c, &s, &best, 1, dec + (t + 1) * V, &err) != 0)
                fail_msg("%s", err.msg);
        }
        assert_int_equal(pf_engine_seq_len(s), n + steps - 1);
        size_t rows[16];
        for (size_t t = 0; t < steps; t++)
            rows[t] = n - 1 + t;
        float *pre = malloc(sizeof(float) * steps * V);
        pf_engine_row full = {.pixels = r.pixels, .num_images = 1, .ids = ids, .n = n + steps - 1, .token_type = tt,
                              .logits = pre, .logit_rows = rows, .n_logit_rows = steps};
        assert_int_equal(pf_engine_prefill(c, &full, 1, &err), 0);
        double worst = 0;
        for (size_t i = 0; i < steps * V; i++)
            worst = fmax(worst, fabs((double)pre[i] - (double)dec[i]));
        printf("%s: decode vs prefix-LM prefill over %zu positions (up to %zu tokens): max |d| %.3g (atol %.3g)\n",
               cases[k], steps, n + steps - 1, worst, atol);
        assert_true(worst <= atol);
        pf_engine_seq_free(c, s);
        free(dec);
        free(pre);
        free(ids);
        free(tt);
        pf_engine_ctx_free(c);
        pf_engine_free(e);
        test_free_rows(&r);
        pf_model_free(m);
    }
}

static void test_image_cache(void **state)
{
    (void)state;
    pf_model *m = test_load_model("pg1_224_mqa_f32");
    test_rows r;
    test_load_rows("pg1_224_mqa_f32", m, &r);
    pf_engine *e = engine(m, PF_PREC_FP32);
    pf_engine_ctx *c = context(e);
    size_t V = (size_t)m->cfg.text.vocab_size, F = (size_t)m->cfg.num_image_tokens * (size_t)m->cfg.text.hidden;
    float *f1 = malloc(sizeof(float) * F), *f2 = malloc(sizeof(float) * 2 * F), *l1 = malloc(sizeof(float) * V);
    float *l2 = malloc(sizeof(float) * 2 * V);
    pf_err err;
    pf_engine_row row = {.pixels = r.pixels, .num_images = 1, .ids = r.ids[0], .n = r.n[0], .logits = l1,
                         .image_features = f1};
    assert_int_equal(pf_engine_prefill(c, &row, 1, &err), 0);
    size_t hits, computed;
    pf_engine_ctx_image_stats(c, &hits, &computed);
    assert_int_equal(hits, 0);
    assert_int_equal(computed, 1);
    /* the same image twice in one batch, seen before: no vision run at all */
    pf_engine_row two[2] = {row, row};
    two[0].logits = l2;
    two[0].image_features = f2;
    two[1].logits = l2 + V;
    two[1].image_features = f2 + F;
    assert_int_equal(pf_engine_prefill(c, two, 2, &err), 0);
    pf_engine_ctx_image_stats(c, &hits, &computed);
    assert_int_equal(hits, 2);
    assert_int_equal(computed, 1);
    assert_memory_equal(f1, f2, F * sizeof(float));
    assert_memory_equal(f1, f2 + F, F * sizeof(float));
    /* another image, twice in one batch: computed once */
    pf_engine_row other[2] = {row, row};
    other[0].pixels = other[1].pixels = r.pixels + r.img;
    other[0].logits = l2;
    other[1].logits = l2 + V;
    other[0].image_features = f2;
    other[1].image_features = f2 + F;
    assert_int_equal(pf_engine_prefill(c, other, 2, &err), 0);
    pf_engine_ctx_image_stats(c, &hits, &computed);
    assert_int_equal(hits, 3);
    assert_int_equal(computed, 2);
    assert_memory_equal(f2, f2 + F, F * sizeof(float));
    assert_memory_not_equal(f1, f2, F * sizeof(float));
    free(f1);
    free(f2);
    free(l1);
    free(l2);
    pf_engine_ctx_free(c);
    pf_engine_free(e);
    test_free_rows(&r);
    pf_model_free(m);
}

static void test_no_ref_impls(void **state)
{
    (void)state;
    static const int64_t ms[] = {1, 2, 4, 16, 64, 263, 1024};
    pf_model *m = test_load_model("pg2_gemma2_window");
    for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++) {
        if (!supported((pf_precision)p))
            continue;
        pf_engine *e = engine(m, (pf_precision)p);
        pf_engine_ctx *c = context(e);
        pf_err err;
        assert_int_equal(pf_engine_check_impls(c, ms, (int)(sizeof ms / sizeof ms[0]), &err), 0);
        pf_engine_ctx_free(c);
        pf_engine_free(e);
        /* the real SigLIP patch embedding (3 x 14 x 14 -> 1152, with bias), not in test_engine_linear's list */
        pf_mm_engine *me;
        pf_mm_params mo = {.precision = (pf_precision)p};
        assert_int_equal(pf_mm_engine_create(&mo, &me, &err), 0);
        for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
            char impl[128];
            if (pf_mm_shape_impl(me, ms[i] * 4, 588, 1152, true, impl, sizeof impl, &err) != 0)
                fail_msg("%s", err.msg);
            assert_null(strstr(impl, "ref:"));
        }
        pf_mm_engine_destroy(me);
    }
    pf_model_free(m);
}

static void test_kv_pool_reused(void **state)
{
    (void)state;
    pf_model *m = test_load_model("eos_early_stop");
    pf_engine *e = engine(m, PF_PREC_FP32);
    pf_engine_ctx *c = context(e);
    pf_err err;
    pf_engine_seq *s[8];
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 8; i++)
            assert_non_null(s[i] = pf_engine_seq_create(c, 100 + (size_t)i * 30, &err));
        for (int i = 0; i < 8; i++)
            pf_engine_seq_free(c, s[i]);
    }
    size_t bytes = pf_engine_ctx_kv_bytes(c);
    for (int i = 0; i < 8; i++)
        assert_non_null(s[i] = pf_engine_seq_create(c, 100 + (size_t)i * 30, &err));
    assert_int_equal(pf_engine_ctx_kv_bytes(c), bytes); /* nothing new: the freed pages came back */
    for (int i = 0; i < 8; i++)
        pf_engine_seq_free(c, s[i]);
    assert_null(pf_engine_seq_create(c, 0, &err));
    pf_engine_ctx_free(c);
    pf_engine_free(e);
    pf_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ragged_equals_solo),     cmocka_unit_test(test_generate_batch_equals_solo),
        cmocka_unit_test(test_join_mid_flight),        cmocka_unit_test(test_decode_equals_prefix_lm),
        cmocka_unit_test(test_image_cache),            cmocka_unit_test(test_no_ref_impls),
        cmocka_unit_test(test_kv_pool_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
