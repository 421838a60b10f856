/* Small-M kernels: every tier this CPU runs agrees with a double-precision reference (f32/bf16/int8
 * weight-only) and bit for bit with the generic C code where the arithmetic is exact (dynamic int8,
 * activation quantization, bf16 rounding), across tails of K, N and M, bias and accumulate. */
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
#include "model/linear/kernels.h"
#include "model/linear/quant.h"

static uint64_t g_rng = 88172645463325252ull;
static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}
static float frand(void) /* uniform [-1, 1) */
{
    return (float)(rnd() & 0xffffff) / 8388608.0f - 1.0f;
}

static const int Ms[] = {1, 2, 3, 4, 5, 7, 9, 16};
static const int Ns[] = {1, 3, 4, 5, 13, 64};
static const int Ks[] = {1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 130};

typedef struct data {
    int m, n, k, ldx, ldy;
    float *x, *wf, *wscale, *bias, *y0, *y;
    uint16_t *wb;
    int8_t *wq;
    int32_t *wsum;
    uint8_t *xq;
    float *xscale;
} data;

static void make(data *d, int m, int n, int k, int qmax)
{
    memset(d, 0, sizeof *d);
    d->m = m, d->n = n, d->k = k, d->ldx = k + 3, d->ldy = n + 2;
    d->x = malloc(sizeof(float) * (size_t)(m * d->ldx));
    d->wf = malloc(sizeof(float) * (size_t)(n * k));
    d->wb = malloc(2 * (size_t)(n * k));
    d->wq = malloc((size_t)(n * k));
    d->wscale = malloc(sizeof(float) * (size_t)n);
    d->wsum = malloc(sizeof(int32_t) * (size_t)n);
    d->bias = malloc(sizeof(float) * (size_t)n);
    d->y0 = malloc(sizeof(float) * (size_t)(m * d->ldy));
    d->y = malloc(sizeof(float) * (size_t)(m * d->ldy));
    d->xq = malloc((size_t)(m * k));
    d->xscale = malloc(sizeof(float) * (size_t)m);
    for (int i = 0; i < m * d->ldx; i++)
        d->x[i] = frand() * 2.0f;
    for (int i = 0; i < n * k; i++) {
        d->wb[i] = pf_f32_to_bf16(frand());
        d->wf[i] = pf_bf16_to_f32(d->wb[i]);
        d->wq[i] = (int8_t)((int)(rnd() % (unsigned)(2 * qmax + 1)) - qmax);
    }
    for (int j = 0; j < n; j++) {
        d->wscale[j] = 0.001f + (float)(rnd() % 1000) * 1e-5f;
        d->bias[j] = frand();
        int32_t s = 0;
        for (int i = 0; i < k; i++)
            s += d->wq[j * k + i];
        d->wsum[j] = s;
    }
    for (int i = 0; i < m * d->ldy; i++)
        d->y0[i] = frand();
    for (int i = 0; i < m * k; i++)
        d->xq[i] = (uint8_t)(1 + rnd() % 255);
    for (int i = 0; i < m; i++)
        d->xscale[i] = 0.01f + (float)(rnd() % 100) * 1e-4f;
}

static void drop(data *d)
{
    free(d->x), free(d->wf), free(d->wb), free(d->wq), free(d->wscale), free(d->wsum), free(d->bias);
    free(d->y0), free(d->y), free(d->xq), free(d->xscale);
}

static double wval(const data *d, pf_wtype wt, int j, int i)
{
    if (wt == PF_W_S8)
        return (double)d->wq[j * d->k + i] * d->wscale[j];
    return d->wf[j * d->k + i];
}

/* Run kernel fn and compare with double precision; the padding columns of y must stay untouched. */
static void check_float(const pf_kernels *kt, pf_wtype wt, const data *d, bool bias, bool acc)
{
    data *dd = (data *)d;
    memcpy(dd->y, d->y0, sizeof(float) * (size_t)(d->m * d->ldy));
    pf_gemv g = {.m = d->m, .n = d->n, .k = d->k, .x = d->x, .ldx = d->ldx,
                 .w = wt == PF_W_F32 ? (const void *)d->wf : wt == PF_W_BF16 ? (const void *)d->wb : (const void *)d->wq,
                 .wscale = d->wscale, .bias = bias ? d->bias : NULL, .y = d->y, .ldy = d->ldy, .accumulate = acc};
    pf_kernels_gemv_fn(kt, wt, false)(&g, 0, d->n);
    for (int m = 0; m < d->m; m++) {
        for (int j = 0; j < d->n; j++) {
            double ref = 0, mag = 0;
            for (int i = 0; i < d->k; i++) {
                double t = (double)d->x[m * d->ldx + i] * wval(d, wt, j, i);
                ref += t;
                mag += fabs(t);
            }
            if (bias)
                ref += d->bias[j];
            if (acc)
                ref += d->y0[m * d->ldy + j];
            double got = d->y[m * d->ldy + j];
            if (fabs(got - ref) > 2e-6 * (mag + fabs(ref)) + 1e-6)
                fail_msg("%s w%d m=%d n=%d k=%d: y[%d][%d] = %.9g, want %.9g", kt->name, (int)wt, d->m, d->n, d->k,
                         m, j, got, ref);
        }
        for (int j = d->n; j < d->ldy; j++)
            assert_true(d->y[m * d->ldy + j] == d->y0[m * d->ldy + j]);
    }
}

