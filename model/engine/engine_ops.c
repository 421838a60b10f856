/* engine_ops.c - the engine's elementwise work: norms (fused with the residual add), GELU (fused with the
 * gate * up product), soft-caps, RoPE, embedding rows. Each row kernel is a vectorized leaf function
 * (one variant per SIMD tier, dispatched by base/simd.h); the drivers split rows across the OpenMP threads.
 * Only on leaf functions: an OpenMP region inside a variant would be outlined into a function without variants.
 *
 * Same formulas as the reference (model/ref_ops.c): RMSNorm and LayerNorm statistics summed in double,
 * (x * r) * (1 + w), RoPE angles pos * inv_freq in fp32 with libm cos/sin; only tanh/exp differ (a few ulp).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/simd.h"
#include "model/engine/engine_internal.h"
#include "model/math/dtype.h"
#include "model/math/vec_math.h"

#define PAR_MIN 32768 /* elements below which a loop stays on one thread */

/* sum of x[k]^2 in double, 8 independent lanes */
static inline double sumsq(const float *restrict x, size_t d)
{
    double acc[8] = {0};
    size_t k = 0;
    for (; k + 8 <= d; k += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += (double)x[k + j] * (double)x[k + j];
    for (; k < d; k++)
        acc[0] += (double)x[k] * (double)x[k];
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

static inline double sum(const float *restrict x, size_t d)
{
    double acc[8] = {0};
    size_t k = 0;
    for (; k + 8 <= d; k += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += (double)x[k + j];
    for (; k < d; k++)
        acc[0] += (double)x[k];
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

static inline float rms_factor(const float *x, size_t d, float eps)
{
    return 1.0f / sqrtf((float)(sumsq(x, d) / (double)d) + eps);
}

PF_SIMD_CLONES(static, void, residual_norm_row,
               (float *restrict x, const float *restrict t, const float *restrict post, float *restrict h,
                const float *restrict w, size_t d, float eps),
               (x, t, post, h, w, d, eps))
{
    if (t && post) {
        float r = rms_factor(t, d, eps);
        for (size_t k = 0; k < d; k++)
            x[k] += (t[k] * r) * post[k];
    } else if (t) {
        for (size_t k = 0; k < d; k++)
            x[k] += t[k];
    }
    if (h) {
        float r = rms_factor(x, d, eps);
        for (size_t k = 0; k < d; k++)
            h[k] = (x[k] * r) * w[k];
    }
}

void pf_eng_residual_norm(float *x, size_t ldx, const float *t, size_t ldt, const float *post, float *h, size_t ldh,
                          const float *w, size_t n, size_t d, float eps)
{
#pragma omp parallel for schedule(static) if (n * d >= PAR_MIN)
    for (size_t i = 0; i < n; i++)
        residual_norm_row(x + i * ldx, t ? t + i * ldt : NULL, post, h ? h + i * ldh : NULL, w, d, eps);
}

PF_SIMD_CLONES(static, void, layernorm_row,
               (float *y, const float *x, const float *restrict w, const float *restrict b, size_t d, float eps),
               (y, x, w, b, d, eps))
{
    double mean = sum(x, d) / (double)d;
    double acc[8] = {0};
    size_t k = 0;
    for (; k + 8 <= d; k += 8)
        for (int j = 0; j < 8; j++) {
            double c = (double)x[k + j] - mean;
            acc[j] += c * c;
        }
    for (; k < d; k++)
        acc[0] += ((double)x[k] - mean) * ((double)x[k] - mean);
    double ss = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    float rstd = (float)(1.0 / sqrt(ss / (double)d + eps)), fm = (float)mean;
    for (k = 0; k < d; k++)
        y[k] = (x[k] - fm) * rstd * w[k] + b[k];
}

void pf_eng_layernorm(float *y, const float *x, const float *w, const float *b, size_t n, size_t d, float eps)
{
#pragma omp parallel for schedule(static) if (n * d >= PAR_MIN)
    for (size_t i = 0; i < n; i++)
        layernorm_row(y + i * d, x + i * d, w, b, d, eps);
}

static inline float gelu_tanh1(float v)
{
    const float beta = 0.7978845608028654f, kappa = 0.044715f;
    return 0.5f * v * (1.0f + pf_eng_tanh(beta * (v + kappa * v * v * v)));
}

PF_SIMD_CLONES(static, void, gelu_tanh_chunk, (float *restrict x, size_t n), (x, n))
{
    for (size_t i = 0; i < n; i++)
        x[i] = gelu_tanh1(x[i]);
}

#define CHUNK 4096

void pf_eng_gelu_tanh(float *x, size_t n)
{
    size_t nc = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t c = 0; c < nc; c++)
        gelu_tanh_chunk(x + c * CHUNK, n - c * CHUNK < CHUNK ? n - c * CHUNK : CHUNK);
}

void pf_eng_gelu_erf(float *x, size_t n)
{
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++)
        x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

PF_SIMD_CLONES(static, void, gelu_mul_row,
               (float *restrict a, const float *restrict g, const float *restrict u, size_t I), (a, g, u, I))
{
    for (size_t j = 0; j < I; j++)
        a[j] = gelu_tanh1(g[j]) * u[j];
}

void pf_eng_gelu_mul(float *a, const float *gu, size_t n, size_t I, int erf_form)
{
#pragma omp parallel for schedule(static) if (n * I >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        const float *g = gu + i * 2 * I, *u = g + I;
        float *ai = a + i * I;
        if (erf_form) {
            for (size_t j = 0; j < I; j++)
                ai[j] = 0.5f * g[j] * (1.0f + erff(g[j] * 0.70710678118654752f)) * u[j];
        } else {
            gelu_mul_row(ai, g, u, I);
        }
    }
}

PF_SIMD_CLONES(static, void, softcap_chunk, (float *restrict x, size_t n, float cap), (x, n, cap))
{
    for (size_t i = 0; i < n; i++)
        x[i] = pf_eng_tanh(x[i] / cap) * cap;
}

void pf_eng_softcap(float *x, size_t n, float cap)
{
    size_t nc = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t c = 0; c < nc; c++)
        softcap_chunk(x + c * CHUNK, n - c * CHUNK < CHUNK ? n - c * CHUNK : CHUNK, cap);
}

PF_SIMD_CLONES(static, void, rope_heads,
               (float *restrict x, int heads, int half, const float *restrict cs, const float *restrict sn),
               (x, heads, half, cs, sn))
{
    for (int h = 0; h < heads; h++) {
        float *v = x + (size_t)h * 2 * (size_t)half;
        for (int i = 0; i < half; i++) {
            float a = v[i], b = v[i + half];
            v[i] = a * cs[i] + (-b) * sn[i];
            v[i + half] = b * cs[i] + a * sn[i];
        }
    }
}

void pf_eng_rope(float *x, size_t ld, size_t n, int heads, int head_dim, const int64_t *pos, const float *inv)
{
    int half = head_dim / 2;
#pragma omp parallel for schedule(static) if (n * (size_t)heads * (size_t)head_dim >= PAR_MIN)
    for (size_t t = 0; t < n; t++) {
        float cs[PF_CFG_MAX_HEAD_DIM / 2], sn[PF_CFG_MAX_HEAD_DIM / 2];
        for (int i = 0; i < half; i++) {
            float ang = (float)pos[t] * inv[i];
            cs[i] = cosf(ang);
            sn[i] = sinf(ang);
        }
        rope_heads(x + t * ld, heads, half, cs, sn);
    }
}

void pf_eng_embed_rows(const pf_st_tensor *t, const int32_t *ids, size_t n, size_t d, float scale, float *out,
                       size_t ldo)
{
    size_t esz = pf_dtype_size(t->dtype);
#pragma omp parallel for schedule(static) if (n * d >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float *o = out + i * ldo;
        const uint8_t *src = t->data + (size_t)ids[i] * d * esz;
        if (t->dtype == PF_DT_BF16) {
            for (size_t k = 0; k < d; k++) {
                uint16_t b;
                memcpy(&b, src + 2 * k, 2);
                uint32_t u = (uint32_t)b << 16;
                float f;
                memcpy(&f, &u, 4);
                o[k] = f * scale;
            }
        } else {
            pf_convert_to_f32(t->dtype, src, d, o);
            for (size_t k = 0; k < d; k++)
                o[k] *= scale;
        }
    }
}

float pf_eng_tanh1(float x) { return pf_eng_tanh(x); }
float pf_eng_exp1(float x) { return pf_eng_exp(x); }
