/* Generation: batch == solo (greedy and seeded sampling, prompts of different lengths, requests joining
 * mid-flight), decode with the KV cache == the no-cache prefix-LM forward, eos and extra stop ids,
 * request validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <unistd.h>

#include "model/generate/generate.h"
#include "model/ref/ref.h"
#include "../test_util.h"

typedef struct fixture {
    pf_model *m;
    test_rows r;
} fixture;

static int setup_pg2(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->m = test_load_model("pg2_gemma2_window");
    test_load_rows("pg2_gemma2_window", f->m, &f->r);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    test_free_rows(&f->r);
    pf_model_free(f->m);
    free(f);
    return 0;
}

/* Requests of different lengths: the case's two rows and shortened prompts of row 0 (image + fewer text
 * tokens; the last token stays "\n"). */
static size_t make_requests(fixture *f, pf_gen_request *reqs, int32_t *store, const pf_sample_params *p)
{
    size_t k = 0;
    for (int b = 0; b < f->r.B; b++) {
        reqs[k] = (pf_gen_request){.pixels = f->r.pixels + (size_t)b * f->r.img, .num_images = 1,
                                   .ids = f->r.ids[b], .n_ids = f->r.n[b], .params = *p, .tag = 100 + k};
        k++;
    }
    size_t N = (size_t)f->m->cfg.num_image_tokens;
    for (size_t cut = 1; cut <= 3; cut++) {
        size_t n = f->r.n[0] - 2 * cut;
        int32_t *ids = store + cut * 256;
        memcpy(ids, f->r.ids[0], n * sizeof *ids);
        ids[n - 1] = f->r.ids[0][f->r.n[0] - 1];
        assert_true(n > N + 1);
        reqs[k] = (pf_gen_request){.pixels = f->r.pixels, .num_images = 1, .ids = ids, .n_ids = n, .params = *p,
                                   .tag = 100 + k};
        k++;
    }
    return k;
}

static void run(pf_model *m, const pf_gen_request *reqs, size_t n, pf_gen_result *out)
{
    pf_generator *g;
    pf_err err;
    if (pf_generator_create(m, &g, &err) != 0 || pf_generate(g, reqs, n, out, &err) != 0)
        fail_msg("%s", err.msg);
    pf_generator_free(g);
    for (size_t i = 0; i < n; i++)
        if (out[i].error)
            fail_msg("request %zu: %s", i, out[i].error);
}

static void assert_same(const pf_gen_result *a, const pf_gen_result *b)
{
    assert_int_equal(a->tag, b->tag);
    assert_int_equal(a->n_ids, b->n_ids);
    assert_memory_equal(a->ids, b->ids, a->n_ids * sizeof(int32_t));
    assert_int_equal(a->stopped_by_eos, b->stopped_by_eos);
}

static void check_batch_equals_solo(fixture *f, const pf_sample_params *p, int vary_seed, pf_gen_result *batch)
{
    pf_gen_request reqs[8];
    int32_t *store = calloc(4 * 256, sizeof *store);
    size_t n = make_requests(f, reqs, store, p);
    if (vary_seed)
        for (size_t i = 0; i < n; i++)
            reqs[i].params.seed = 1000 + i;
    run(f->m, reqs, n, batch);
    for (size_t i = 0; i < n; i++) {
        pf_gen_result solo;
        run(f->m, &reqs[i], 1, &solo);
        assert_same(&batch[i], &solo);
        assert_true(batch[i].n_ids >= 1 && batch[i].n_ids <= (size_t)p->max_new_tokens);
        pf_gen_result_free(&solo);
    }
    free(store);
}

static void test_greedy_batch_equals_solo(void **state)
{
    fixture *f = *state;
    pf_sample_params p = pf_sample_default_params();
    p.max_new_tokens = 12;
    pf_gen_result batch[8];
    check_batch_equals_solo(f, &p, 0, batch);
    for (int i = 0; i < 5; i++)
        pf_gen_result_free(&batch[i]);
}

static void test_sampling_batch_equals_solo(void **state)
{
    fixture *f = *state;
    pf_sample_params p = pf_sample_default_params();
    p.max_new_tokens = 10;
    p.temperature = 1.5f;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.repetition_penalty = 1.3f;
    pf_gen_result a[8], b[8];
    check_batch_equals_solo(f, &p, 1, a);
    /* Same seeds, same tokens; the five requests (different seeds) should not all agree with greedy. */
    check_batch_equals_solo(f, &p, 1, b);
    for (int i = 0; i < 5; i++)
        assert_same(&a[i], &b[i]);
    pf_sample_params g = pf_sample_default_params();
    g.max_new_tokens = 10;
    pf_gen_result gr[8];
    check_batch_equals_solo(f, &g, 0, gr);
    int differ = 0;
    for (int i = 0; i < 5; i++)
        differ += a[i].n_ids != gr[i].n_ids || memcmp(a[i].ids, gr[i].ids, a[i].n_ids * sizeof(int32_t)) != 0;
    assert_true(differ > 0);
    for (int i = 0; i < 5; i++) {
        pf_gen_result_free(&a[i]);
        pf_gen_result_free(&b[i]);
        pf_gen_result_free(&gr[i]);
    }
}

