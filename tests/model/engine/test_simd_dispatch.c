/* test_simd_dispatch.c - every function with SIMD variants (base/simd.h) runs the variant PALIFLOW_MAX_ISA
 * allows, and that variant computes the right thing.
 *
 * ctest runs this program uncapped (the CPU's best: AVX-512 on an AVX-512 host), and with
 * PALIFLOW_MAX_ISA=avx2 and =generic. Each check below calls one subsystem's dispatched functions through
 * their ordinary entry points and compares the result with a plain reference; the last check reads the
 * registry: every registered function must have run exactly one variant, the capped one. A dispatched
 * function added without a call here fails that check (it never ran).
 * It lives with the engine's tests because it calls the engine's row kernels (engine_internal.h); it also
 * links the reference (model/ref) and the resampler (image/), the other users of base/simd.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/simd.h"
#include "image/resample.h"
#include "image/resample_kernels.h" /* PF_RS_ROW_ALIGN */
#include "model/engine/engine_internal.h"
#include "model/linear/cpu.h"
#include "model/ref/ref.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float frand(void) /* uniform [-1, 1) */
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

static float *frandv(size_t n, float scale)
{
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = frand() * scale;
    return v;
}

static float *copyv(const float *x, size_t n)
{
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    memcpy(v, x, n * sizeof *v);
    return v;
}

/* |a - b| <= tol * max(1, |b|), element by element; names the first element that is not. */
static void assert_close(const char *what, const float *a, const float *b, size_t n, double tol)
{
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]), lim = tol * fmax(1.0, fabs((double)b[i]));
        if (!(d <= lim))
            fail_msg("%s[%zu]: %.9g, want %.9g (tolerance %.3g)", what, i, (double)a[i], (double)b[i], lim);
    }
}

/* The tier this process must run at, derived from the hardware and the cap independently of base/simd.c's
 * own bookkeeping: model/cpu.c's cpuid reading, and the cap's name. */
static pf_cpu_tier expected_tier(void)
{
    pf_cpu_features raw;
    pf_cpu_detect(&raw);
    const char *cap = getenv("PALIFLOW_MAX_ISA");
    if (cap && strcmp(cap, "generic") == 0)
        return PF_TIER_GENERIC;
    if (cap && strcmp(cap, "avx2") == 0 && raw.tier >= PF_TIER_AVX2)
        return PF_TIER_AVX2;
    return raw.tier; /* no cap, or one at or above the CPU */
}

static void test_cap_names(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        pf_cpu_tier tier;
    } ok[] = {{"generic", PF_TIER_GENERIC}, {"AVX2", PF_TIER_AVX2},         {"avx2_vnni", PF_TIER_AVX2},
              {"avx512", PF_TIER_AVX512},   {"avx512_vnni", PF_TIER_AVX512}, {"avx512_bf16", PF_TIER_AVX512}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        pf_cpu_tier t = PF_TIER_COUNT;
        assert_true(pf_simd_cap_tier(ok[i].name, &t));
        assert_int_equal(t, ok[i].tier);
    }
    pf_cpu_tier t;
    assert_false(pf_simd_cap_tier("avx1024", &t));
    assert_false(pf_simd_cap_tier("", &t));
    assert_false(pf_simd_cap_tier(NULL, &t));
    assert_string_equal(pf_simd_tier_name(PF_TIER_AVX2), "avx2");
    assert_string_equal(pf_cpu_tier_name(PF_TIER_AVX512), "avx512");
}

/* base/simd.c (libgcc's CPU model) and model/cpu.c (cpuid + xgetbv) agree on the tier, capped or not: the
 * SIMD variants, our GEMM kernels and oneDNN run at one level. */
static void test_one_tier_everywhere(void **state)
{
    (void)state;
    pf_cpu_features raw;
    pf_cpu_detect(&raw);
    assert_int_equal(pf_simd_hw_tier(), raw.tier);
    assert_int_equal(pf_simd_tier(), expected_tier());
    assert_int_equal(pf_cpu()->tier, pf_simd_tier());
    print_message("CPU tier %s, running %s\n", pf_simd_tier_name(raw.tier), pf_simd_tier_name(pf_simd_tier()));
}

/* ---- the engine's elementwise ops (engine_ops.c) against plain formulas / the reference ops ---- */

static double rms(const float *x, size_t d, float eps)
{
    double ss = 0;
    for (size_t k = 0; k < d; k++)
        ss += (double)x[k] * x[k];
    return 1.0 / sqrt(ss / (double)d + eps);
}