static void test_float_kernels(void **state)
{
    (void)state;
    int tiers = 0;
    for (int t = PF_TIER_GENERIC; t <= PF_TIER_AVX512; t++) {
        const pf_kernels *kt = pf_kernels_for_tier((pf_cpu_tier)t);
        if (!kt)
            continue;
        tiers++;
        for (size_t a = 0; a < sizeof Ms / sizeof Ms[0]; a++)
            for (size_t b = 0; b < sizeof Ns / sizeof Ns[0]; b++)
                for (size_t c = 0; c < sizeof Ks / sizeof Ks[0]; c++) {
                    data d;
                    make(&d, Ms[a], Ns[b], Ks[c], 127);
                    for (int wt = PF_W_F32; wt <= PF_W_S8; wt++)
                        check_float(kt, (pf_wtype)wt, &d, (a + c) % 2 == 0, (b + c) % 3 == 0);
                    drop(&d);
                }
    }
    assert_true(tiers >= 1);
}

/* Dynamic int8: integer sums are exact, and the float epilogue is the same expression everywhere. */
static void test_dynamic_int8_exact(void **state)
{
    (void)state;
    const pf_kernels *gen = pf_kernels_for_tier(PF_TIER_GENERIC);
    for (int t = PF_TIER_GENERIC; t <= PF_TIER_AVX512; t++) {
        const pf_kernels *kt = pf_kernels_for_tier((pf_cpu_tier)t);
        if (!kt)
            continue;
        int qmax = 127; /* exact at full range on every tier (VNNI, or |q| x signed weights without it) */
        for (size_t a = 0; a < sizeof Ms / sizeof Ms[0]; a++)
            for (size_t c = 0; c < sizeof Ks / sizeof Ks[0]; c++) {
                data d;
                make(&d, Ms[a], 13, Ks[c], qmax);
                float *ref = malloc(sizeof(float) * (size_t)(d.m * d.ldy));
                for (int pass = 0; pass < 2; pass++) {
                    memcpy(d.y, d.y0, sizeof(float) * (size_t)(d.m * d.ldy));
                    pf_gemv g = {.m = d.m, .n = d.n, .k = d.k, .xq = d.xq, .xscale = d.xscale, .w = d.wq,
                                 .wscale = d.wscale, .wsum = d.wsum, .bias = d.bias, .y = d.y, .ldy = d.ldy,
                                 .accumulate = c % 2 == 1};
                    (pass ? kt : gen)->u8s8(&g, 0, d.n);
                    if (!pass)
                        memcpy(ref, d.y, sizeof(float) * (size_t)(d.m * d.ldy));
                }
                for (int m = 0; m < d.m; m++) {
                    for (int j = 0; j < d.n; j++) {
                        /* independent check of the integer identity sum (x-128) w = sum x w - 128 sum w */
                        int64_t s = 0;
                        for (int i = 0; i < d.k; i++)
                            s += ((int64_t)d.xq[m * d.k + i] - 128) * d.wq[j * d.k + i];
                        float want = (float)s * d.xscale[m] * d.wscale[j] + d.bias[j];
                        if (c % 2 == 1)
                            want = d.y0[m * d.ldy + j] + want;
                        if (ref[m * d.ldy + j] != want)
                            fail_msg("generic u8s8 m=%d k=%d [%d][%d]: %.9g != %.9g", d.m, d.k, m, j,
                                     ref[m * d.ldy + j], want);
                    }
                }
                if (memcmp(ref, d.y, sizeof(float) * (size_t)(d.m * d.ldy)) != 0)
                    fail_msg("%s u8s8 m=%d k=%d differs from generic", kt->name, d.m, d.k);
                free(ref);
                drop(&d);
            }
    }
}

