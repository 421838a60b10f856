/* Linear layers at every precision this machine supports, against a double-precision reference of the
 * same (bf16-stored) weights: all paths (oneDNN, our kernels, int8 weight-only and dynamic), packed and
 * row-major layouts, stacked parts, bias, accumulate, strides; bad input refused; and no oneDNN `ref:`
 * implementation on the shapes the real models run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/math/dtype.h"
#include "model/linear/mm.h"

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static double nrand(void) /* approximately N(0,1): sum of 4 uniforms */
{
    double s = 0;
    for (int i = 0; i < 4; i++) {
        g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
        s += (double)(g_rng >> 11) / 9007199254740992.0;
    }
    return (s - 2.0) * 1.7320508;
}

/* Relative error ||y - ref|| / ||ref|| each precision must meet (bf16 rounds activations to 8 bits of
 * mantissa; int8 quantizes weights per row and, in the dynamic path, activations per row). */
static double tol_of(pf_precision p)
{
    return p == PF_PREC_FP32 ? 2e-6 : p == PF_PREC_BF16 ? 1e-2 : 3e-2;
}

typedef struct layer {
    int64_t n, k;
    uint16_t *w; /* bf16 source weights [n][k] */
    float *bias;
} layer;

static void layer_make(layer *l, int64_t n, int64_t k, bool bias)
{
    l->n = n, l->k = k;
    l->w = malloc(2 * (size_t)(n * k));
    l->bias = bias ? malloc(sizeof(float) * (size_t)n) : NULL;
    for (int64_t i = 0; i < n * k; i++)
        l->w[i] = pf_f32_to_bf16((float)(nrand() / sqrt((double)k)));
    for (int64_t i = 0; bias && i < n; i++)
        l->bias[i] = (float)(0.1 * nrand());
}

static void layer_free(layer *l)
{
    free(l->w);
    free(l->bias);
}

/* y (= or +=) x W^T + b in double; compares only columns < n; checks padding columns untouched. */
static void check_output(const char *what, pf_precision prec, const layer *l, int64_t m, const float *x, int64_t ldx,
                         const float *y0, const float *y, int64_t ldy, bool acc)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < l->n; j++) {
            double r = l->bias ? l->bias[j] : 0.0;
            for (int64_t k = 0; k < l->k; k++)
                r += (double)x[i * ldx + k] * pf_bf16_to_f32(l->w[j * l->k + k]);
            double got = y[i * ldy + j] - (acc ? (double)y0[i * ldy + j] : 0.0);
            if (!isfinite(y[i * ldy + j]))
                fail_msg("%s: y[%lld][%lld] not finite", what, (long long)i, (long long)j);
            num += (got - r) * (got - r);
            den += r * r;
        }
        for (int64_t j = l->n; j < ldy; j++)
            if (y[i * ldy + j] != y0[i * ldy + j])
                fail_msg("%s: wrote past N at [%lld][%lld]", what, (long long)i, (long long)j);
    }
    double rel = sqrt(num / (den > 0 ? den : 1));
    if (rel > tol_of(prec))
        fail_msg("%s: relative error %.3g > %.3g", what, rel, tol_of(prec));
}

static bool supported(pf_precision p)
{
    return pf_precision_probe()->ok[p];
}