/* top_k = 1 sampling is greedy whatever the seed and temperature. */
static void test_top_k1_is_greedy(void **state)
{
    fixture *f = *state;
    pf_sample_params p = pf_sample_default_params();
    p.max_new_tokens = 8;
    pf_gen_request r = {.pixels = f->r.pixels, .num_images = 1, .ids = f->r.ids[1], .n_ids = f->r.n[1], .params = p};
    pf_gen_result greedy, sampled;
    run(f->m, &r, 1, &greedy);
    r.params.temperature = 3.0f;
    r.params.top_k = 1;
    r.params.seed = 77;
    run(f->m, &r, 1, &sampled);
    assert_same(&greedy, &sampled);
    pf_gen_result_free(&greedy);
    pf_gen_result_free(&sampled);
}

/* Requests joining while others decode (continuous batching) still get their solo tokens. */
static void test_join_mid_flight(void **state)
{
    fixture *f = *state;
    pf_sample_params p = pf_sample_default_params();
    p.max_new_tokens = 9;
    pf_gen_request a = {.pixels = f->r.pixels, .num_images = 1, .ids = f->r.ids[0], .n_ids = f->r.n[0], .params = p,
                        .tag = 1};
    pf_gen_request b = {.pixels = f->r.pixels + f->r.img, .num_images = 1, .ids = f->r.ids[1], .n_ids = f->r.n[1],
                        .params = p, .tag = 2};
    b.params.max_new_tokens = 5;
    pf_gen_result sa, sb;
    run(f->m, &a, 1, &sa);
    run(f->m, &b, 1, &sb);
    pf_generator *g;
    pf_err err;
    assert_int_equal(pf_generator_create(f->m, &g, &err), 0);
    assert_int_equal(pf_generator_submit(g, &a, &err), 0);
    int got = 0, step = 0;
    while (pf_generator_active(g) > 0 || step < 3) {
        if (step == 3)
            assert_int_equal(pf_generator_submit(g, &b, &err), 0);
        pf_gen_result *done;
        size_t nd;
        assert_int_equal(pf_generator_step(g, &done, &nd, &err), 0);
        for (size_t i = 0; i < nd; i++) {
            assert_same(&done[i], done[i].tag == 1 ? &sa : &sb);
            got++;
        }
        pf_gen_results_free(done, nd);
        step++;
    }
    assert_int_equal(got, 2);
    pf_generator_free(g);
    pf_gen_result_free(&sa);
    pf_gen_result_free(&sb);
}

/* The KV-cache decode path equals a no-cache forward over prompt + generated tokens with the prefix-LM
 * mask (prompt bidirectional, generated causal), on the sliding-window Gemma 2 model. */
static void test_decode_matches_forward(void **state)
{
    fixture *f = *state;
    const pf_model *m = f->m;
    size_t V = (size_t)m->cfg.text.vocab_size, D = (size_t)m->cfg.text.hidden, n0 = f->r.n[1], steps = 6;
    size_t n = n0 + steps;
    int32_t *ids = malloc(n * sizeof *ids), *tt = calloc(n, sizeof *tt);
    memcpy(ids, f->r.ids[1], n0 * sizeof *ids);
    float *dec = malloc((steps + 1) * V * sizeof(float)), *hidden = malloc(n * D * sizeof(float));
    float *fwd = malloc(n * V * sizeof(float));
    pf_ref_kv kv;
    pf_ref_scratch s = {0};
    pf_err err;
    assert_int_equal(pf_ref_kv_init(&kv, m, n, &err), 0);
    const float *px = f->r.pixels + f->r.img;
    assert_int_equal(pf_ref_forward(m, px, 1, ids, n0, NULL, &kv, hidden, NULL, &err), 0);
    pf_ref_logits(m, hidden + (n0 - 1) * D, 1, dec);
    for (size_t k = 0; k < steps; k++) {
        float *l = dec + k * V;
        size_t best = 0;
        for (size_t i = 1; i < V; i++)
            best = l[i] > l[best] ? i : best;
        ids[n0 + k] = (int32_t)best;
        tt[n0 + k] = 1;
        pf_ref_kv *one = &kv;
        assert_int_equal(pf_ref_decode(m, &one, &ids[n0 + k], 1, dec + (k + 1) * V, &s, &err), 0);
    }
    assert_int_equal(kv.len, n);
    assert_int_equal(pf_ref_forward(m, px, 1, ids, n, tt, NULL, hidden, NULL, &err), 0);
    pf_ref_logits(m, hidden, n, fwd);
    double worst = 0;
    for (size_t k = 0; k <= steps; k++)
        for (size_t i = 0; i < V; i++)
            worst = fmax(worst, fabs((double)dec[k * V + i] - fwd[(n0 - 1 + k) * V + i]));
    if (worst > 1e-4)
        fail_msg("decode vs forward logits differ by %g", worst);
    pf_ref_kv_free(&kv);
    pf_ref_scratch_free(&s);
    free(ids);
    free(tt);
    free(dec);
    free(hidden);
    free(fwd);
}