static void test_engine_ops(void **state)
{
    (void)state;
    enum { N = 5, D = 72, I = 40, HEADS = 3, HD = 16 };
    const float eps = 1e-6f;
    float *x = frandv(N * D, 2), *t = frandv(N * D, 2), *post = frandv(D, 1), *w = frandv(D, 1), *b = frandv(D, 1);
    float *h = calloc(N * D, sizeof *h), *want_x = copyv(x, N * D), *want_h = calloc(N * D, sizeof *want_h);
    assert_non_null(h);
    assert_non_null(want_h);
    for (size_t i = 0; i < N; i++) {
        double rt = rms(t + i * D, D, eps);
        for (size_t k = 0; k < D; k++)
            want_x[i * D + k] = (float)((double)want_x[i * D + k] + (double)t[i * D + k] * rt * post[k]);
        double rx = rms(want_x + i * D, D, eps);
        for (size_t k = 0; k < D; k++)
            want_h[i * D + k] = (float)((double)want_x[i * D + k] * rx * w[k]);
    }
    pf_eng_residual_norm(x, D, t, D, post, h, D, w, N, D, eps);
    assert_close("residual_norm x", x, want_x, N * D, 1e-5);
    assert_close("residual_norm h", h, want_h, N * D, 1e-5);

    float *y = calloc(N * D, sizeof *y), *want_y = calloc(N * D, sizeof *want_y);
    assert_non_null(y);
    assert_non_null(want_y);
    pf_eng_layernorm(y, x, w, b, N, D, eps);
    pf_ref_layernorm(want_y, x, w, b, N, D, eps);
    assert_close("layernorm", y, want_y, N * D, 1e-5);

    /* above PAR_MIN (32768): the variant also runs on the OpenMP worker threads */
    const size_t G = 40000;
    float *g = frandv(G, 6), *want_g = copyv(g, G);
    pf_eng_gelu_tanh(g, G);
    pf_ref_gelu_tanh(want_g, G);
    assert_close("gelu_tanh", g, want_g, G, 1e-5);

    float *gu = frandv(N * 2 * I, 4), *a = calloc(N * I, sizeof *a), *want_a = calloc(N * I, sizeof *want_a);
    assert_non_null(a);
    assert_non_null(want_a);
    for (size_t i = 0; i < N; i++) {
        memcpy(want_a + i * I, gu + i * 2 * I, I * sizeof *want_a);
        pf_ref_gelu_tanh(want_a + i * I, I);
        for (size_t j = 0; j < I; j++)
            want_a[i * I + j] *= gu[i * 2 * I + I + j];
    }
    pf_eng_gelu_mul(a, gu, N, I, 0);
    assert_close("gelu_mul", a, want_a, N * I, 1e-5);

    float *s = frandv(N * D, 80), *want_s = calloc(N * D, sizeof *want_s);
    assert_non_null(want_s);
    for (size_t i = 0; i < N * D; i++)
        want_s[i] = tanhf(s[i] / 30.0f) * 30.0f;
    pf_eng_softcap(s, N * D, 30.0f);
    assert_close("softcap", s, want_s, N * D, 1e-5);

    const float theta = 10000.0f;
    float inv[HD / 2];
    for (int i = 0; i < HD / 2; i++) /* as the reference rounds it (and engine_load.c) */
        inv[i] = 1.0f / (float)pow((double)theta, (double)((float)(2 * i) / (float)HD));
    int64_t pos[N] = {1, 2, 7, 100, 4096};
    float *r = frandv(N * HEADS * HD, 1), *want_r = copyv(r, N * HEADS * HD);
    pf_eng_rope(r, HEADS * HD, N, HEADS, HD, pos, inv);
    pf_ref_rope(want_r, N, HEADS, HD, pos, theta);
    assert_close("rope", r, want_r, N * HEADS * HD, 1e-5);

    free(x), free(t), free(post), free(w), free(b), free(h), free(want_x), free(want_h), free(y), free(want_y);
    free(g), free(want_g), free(gu), free(a), free(want_a), free(s), free(want_s), free(r), free(want_r);
}

/* ---- attention: the engine's prefill and decode (engine_attn*.c) against the reference's (ref_ops.c) ---- */

enum { AH = 4, AKV = 2, AHD = 32, AQD = AH * AHD, AKVD = AKV * AHD };