static void test_to_bf16_exact(void **state)
{
    (void)state;
    enum { N = 1000 };
    float x[N];
    uint32_t special[] = {0x7fc00000u, 0x7f800001u, 0xff800000u, 0x7f800000u, 0x3f808000u, 0x3f818000u,
                          0x3f80ffffu, 0x00000001u, 0x807fffffu, 0x7f7fffffu, 0xff7fffffu, 0x80000000u,
                          0x3f7fffffu, 0x4049fdb0u, 0x00008000u, 0x7fffffffu};
    for (int i = 0; i < N; i++) {
        uint32_t u = i < (int)(sizeof special / 4) ? special[i] : rnd() * 2654435761u ^ rnd();
        memcpy(&x[i], &u, 4);
    }
    for (int t = PF_TIER_GENERIC; t <= PF_TIER_AVX512; t++) {
        const pf_kernels *kt = pf_kernels_for_tier((pf_cpu_tier)t);
        if (!kt)
            continue;
        for (int len = 0; len <= 40; len += 3) {
            uint16_t out[N];
            kt->to_bf16(x, out, N - (size_t)len);
            for (int i = 0; i < N - len; i++)
                if (out[i] != pf_f32_to_bf16(x[i]))
                    fail_msg("%s to_bf16[%d] of %a: %04x want %04x", kt->name, i, (double)x[i], out[i],
                             pf_f32_to_bf16(x[i]));
        }
    }
}

static void test_quant_rows_exact(void **state)
{
    (void)state;
    const pf_kernels *gen = pf_kernels_for_tier(PF_TIER_GENERIC);
    enum { M = 5, K = 77, LD = 80 };
    float x[M * LD];
    for (int i = 0; i < M * LD; i++)
        x[i] = frand() * (float)(1 + i % 7);
    for (int i = 0; i < LD; i++)
        x[2 * LD + i] = 0.0f; /* an all-zero row: scale 1, zeros */
    x[3 * LD + 5] = 1000.0f;  /* an outlier */
    for (int t = PF_TIER_GENERIC; t <= PF_TIER_AVX512; t++) {
        const pf_kernels *kt = pf_kernels_for_tier((pf_cpu_tier)t);
        if (!kt)
            continue;
        for (int k = 1; k <= K; k += 4)
            for (int off = 0; off <= 128; off += 128)
                for (int qmax = 63; qmax <= 127; qmax += 64) {
                    uint8_t a[M * K], b[M * K];
                    float sa[M], sb[M];
                    gen->quant_rows(x, LD, M, k, a, sa, off, qmax);
                    kt->quant_rows(x, LD, M, k, b, sb, off, qmax);
                    assert_memory_equal(sa, sb, sizeof(float) * M);
                    assert_memory_equal(a, b, (size_t)(M * k));
                    assert_true(sa[2] == 1.0f);
                    for (int i = 0; i < M; i++) {
                        for (int j = 0; j < k; j++) {
                            int q = (int)a[i * k + j] - off;
                            if (off == 0)
                                q = (int8_t)a[i * k + j];
                            assert_true(q >= -qmax && q <= qmax);
                            assert_true(fabsf((float)q * sa[i] - x[i * LD + j]) <= 0.5001f * sa[i]);
                        }
                        /* the weight quantizer of quant.h gives the same numbers (the engine uses the kernels) */
                        if (off == 0) {
                            int8_t w[K];
                            int32_t sum, want = 0;
                            float sc = pf_quant_row_s8(x + i * LD, k, qmax, w, &sum);
                            assert_true(sc == sa[i]);
                            assert_memory_equal(w, a + i * k, (size_t)k);
                            for (int j = 0; j < k; j++)
                                want += w[j];
                            assert_int_equal(sum, want);
                        }
                    }
                }
    }
}

/* pf_gemv_run splits N across threads: same numbers as one call over all of N. */
static void test_run_matches_single_call(void **state)
{
    (void)state;
    const pf_kernels *kt = pf_kernels_get();
    data d;
    make(&d, 3, 4097, 64, 127);
    float *ref = malloc(sizeof(float) * (size_t)(d.m * d.ldy));
    pf_gemv g = {.m = d.m, .n = d.n, .k = d.k, .x = d.x, .ldx = d.ldx, .w = d.wb, .bias = d.bias, .y = ref,
                 .ldy = d.ldy};
    kt->bf16(&g, 0, d.n);
    g.y = d.y;
    pf_gemv_run(kt->bf16, &g);
    for (int m = 0; m < d.m; m++)
        assert_memory_equal(ref + m * d.ldy, d.y + m * d.ldy, sizeof(float) * (size_t)d.n);
    free(ref);
    drop(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_float_kernels),
        cmocka_unit_test(test_dynamic_int8_exact),
        cmocka_unit_test(test_to_bf16_exact),
        cmocka_unit_test(test_quant_rows_exact),
        cmocka_unit_test(test_run_matches_single_call),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