static void test_validation(void **state)
{
    fixture *f = *state;
    pf_generator *g;
    pf_err err;
    assert_int_equal(pf_generator_create(f->m, &g, &err), 0);
    pf_gen_request r = {.pixels = f->r.pixels, .num_images = 1, .ids = f->r.ids[0], .n_ids = f->r.n[0],
                        .params = pf_sample_default_params()};
    r.params.max_new_tokens = 0;
    assert_int_equal(pf_generator_submit(g, &r, &err), -1);
    assert_non_null(strstr(err.msg, "max_new_tokens"));
    r.params.max_new_tokens = 4;
    r.n_ids = f->r.n[0] - 70; /* cuts into the image tokens */
    assert_int_equal(pf_generator_submit(g, &r, &err), -1);
    assert_non_null(strstr(err.msg, "<image>"));
    int32_t bad[3] = {2, 5000, 108};
    pf_gen_request t = {.ids = bad, .n_ids = 3, .params = pf_sample_default_params()};
    assert_int_equal(pf_generator_submit(g, &t, &err), -1);
    assert_non_null(strstr(err.msg, "5000"));
    t.n_ids = 0;
    assert_int_equal(pf_generator_submit(g, &t, &err), -1);
    assert_int_equal(pf_generator_active(g), 0);
    /* pf_generate reports the refused request and runs the rest */
    bad[1] = 7;
    pf_gen_request two[2] = {{.ids = bad, .n_ids = 3, .params = pf_sample_default_params()},
                             {.ids = bad, .n_ids = 0, .params = pf_sample_default_params()}};
    two[0].params.max_new_tokens = 3;
    pf_gen_result res[2];
    assert_int_equal(pf_generate(g, two, 2, res, &err), 0);
    assert_null(res[0].error);
    assert_true(res[0].n_ids >= 1);
    assert_non_null(res[1].error);
    pf_gen_result_free(&res[0]);
    pf_gen_result_free(&res[1]);
    pf_generator_free(g);
}

/* eos_early_stop: rows stop at eos (the eos is the last id) while others run to max_new_tokens; a stop id
 * added through the config's eos_token_id list stops a row at its first occurrence. */
