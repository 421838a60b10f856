/* kernels_generic.c - portable C versions of the kernels (any x86-64; also the reference the vector tiers
 * are tested against). */
#include <math.h>
#include <string.h>

#include "model/math/dtype.h"
#include "model/linear/kernels.h"

static inline float w_f32(const pf_gemv *g, int64_t n, int64_t k)
{
    return ((const float *)g->w)[n * g->k + k];
}

static inline float w_bf16(const pf_gemv *g, int64_t n, int64_t k)
{
    uint32_t u = (uint32_t)((const uint16_t *)g->w)[n * g->k + k] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float w_s8(const pf_gemv *g, int64_t n, int64_t k)
{
    return (float)((const int8_t *)g->w)[n * g->k + k];
}

static inline void store(const pf_gemv *g, int64_t m, int64_t n, float v)
{
    if (g->bias)
        v += g->bias[n];
    float *y = &g->y[m * g->ldy + n];
    *y = g->accumulate ? *y + v : v;
}

#define GEMV_GENERIC(NAME, LOAD, SCALE)                                                                         \
    static void NAME(const pf_gemv *g, int64_t n0, int64_t n1)                                                 \
    {                                                                                                          \
        for (int64_t n = n0; n < n1; n++)                                                                      \
            for (int64_t m = 0; m < g->m; m++) {                                                               \
                const float *x = g->x + m * g->ldx;                                                            \
                float s = 0.0f;                                                                                \
                for (int64_t k = 0; k < g->k; k++)                                                             \
                    s += x[k] * LOAD(g, n, k);                                                                 \
                store(g, m, n, s * (SCALE));                                                                   \
            }                                                                                                  \
    }

GEMV_GENERIC(gemv_f32, w_f32, 1.0f)
GEMV_GENERIC(gemv_bf16, w_bf16, 1.0f)
GEMV_GENERIC(gemv_s8, w_s8, g->wscale[n])

static void gemv_u8s8(const pf_gemv *g, int64_t n0, int64_t n1)
{
    const int8_t *W = g->w;
    for (int64_t n = n0; n < n1; n++)
        for (int64_t m = 0; m < g->m; m++) {
            const uint8_t *x = g->xq + m * g->k;
            int32_t s = 0;
            for (int64_t k = 0; k < g->k; k++)
                s += (int32_t)x[k] * W[n * g->k + k];
            s -= 128 * g->wsum[n];
            store(g, m, n, (float)s * g->xscale[m] * g->wscale[n]);
        }
}

static void to_bf16(const float *x, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = pf_f32_to_bf16(x[i]);
}

static void quant_rows(const float *x, int64_t ldx, int64_t m, int64_t k, uint8_t *dst, float *scale, int offset,
                       int qmax)
{
    const float qm = (float)qmax;
    for (int64_t i = 0; i < m; i++) {
        const float *r = x + i * ldx;
        float amax = 0.0f;
        for (int64_t j = 0; j < k; j++)
            amax = fmaxf(amax, fabsf(r[j]));
        float s = amax > 0.0f ? amax / qm : 1.0f, inv = amax > 0.0f ? qm / amax : 1.0f;
        scale[i] = s;
        for (int64_t j = 0; j < k; j++) {
            float q = (r[j] * inv + 12582912.0f) - 12582912.0f; /* round half to even, |value| <= 127 */
            q = q > qm ? qm : q < -qm ? -qm : q == q ? q : 0.0f; /* NaN -> 0 */
            dst[i * k + j] = (uint8_t)((int)q + offset);
        }
    }
}

const pf_kernels pf_kernels_generic = {
    .name = "generic",
    .tier = PF_TIER_GENERIC,
    .vnni = true, /* 32-bit integer sums: no saturation */
    .f32 = gemv_f32,
    .bf16 = gemv_bf16,
    .s8 = gemv_s8,
    .u8s8 = gemv_u8s8,
    .to_bf16 = to_bf16,
    .quant_rows = quant_rows,
};