static void run_case(pf_mm_ctx *c, const pf_linear *lin, pf_precision prec, const layer *l, int64_t m, unsigned flags,
                     const char *tag)
{
    int64_t ldx = l->k + 5, ldy = l->n + 3;
    float *x = malloc(sizeof(float) * (size_t)(m * ldx));
    float *y0 = malloc(sizeof(float) * (size_t)(m * ldy)), *y = malloc(sizeof(float) * (size_t)(m * ldy));
    for (int64_t i = 0; i < m * ldx; i++)
        x[i] = (float)nrand();
    for (int64_t i = 0; i < m * ldy; i++)
        y0[i] = (float)nrand();
    memcpy(y, y0, sizeof(float) * (size_t)(m * ldy));
    pf_err err;
    char impl[128], what[256];
    if (pf_linear_impl(c, lin, m, flags, impl, sizeof impl, &err) != 0)
        fail_msg("%s", err.msg);
    snprintf(what, sizeof what, "%s %s M=%lld K=%lld N=%lld flags=%#x [%s, %s]", pf_precision_name(prec), tag,
             (long long)m, (long long)l->k, (long long)l->n, flags, impl, pf_linear_layout(lin));
    if (pf_linear_forward(c, lin, m, x, ldx, y, ldy, flags, &err) != 0)
        fail_msg("%s: %s", what, err.msg);
    check_output(what, prec, l, m, x, ldx, y0, y, ldy, (flags & PF_LINEAR_ACCUMULATE) != 0);
    free(x), free(y0), free(y);
}

static void test_precisions_all_paths(void **state)
{
    (void)state;
    /* M, K, N: tails everywhere; K=8192 makes the weight conversion work in several chunks with a last
     * one that ends inside a 64-row block */
    static const int64_t shapes[][3] = {{1, 64, 40}, {3, 100, 37}, {4, 256, 256}, {16, 512, 130},
                                        {17, 512, 130}, {64, 128, 300}, {200, 96, 70}, {2, 8192, 300}};
    int tested = 0;
    for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++) {
        if (!supported((pf_precision)p))
            continue;
        for (int layout = PF_LAYOUT_AUTO; layout <= PF_LAYOUT_ROWMAJOR; layout++) {
            pf_mm_params o = {.precision = (pf_precision)p, .layout = (pf_mm_layout)layout};
            pf_mm_engine *e;
            pf_mm_ctx *c;
            pf_err err;
            if (pf_mm_engine_create(&o, &e, &err) || pf_mm_ctx_create(e, &c, &err))
                fail_msg("%s", err.msg);
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
                layer l;
                layer_make(&l, shapes[s][2], shapes[s][1], s % 2 == 0);
                pf_linear *lin;
                if (pf_linear_create1(e, "test", l.n, l.k, PF_DT_BF16, l.w, l.bias, PF_DT_F32, &lin, &err))
                    fail_msg("%s", err.msg);
                int64_t m = shapes[s][0];
                run_case(c, lin, (pf_precision)p, &l, m, 0, "default");
                run_case(c, lin, (pf_precision)p, &l, m, PF_LINEAR_ACCUMULATE, "default");
                run_case(c, lin, (pf_precision)p, &l, m, PF_LINEAR_FORCE_ONEDNN, "onednn");
                run_case(c, lin, (pf_precision)p, &l, m, PF_LINEAR_FORCE_ONEDNN | PF_LINEAR_ACCUMULATE, "onednn");
                if (strcmp(pf_linear_layout(lin), "row-major") == 0) {
                    unsigned f = p == PF_PREC_INT8 ? PF_LINEAR_FORCE_INT8_WO : PF_LINEAR_FORCE_KERNEL;
                    run_case(c, lin, (pf_precision)p, &l, m, f, "kernel");
                    run_case(c, lin, (pf_precision)p, &l, m, f | PF_LINEAR_ACCUMULATE, "kernel");
                    if (p == PF_PREC_INT8)
                        run_case(c, lin, (pf_precision)p, &l, m, PF_LINEAR_FORCE_INT8_DYN, "kernel-dyn");
                }
                /* the same linear again after others: cached primitives still right */
                run_case(c, lin, (pf_precision)p, &l, m, 0, "again");
                pf_linear_destroy(lin);
                layer_free(&l);
                tested++;
            }
            int cached, created;
            pf_mm_ctx_stats(c, &cached, &created);
            assert_true(cached <= created);
            pf_mm_ctx_destroy(c);
            pf_mm_engine_destroy(e);
        }
    }
    assert_true(tested >= 16); /* fp32 at least, both layouts */
}