static void test_eos(void **state)
{
    (void)state;
    pf_model *m = test_load_model("eos_early_stop");
    test_rows r;
    test_load_rows("eos_early_stop", m, &r);
    pf_gen_request reqs[8];
    pf_gen_result res[8];
    const int max_new = 12;
    for (int b = 0; b < r.B; b++) {
        reqs[b] = (pf_gen_request){.pixels = r.pixels + (size_t)b * r.img, .num_images = 1, .ids = r.ids[b],
                                   .n_ids = r.n[b], .params = pf_sample_default_params(), .tag = (uint64_t)b};
        reqs[b].params.max_new_tokens = max_new;
    }
    run(m, reqs, (size_t)r.B, res);
    int stopped = -1, full = -1;
    for (int b = 0; b < r.B; b++) {
        for (size_t k = 0; k + 1 < res[b].n_ids; k++)
            assert_int_not_equal(res[b].ids[k], 1); /* nothing after an eos */
        if (res[b].stopped_by_eos) {
            assert_int_equal(res[b].ids[res[b].n_ids - 1], 1);
            stopped = b;
        } else {
            assert_int_equal(res[b].n_ids, max_new);
            full = b;
        }
    }
    assert_true(stopped >= 0 && full >= 0);
    assert_true(res[stopped].n_ids < (size_t)max_new);

    /* Extra stop id: the full row's 3rd token, via a copy of the checkpoint whose config lists it. */
    int32_t extra = res[full].ids[2];
    size_t first = 0;
    while (res[full].ids[first] != extra)
        first++;
    char dir[] = "/tmp/pf_eos_XXXXXX", path[512], src[512];
    assert_non_null(mkdtemp(dir));
    snprintf(src, sizeof src, "%s/model/eos_early_stop/checkpoint/model.safetensors", PF_GOLDEN_DIR);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assert_int_equal(symlink(src, path), 0);
    snprintf(src, sizeof src, "%s/model/eos_early_stop/checkpoint/config.json", PF_GOLDEN_DIR);
    char *text;
    size_t len;
    pf_err err;
    assert_int_equal(pf_read_file(src, 1 << 20, &text, &len, &err), 0);
    char *at = strstr(text, "\"eos_token_id\": 1");
    assert_non_null(at);
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%.*s\"eos_token_id\": [1, %d]%s", (int)(at - text), text, extra,
             at + strlen("\"eos_token_id\": 1"));
    free(text);
    char cpath[512];
    snprintf(cpath, sizeof cpath, "%s/config.json", dir);
    FILE *fp = fopen(cpath, "w");
    fputs(cfg, fp);
    fclose(fp);
    pf_model *m2;
    if (pf_model_load(dir, &m2, &err) != 0)
        fail_msg("%s", err.msg);
    pf_gen_result again;
    run(m2, &reqs[full], 1, &again);
    assert_true(again.stopped_by_eos);
    assert_int_equal(again.n_ids, first + 1);
    assert_memory_equal(again.ids, res[full].ids, (first + 1) * sizeof(int32_t));
    pf_gen_result_free(&again);
    pf_model_free(m2);
    unlink(cpath);
    unlink(path);
    rmdir(dir);
    for (int b = 0; b < r.B; b++)
        pf_gen_result_free(&res[b]);
    test_free_rows(&r);
    pf_model_free(m);
}

/* The sampler alone: repetition penalty, top-k / top-p cut-offs, determinism. */
static void test_sampler(void **state)
{
    (void)state;
    pf_sampler s;
    pf_err err;
    assert_int_equal(pf_sampler_init(&s, 6, &err), 0);
    pf_sample_params p = pf_sample_default_params();
    float l[6] = {1, 5, 4.9f, -2, 0, 3};
    int32_t hist[3] = {1, 1, 3};
    pf_rng rng;
    pf_rng_seed(&rng, 1);
    assert_int_equal(pf_sample_next(&s, l, &p, hist, 3, &rng), 1);
    float l2[6] = {1, 5, 4.9f, -2, 0, 3};
    p.repetition_penalty = 2.0f; /* 5 -> 2.5 (once, though 1 appears twice), -2 -> -4 */
    assert_int_equal(pf_sample_next(&s, l2, &p, hist, 3, &rng), 2);
    assert_true(l2[1] == 2.5f && l2[3] == -4.0f);
    p.repetition_penalty = 1.0f;
    p.temperature = 1.0f;
    p.top_k = 2;
    int count[6] = {0};
    for (int i = 0; i < 2000; i++) {
        float x[6] = {1, 5, 4.9f, -2, 0, 3};
        count[pf_sample_next(&s, x, &p, NULL, 0, &rng)]++;
    }
    assert_true(count[1] > 0 && count[2] > 0);
    assert_int_equal(count[0] + count[3] + count[4] + count[5], 0);
    p.top_k = 0;
    p.top_p = 0.3f; /* the top token alone holds ~0.5 */
    for (int i = 0; i < 200; i++) {
        float x[6] = {1, 5, 4.9f, -2, 0, 3};
        assert_int_equal(pf_sample_next(&s, x, &p, NULL, 0, &rng), 1);
    }
    pf_rng a, b;
    pf_rng_seed(&a, 42);
    pf_rng_seed(&b, 42);
    for (int i = 0; i < 10; i++)
        assert_true(pf_rng_next(&a) == pf_rng_next(&b));
    pf_sampler_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_greedy_batch_equals_solo, setup_pg2, teardown),
        cmocka_unit_test_setup_teardown(test_sampling_batch_equals_solo, setup_pg2, teardown),
        cmocka_unit_test_setup_teardown(test_top_k1_is_greedy, setup_pg2, teardown),
        cmocka_unit_test_setup_teardown(test_join_mid_flight, setup_pg2, teardown),
        cmocka_unit_test_setup_teardown(test_decode_matches_forward, setup_pg2, teardown),
        cmocka_unit_test_setup_teardown(test_validation, setup_pg2, teardown),
        cmocka_unit_test(test_eos),
        cmocka_unit_test(test_sampler),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