static pf_ref_attn ref_attn(float softcap, const int32_t *tt)
{
    return (pf_ref_attn){.heads = AH, .kv_heads = AKV, .head_dim = AHD, .scale = 1.0f / sqrtf((float)AHD),
                         .softcap = softcap, .token_type = tt};
}

static void test_attention_prefill(void **state)
{
    (void)state;
    enum { N = 150 }; /* two query blocks (BQ 128) */
    float *q = frandv(N * AQD, 2), *k = frandv(N * AKVD, 2), *v = frandv(N * AKVD, 1);
    float *out = calloc(N * AQD, sizeof *out), *want = calloc(N * AQD, sizeof *want);
    int32_t tt[N];
    for (int j = 0; j < N; j++)
        tt[j] = j < 40 ? 0 : 1; /* prefix-LM: a bidirectional prefix, then causal */
    int nth = omp_get_max_threads();
    float *work = malloc((size_t)nth * pf_eng_attn_prefill_work(AHD) * sizeof *work);
    assert_non_null(out);
    assert_non_null(want);
    assert_non_null(work);
    pf_ref_attn ra = ref_attn(50.0f, tt);
    eng_attn a = {.heads = AH, .kv_heads = AKV, .head_dim = AHD, .scale = ra.scale, .softcap = ra.softcap};
    eng_attn_row row = {.q = q, .k = k, .v = v, .out = out, .n = N, .token_type = tt};
    pf_eng_attn_prefill(&a, &row, 1, AQD, AKVD, AQD, work, nth);
    assert_int_equal(pf_ref_attention(&ra, q, N, 0, k, v, N, AKVD, want, NULL), 0);
    assert_close("prefill", out, want, N * AQD, 1e-4);
    free(q), free(k), free(v), free(out), free(want), free(work);
}

static void test_attention_decode(void **state)
{
    (void)state;
    enum { LEN = 70 }; /* the new token is key 70: two KV pages */
    const size_t nk = LEN + 1;
    eng_kvpool p = {.kv_dim = AKVD, .layer_floats = 2 * (size_t)PF_ENGINE_PAGE * AKVD};
    p.page_floats = p.layer_floats;
    float *pages[2] = {calloc(p.page_floats, sizeof(float)), calloc(p.page_floats, sizeof(float))};
    assert_non_null(pages[0]);
    assert_non_null(pages[1]);
    pf_engine_seq seq = {.cap = 2 * PF_ENGINE_PAGE, .len = LEN, .npages = 2, .pages = pages};
    pf_engine_seq *seqs[1] = {&seq};
    float *k = frandv(nk * AKVD, 2), *v = frandv(nk * AKVD, 1), *q = frandv(AQD, 2);
    for (size_t j = 0; j < nk; j++) {
        memcpy(pf_eng_kv_k(&p, &seq, 0, j), k + j * AKVD, AKVD * sizeof(float));
        memcpy(pf_eng_kv_k(&p, &seq, 0, j) + (size_t)PF_ENGINE_PAGE * AKVD, v + j * AKVD, AKVD * sizeof(float));
    }
    pf_ref_attn ra = ref_attn(50.0f, NULL); /* n_bidir 0: causal, as decode is */
    eng_attn a = {.heads = AH, .kv_heads = AKV, .head_dim = AHD, .scale = ra.scale, .softcap = ra.softcap};
    size_t wpt = (pf_eng_attn_decode_work(&a, nk) + 15) & ~(size_t)15;
    float *work = malloc((size_t)omp_get_max_threads() * wpt * sizeof *work);
    float out[AQD], want[AQD];
    assert_non_null(work);
    pf_eng_attn_decode(&a, &p, 0, seqs, q, AQD, out, AQD, 1, work, wpt);
    assert_int_equal(pf_ref_attention(&ra, q, 1, LEN, k, v, nk, AKVD, want, NULL), 0);
    assert_close("decode", out, want, AQD, 1e-4);
    free(pages[0]), free(pages[1]), free(k), free(v), free(q), free(work);
}

/* ---- the reference's linear layer (ref_ops.c) against a double-precision sum ---- */