/* q, k, v stacked from parts of different dtypes and strides, a bias on one part only. */
static void test_stacked_parts(void **state)
{
    (void)state;
    for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++) {
        if (!supported((pf_precision)p))
            continue;
        const int64_t k = 96, n0 = 64, n1 = 32, n2 = 40, ld2 = 100;
        layer l;
        layer_make(&l, n0 + n1 + n2, k, true);
        for (int64_t j = 0; j < n0 + n2; j++)
            if (j < n0)
                l.bias[j] = 0; /* parts 0 and 2 have none */
        for (int64_t j = n0 + n1; j < n0 + n1 + n2; j++)
            l.bias[j] = 0;
        float *w0 = malloc(sizeof(float) * (size_t)(n0 * k));
        uint16_t *w1 = malloc(2 * (size_t)(n1 * k)), *w2 = calloc((size_t)(n2 * ld2), 2), *b1 = malloc(2 * (size_t)n1);
        for (int64_t i = 0; i < n0 * k; i++)
            w0[i] = pf_bf16_to_f32(l.w[i]);
        for (int64_t i = 0; i < n1 * k; i++) { /* F16 part: store values exactly representable in both */
            float v = pf_bf16_to_f32(l.w[n0 * k + i]);
            uint32_t u;
            memcpy(&u, &v, 4);
            int e = (int)((u >> 23) & 0xff) - 127;
            if (e < -14) { /* below f16 normals: make it zero in both */
                l.w[n0 * k + i] = 0;
                w1[i] = 0;
                continue;
            }
            w1[i] = (uint16_t)(((u >> 16) & 0x8000) | (uint32_t)((e + 15) << 10) | ((u >> 13) & 0x3ff));
            assert_true(pf_f16_to_f32(w1[i]) == v);
        }
        for (int64_t r = 0; r < n2; r++)
            memcpy(w2 + r * ld2, l.w + (n0 + n1 + r) * k, 2 * (size_t)k);
        for (int64_t j = 0; j < n1; j++) {
            b1[j] = pf_f32_to_bf16(l.bias[n0 + j]);
            l.bias[n0 + j] = pf_bf16_to_f32(b1[j]);
        }
        pf_linear_desc d = {.name = "qkv", .k = k, .nparts = 3};
        d.parts[0] = (pf_linear_part){.w = w0, .dtype = PF_DT_F32, .n = n0};
        d.parts[1] = (pf_linear_part){.w = w1, .dtype = PF_DT_F16, .n = n1, .bias = b1, .bias_dtype = PF_DT_BF16};
        d.parts[2] = (pf_linear_part){.w = w2, .dtype = PF_DT_BF16, .n = n2, .ld = ld2};
        pf_mm_params o = {.precision = (pf_precision)p};
        pf_mm_engine *e;
        pf_mm_ctx *c;
        pf_linear *lin;
        pf_err err;
        if (pf_mm_engine_create(&o, &e, &err) || pf_mm_ctx_create(e, &c, &err) || pf_linear_create(e, &d, &lin, &err))
            fail_msg("%s", err.msg);
        assert_int_equal(pf_linear_n(lin), n0 + n1 + n2);
        assert_true(pf_linear_bytes(lin) >= (size_t)((n0 + n1 + n2) * k));
        for (int64_t m = 1; m <= 33; m += 8)
            run_case(c, lin, (pf_precision)p, &l, m, 0, "parts");
        pf_linear_destroy(lin);
        pf_mm_ctx_destroy(c);
        pf_mm_engine_destroy(e);
        free(w0), free(w1), free(w2), free(b1);
        layer_free(&l);
    }
}