static void test_ref_linear(void **state)
{
    (void)state;
    enum { N = 3, IN = 37, OUT = 9 }; /* tails: IN % 16, OUT % 4 */
    float *x = frandv(N * IN, 1), *w = frandv(OUT * IN, 1), *b = frandv(OUT, 1);
    float y[N * OUT], want[N * OUT];
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OUT; o++) {
            double s = b[o];
            for (int c = 0; c < IN; c++)
                s += (double)x[i * IN + c] * w[o * IN + c];
            want[i * OUT + o] = (float)s;
        }
    pf_ref_linear(y, x, w, b, N, IN, OUT);
    assert_close("ref_linear", y, want, N * OUT, 1e-5);
    free(x), free(w), free(b);
}

/* ---- the resampler (resample_kernels.c): the streaming path against the scalar port of Pillow, bit for
 * bit, on the three shapes that take its three vertical paths ---- */

static void resample_case(int in_w, int in_h, int out_w, int out_h)
{
    size_t in_n = (size_t)in_w * (size_t)in_h * 3, out_n = (size_t)out_w * (size_t)out_h * 3;
    uint8_t *in = malloc(in_n), *out = malloc(out_n), *want = malloc(out_n);
    assert_non_null(in);
    assert_non_null(out);
    assert_non_null(want);
    for (size_t i = 0; i < in_n; i++)
        in[i] = (uint8_t)((i * 2654435761u) >> 13);
    pf_err err;
    if (pf_resample_rgb(in, in_w, in_h, (size_t)in_w * 3, out, out_w, out_h, &err) ||
        pf_resample_rgb_reference(in, in_w, in_h, (size_t)in_w * 3, want, out_w, out_h, &err))
        fail_msg("resample %dx%d -> %dx%d: %s", in_w, in_h, out_w, out_h, err.msg);
    if (memcmp(out, want, out_n) != 0)
        fail_msg("resample %dx%d -> %dx%d differs from the reference", in_w, in_h, out_w, out_h);
    free(in), free(out), free(want);
}

static void test_resample(void **state)
{
    (void)state;
    resample_case(301, 117, 224, 224); /* both passes: block pack + horizontal block + vertical gather */
    resample_case(96, 200, 96, 64);    /* vertical only: rows widened into the gather ring */
    /* rows so long that the gather ring would exceed 16 MB: the vertical pass accumulates row by row */
    resample_case(40000, 160, 40000, 2);
}

/* ---- the evidence: every registered function ran the capped variant, and only that one ---- */

static void test_every_variant_ran_capped(void **state)
{
    (void)state;
    static const char *const expected[] = {
        "residual_norm_row", "layernorm_row",     "gelu_tanh_chunk",     "gelu_mul_row",
        "softcap_chunk",     "rope_heads",        "softmax_block_row",   "scale_row",
        "softmax_full",      "attn_scores",       "attn_values",         "pf_ref_linear",
        "pf_ref_attention",  "pf_rs_block_pack",  "pf_rs_kernel_hblock", "pf_rs_kernel_vgather",
        "pf_rs_widen_row",   "pf_rs_kernel_accumulate",
    };
    const size_t n_expected = sizeof expected / sizeof expected[0];
    char report[8192];
    pf_simd_report(report, sizeof report);
    print_message("%s", report);

    pf_cpu_tier want = expected_tier();
    pf_simd_status st[64];
    size_t n = pf_simd_list(st, 64);
    assert_true(n <= 64);
    for (size_t e = 0; e < n_expected; e++) {
        size_t i = 0;
        while (i < n && strcmp(st[i].name, expected[e]) != 0)
            i++;
        if (i == n)
            fail_msg("%s is not registered (its object file was not linked, or it lost its variants)", expected[e]);
    }
    for (size_t i = 0; i < n; i++) {
        if (PF_SIMD_MULTI && st[i].written != 7u)
            fail_msg("%s: variants written 0x%x, want all three tiers", st[i].name, st[i].written);
        if (st[i].bound != (int)want)
            fail_msg("%s: bound to %s, want %s", st[i].name,
                     st[i].bound < 0 ? "nothing (never called by this test)" : pf_simd_tier_name(st[i].bound),
                     pf_simd_tier_name(want));
        if (st[i].ran_mask != 1u << want)
            fail_msg("%s: ran mask 0x%x, want only %s (0x%x)", st[i].name, st[i].ran_mask, pf_simd_tier_name(want),
                     1u << want);
    }
}

/* ---- every tier this CPU runs computes the same bits where the code promises it: the reference oracle
 * (-ffp-contract=off, no reassociation) and the resampler's integer kernels. Runs last: calling variants
 * directly marks them as ran. ---- */