static void test_bad_input_refused(void **state)
{
    (void)state;
    pf_mm_engine *e;
    pf_mm_ctx *c;
    pf_err err;
    pf_mm_params o = {.precision = PF_PREC_FP32};
    if (pf_mm_engine_create(&o, &e, &err) || pf_mm_ctx_create(e, &c, &err))
        fail_msg("%s", err.msg);
    float w[4 * 8] = {0}, x[8 * 2] = {0}, y[4 * 2];
    pf_linear *lin = NULL;
    assert_int_equal(pf_linear_create1(e, "zero_k", 4, 0, PF_DT_F32, w, NULL, PF_DT_F32, &lin, &err), -1);
    assert_non_null(strstr(err.msg, "zero_k"));
    assert_int_equal(pf_linear_create1(e, "ints", 4, 8, PF_DT_I64, w, NULL, PF_DT_F32, &lin, &err), -1);
    assert_non_null(strstr(err.msg, "I64"));
    assert_int_equal(pf_linear_create1(e, "huge", (int64_t)1 << 40, 8, PF_DT_F32, w, NULL, PF_DT_F32, &lin, &err), -1);
    pf_linear_desc d = {.name = "noparts", .k = 8, .nparts = 0};
    assert_int_equal(pf_linear_create(e, &d, &lin, &err), -1);
    d = (pf_linear_desc){.name = "stride", .k = 8, .nparts = 1};
    d.parts[0] = (pf_linear_part){.w = w, .dtype = PF_DT_F32, .n = 4, .ld = 7};
    assert_int_equal(pf_linear_create(e, &d, &lin, &err), -1);
    w[9] = NAN;
    assert_int_equal(pf_linear_create1(e, "nan", 4, 8, PF_DT_F32, w, NULL, PF_DT_F32, &lin, &err), -1);
    assert_non_null(strstr(err.msg, "non-finite"));
    w[9] = 0;
    assert_int_equal(pf_linear_create1(e, "ok", 4, 8, PF_DT_F32, w, NULL, PF_DT_F32, &lin, &err), 0);
    assert_int_equal(pf_linear_forward(c, lin, 2, x, 7, y, 4, 0, &err), -1); /* ldx < K */
    assert_non_null(strstr(err.msg, "ldx"));
    assert_int_equal(pf_linear_forward(c, lin, -1, x, 8, y, 4, 0, &err), -1);
    assert_int_equal(pf_linear_forward(c, lin, 2, NULL, 8, y, 4, 0, &err), -1);
    assert_int_equal(pf_linear_forward(c, lin, 0, NULL, 8, NULL, 4, 0, &err), 0);
    assert_int_equal(pf_linear_forward(c, lin, 2, x, 8, y, 4, 0, &err), 0);
    pf_linear_destroy(lin);
    pf_mm_ctx_destroy(c);
    pf_mm_engine_destroy(e);
    pf_precision bad;
    if (!supported(PF_PREC_BF16)) { /* asking for what the CPU lacks fails clearly */
        o.precision = PF_PREC_BF16;
        assert_int_equal(pf_mm_engine_create(&o, &e, &err), -1);
        assert_non_null(strstr(err.msg, "bf16"));
    }
    (void)bad;
}

/* Every matmul the real models run (PaliGemma 1 and 2, 3B and 10B, vision tower and projector, LM head),
 * at decode and prefill M, must get a real implementation: oneDNN's `ref:` kernels are 100x slower. */