typedef void (*linear_fn)(float *, const float *, const float *, const float *, size_t, size_t, size_t);
typedef int (*attn_fn)(const pf_ref_attn *, const float *, size_t, size_t, const float *, const float *, size_t,
                       size_t, float *, float *);
typedef void (*vgather_fn)(const uint16_t *const *, const int32_t *, int, size_t, uint8_t *);
typedef void (*accumulate_fn)(int32_t *, const uint8_t *, int32_t, size_t);

static void test_tiers_agree_bit_for_bit(void **state)
{
    (void)state;
    enum { N = 70, IN = 75, OUT = 13, AL = 2 * PF_RS_ROW_ALIGN, TAPS = 9 };
    float *x = frandv(N * IN, 1), *w = frandv(OUT * IN, 1), *b = frandv(OUT, 1);
    float *q = frandv(N * AQD, 2), *k = frandv(N * AKVD, 2), *v = frandv(N * AKVD, 1);
    float y[PF_TIER_COUNT][N * OUT];
    static float att[PF_TIER_COUNT][N * AQD];
    static uint16_t rows16[TAPS][AL];
    const uint16_t *rowp[TAPS];
    int32_t taps[TAPS], acc[PF_TIER_COUNT][AL];
    uint8_t gathered[PF_TIER_COUNT][AL], h8[AL];
    for (int t = 0; t < TAPS; t++) {
        for (int i = 0; i < AL; i++)
            rows16[t][i] = (uint16_t)((t * 131 + i * 17) & 0xff);
        rowp[t] = rows16[t];
        taps[t] = (t - 3) * 40000; /* negative taps too: the clip to 0..255 is exercised */
    }
    for (int i = 0; i < AL; i++)
        h8[i] = (uint8_t)(i * 29);
    int32_t tt[N];
    for (int j = 0; j < N; j++)
        tt[j] = j < 20 ? 0 : 1;
    pf_ref_attn ra = ref_attn(50.0f, tt);
    int top = (int)pf_simd_hw_tier();
    for (int t = 0; t <= top; t++) {
        linear_fn lin = (linear_fn)pf_simd_variant("pf_ref_linear", (pf_cpu_tier)t);
        attn_fn att_fn = (attn_fn)pf_simd_variant("pf_ref_attention", (pf_cpu_tier)t);
        vgather_fn vg = (vgather_fn)pf_simd_variant("pf_rs_kernel_vgather", (pf_cpu_tier)t);
        accumulate_fn ac = (accumulate_fn)pf_simd_variant("pf_rs_kernel_accumulate", (pf_cpu_tier)t);
        if (PF_SIMD_MULTI || t == 0) {
            assert_non_null(lin);
            assert_non_null(att_fn);
            assert_non_null(vg);
            assert_non_null(ac);
        } else {
            continue;
        }
        lin(y[t], x, w, b, N, IN, OUT);
        assert_int_equal(att_fn(&ra, q, N, 0, k, v, N, AKVD, att[t], NULL), 0);
        vg(rowp, taps, TAPS, AL - 5, gathered[t]);
        for (int i = 0; i < AL; i++)
            acc[t][i] = i;
        ac(acc[t], h8, -77, AL - 3);
        if (t == 0)
            continue;
        const char *tn = pf_simd_tier_name((pf_cpu_tier)t);
        if (memcmp(y[t], y[0], sizeof y[0]) != 0)
            fail_msg("pf_ref_linear: %s differs from generic", tn);
        if (memcmp(att[t], att[0], sizeof att[0]) != 0)
            fail_msg("pf_ref_attention: %s differs from generic", tn);
        if (memcmp(gathered[t], gathered[0], AL - 5) != 0)
            fail_msg("pf_rs_kernel_vgather: %s differs from generic", tn);
        if (memcmp(acc[t], acc[0], sizeof acc[0]) != 0)
            fail_msg("pf_rs_kernel_accumulate: %s differs from generic", tn);
    }
    assert_null(pf_simd_variant("no_such_function", PF_TIER_GENERIC));
    free(x), free(w), free(b), free(q), free(k), free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_names),        cmocka_unit_test(test_one_tier_everywhere),
        cmocka_unit_test(test_engine_ops),       cmocka_unit_test(test_attention_prefill),
        cmocka_unit_test(test_attention_decode), cmocka_unit_test(test_ref_linear),
        cmocka_unit_test(test_resample),         cmocka_unit_test(test_every_variant_ran_capped),
        cmocka_unit_test(test_tiers_agree_bit_for_bit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