static void test_no_ref_on_hot_shapes(void **state)
{
    (void)state;
    static const int64_t kn[][2] = {
        /* PaliGemma 1 (Gemma 2B): q, kv, qkv, o, gate/up, gate_up, down, LM head */
        {2048, 2048}, {2048, 256}, {2048, 2560}, {2048, 16384}, {2048, 32768}, {16384, 2048}, {2048, 257216},
        /* PaliGemma 2 3B (Gemma 2 2B) */
        {2304, 2048}, {2304, 1024}, {2304, 4096}, {2048, 2304}, {2304, 9216}, {2304, 18432}, {9216, 2304},
        {2304, 257216},
        /* PaliGemma 2 10B (Gemma 2 9B) */
        {3584, 4096}, {3584, 2048}, {3584, 8192}, {4096, 3584}, {3584, 14336}, {14336, 3584}, {3584, 257216},
        /* SigLIP So400m: q/k/v/o, qkv, fc1, fc2; projector to 2048 / 2304 / 3584 */
        {1152, 1152}, {1152, 3456}, {1152, 4304}, {4304, 1152}, {1152, 2048}, {1152, 2304}, {1152, 3584},
    };
    static const int64_t ms[] = {1, 4, 16, 64, 256, 1024};
    int checked = 0;
    for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++) {
        if (!supported((pf_precision)p))
            continue;
        pf_mm_params o = {.precision = (pf_precision)p};
        pf_mm_engine *e;
        pf_err err;
        if (pf_mm_engine_create(&o, &e, &err))
            fail_msg("%s", err.msg);
        for (size_t s = 0; s < sizeof kn / sizeof kn[0]; s++)
            for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
                char impl[128];
                bool bias = kn[s][0] == 1152 || kn[s][1] == 1152 || kn[s][0] == 4304;
                if (pf_mm_shape_impl(e, ms[i], kn[s][0], kn[s][1], bias, impl, sizeof impl, &err) != 0)
                    fail_msg("%s: %s", pf_precision_name((pf_precision)p), err.msg);
                assert_null(strstr(impl, "ref"));
                checked++;
            }
        pf_mm_engine_destroy(e);
    }
    assert_true(checked > 0);
}

/* int8: every path computes exact integer sums and applies one epilogue, so a row's result is bitwise the
 * same alone (M = 1: decode kernels) and in a prefill-sized batch (oneDNN u8s8 with VNNI, else our kernels
 * in 64-row blocks), at any position in the batch. */
static void test_int8_rows_batch_invariant(void **state)
{
    (void)state;
    if (!supported(PF_PREC_INT8))
        skip();
    const int64_t M = 200, K = 512, N = 300;
    pf_mm_params o = {.precision = PF_PREC_INT8};
    pf_mm_engine *e;
    pf_mm_ctx *c;
    pf_err err;
    if (pf_mm_engine_create(&o, &e, &err) || pf_mm_ctx_create(e, &c, &err))
        fail_msg("%s", err.msg);
    layer l;
    layer_make(&l, N, K, true);
    pf_linear *lin;
    if (pf_linear_create1(e, "test", l.n, l.k, PF_DT_BF16, l.w, l.bias, PF_DT_F32, &lin, &err))
        fail_msg("%s", err.msg);
    float *x = malloc(sizeof(float) * (size_t)(M * K)), *yb = malloc(sizeof(float) * (size_t)(M * N));
    float *y1 = malloc(sizeof(float) * (size_t)N);
    for (int64_t i = 0; i < M * K; i++)
        x[i] = (float)nrand();
    if (pf_linear_forward(c, lin, M, x, K, yb, N, 0, &err) != 0)
        fail_msg("%s", err.msg);
    static const int64_t rows[] = {0, 1, 63, 64, 65, 127, 128, 199};
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        if (pf_linear_forward(c, lin, 1, x + rows[r] * K, K, y1, N, 0, &err) != 0)
            fail_msg("%s", err.msg);
        if (memcmp(y1, yb + rows[r] * N, sizeof(float) * (size_t)N) != 0)
            fail_msg("int8: row %lld of a batch of %lld differs from the row alone", (long long)rows[r],
                     (long long)M);
    }
    free(x), free(yb), free(y1);
    pf_linear_destroy(lin);
    layer_free(&l);
    pf_mm_ctx_destroy(c);
    pf_mm_engine_destroy(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_precisions_all_paths),
        cmocka_unit_test(test_int8_rows_batch_invariant),
        cmocka_unit_test(test_stacked_parts),
        cmocka_unit_test(test_bad_input_refused),
        cmocka_unit_test(test_no_ref_on_hot_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
