/* ref_ops.c - the reference path's building blocks: linear, norms, activations, RoPE, tiled attention.
 *
 * Inner loops are contiguous and written with explicit independent accumulators so gcc vectorizes them
 * without reassociating floats (-O3, -ffp-contract=off for model/ref_*.c: results are identical whatever
 * SIMD variant runs (base/simd.h), and identical between the blocked and unblocked code paths).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/simd.h"
#include "model/math/vec_math.h" /* pf_eng_exp: Cephes expf, branch-free so the key loop vectorizes */
#include "model/ref/ref.h"


#define LANES 16

/* Reduce LANES partial sums in a fixed tree order. */
static inline float reduce(float *acc)
{
    for (int s = LANES / 2; s > 0; s >>= 1)
        for (int j = 0; j < s; j++)
            acc[j] += acc[j + s];
    return acc[0];
}

static inline float dot(const float *restrict a, const float *restrict b, size_t n)
{
    float acc[LANES] = {0};
    size_t k = 0;
    for (; k + LANES <= n; k += LANES)
        for (int j = 0; j < LANES; j++)
            acc[j] += a[k + j] * b[k + j];
    for (int j = 0; k + (size_t)j < n; j++)
        acc[j] += a[k + j] * b[k + j];
    return reduce(acc);
}

/* Four dot products sharing a: the same operation sequence per output as dot(). */
static inline void dot4(const float *restrict a, const float *restrict b0, const float *restrict b1,
                        const float *restrict b2, const float *restrict b3, size_t n, float *out)
{
    float a0[LANES] = {0}, a1[LANES] = {0}, a2[LANES] = {0}, a3[LANES] = {0};
    size_t k = 0;
    for (; k + LANES <= n; k += LANES)
        for (int j = 0; j < LANES; j++) {
            float x = a[k + j];
            a0[j] += x * b0[k + j];
            a1[j] += x * b1[k + j];
            a2[j] += x * b2[k + j];
            a3[j] += x * b3[k + j];
        }
    for (int j = 0; k + (size_t)j < n; j++) {
        float x = a[k + j];
        a0[j] += x * b0[k + j];
        a1[j] += x * b1[k + j];
        a2[j] += x * b2[k + j];
        a3[j] += x * b3[k + j];
    }
    out[0] = reduce(a0);
    out[1] = reduce(a1);
    out[2] = reduce(a2);
    out[3] = reduce(a3);
}

/* One variant per SIMD tier (base/simd.h), all computing the same bits. */
PF_SIMD_CLONES(extern, void, pf_ref_linear,
               (float *y, const float *x, const float *w, const float *b, size_t n, size_t in, size_t out),
               (y, x, w, b, n, in, out))
{
    /* Block the weight rows so a block (<= 256 KB) stays in L2 while every input row passes over it. */
    size_t ob = (256u << 10) / (in * sizeof(float) + 1);
    ob = ob < 4 ? 4 : ob & ~(size_t)3;
    for (size_t o0 = 0; o0 < out; o0 += ob) {
        size_t o1 = o0 + ob < out ? o0 + ob : out;
        size_t i = 0;
        for (; i < n; i++) {
            const float *xi = x + i * in;
            float *yi = y + i * out;
            size_t o = o0;
            for (; o + 4 <= o1; o += 4)
                dot4(xi, w + o * in, w + (o + 1) * in, w + (o + 2) * in, w + (o + 3) * in, in, yi + o);
            for (; o < o1; o++)
                yi[o] = dot(xi, w + o * in, in);
        }
        if (b)
            for (i = 0; i < n; i++)
                for (size_t o = o0; o < o1; o++)
                    y[i * out + o] += b[o];
    }
}

/* RMSNorm (quirk 2): fp32, x * rsqrt(mean(x^2) + eps) * (1 + w). */
void pf_ref_rmsnorm(float *y, const float *x, const float *w, size_t n, size_t d, float eps)
{
    for (size_t i = 0; i < n; i++) {
        const float *xi = x + i * d;
        float *yi = y + i * d;
        double ss = 0;
        for (size_t k = 0; k < d; k++)
            ss += (double)xi[k] * xi[k];
        float r = 1.0f / sqrtf((float)(ss / (double)d) + eps);
        for (size_t k = 0; k < d; k++)
            yi[k] = (xi[k] * r) * (1.0f + w[k]);
    }
}

/* LayerNorm with weight and bias (SigLIP, quirk 13), biased variance. */
void pf_ref_layernorm(float *y, const float *x, const float *w, const float *b, size_t n, size_t d, float eps)
{
    for (size_t i = 0; i < n; i++) {
        const float *xi = x + i * d;
        float *yi = y + i * d;
        double s = 0, ss = 0;
        for (size_t k = 0; k < d; k++)
            s += xi[k];
        double mean = s / (double)d;
        for (size_t k = 0; k < d; k++)
            ss += ((double)xi[k] - mean) * ((double)xi[k] - mean);
        float rstd = (float)(1.0 / sqrt(ss / (double)d + eps));
        float fm = (float)mean;
        for (size_t k = 0; k < d; k++)
            yi[k] = (xi[k] - fm) * rstd * w[k] + b[k];
    }
}

/* gelu_pytorch_tanh (quirk 3): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
void pf_ref_gelu_tanh(float *x, size_t n)
{
    const float beta = 0.7978845608028654f, kappa = 0.044715f;
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(beta * (v + kappa * v * v * v)));
    }
}

void pf_ref_gelu_erf(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

/* RoPE (quirk 4): inv_freq[i] = 1 / theta^(2i/d) rounded like torch's fp32 ops, angle = pos * inv_freq in
 * fp32, half-split pairs (i, i + d/2). */
void pf_ref_rope(float *x, size_t n, int heads, int head_dim, const int64_t *pos, float theta)
{
    int half = head_dim / 2;
    float cs[PF_CFG_MAX_HEAD_DIM / 2], sn[PF_CFG_MAX_HEAD_DIM / 2];
    for (size_t t = 0; t < n; t++) {
        for (int i = 0; i < half; i++) {
            float e = (float)(2 * i) / (float)head_dim;
            float inv = 1.0f / (float)pow((double)theta, (double)e);
            float ang = (float)pos[t] * inv;
            cs[i] = cosf(ang);
            sn[i] = sinf(ang);
        }
        for (int h = 0; h < heads; h++) {
            float *v = x + (t * (size_t)heads + (size_t)h) * (size_t)head_dim;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * cs[i] + (-b) * sn[i];
                v[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
}

/* ---- tiled attention ---------------------------------------------------------------------------- */

#define BQ 32
#define BK 64


static inline int visible(const pf_ref_attn *a, size_t i, size_t j)
{
    if (a->window > 0 && (long long)j <= (long long)i - a->window)
        return 0;
    if (j <= i)
        return 1;
    return a->token_type ? a->token_type[j] == 0 : j < a->n_bidir;
}

size_t pf_ref_attention_work_floats(int head_dim) { return (size_t)(2 * BQ + BK) * (size_t)head_dim; }

PF_SIMD_CLONES(extern, int, pf_ref_attention,
               (const pf_ref_attn *a, const float *q, size_t nq, size_t q0, const float *k, const float *v, size_t nk,
                size_t kv_stride, float *out, float *work),
               (a, q, nq, q0, k, v, nk, kv_stride, out, work))
{
    const int hd = a->head_dim, group = a->heads / a->kv_heads;
    const size_t qstride = (size_t)a->heads * (size_t)hd;
    float *own = work ? NULL : malloc(sizeof(float) * pf_ref_attention_work_floats(hd));
    if (!work && !own)
        return -1;
    float *qtile = work ? work : own;                 /* [BQ][hd] */
    float *acc = qtile + (size_t)BQ * (size_t)hd;     /* [BQ][hd] */
    float *kt = acc + (size_t)BQ * (size_t)hd;        /* key block transposed: [hd][BK] */
    float s[BQ][BK], m[BQ], l[BQ];
    for (int h = 0; h < a->heads; h++) {
        const size_t koff = (size_t)(h / group) * (size_t)hd;
        for (size_t i0 = 0; i0 < nq; i0 += BQ) {
            size_t nb = nq - i0 < BQ ? nq - i0 : BQ;
            for (size_t r = 0; r < nb; r++) {
                memcpy(qtile + r * (size_t)hd, q + (i0 + r) * qstride + (size_t)h * (size_t)hd, sizeof(float) * (size_t)hd);
                m[r] = -INFINITY;
                l[r] = 0;
            }
            memset(acc, 0, sizeof(float) * nb * (size_t)hd);
            size_t imin = q0 + i0, imax = q0 + i0 + nb - 1;
            for (size_t j0 = 0; j0 < nk; j0 += BK) {
                size_t kb = nk - j0 < BK ? nk - j0 : BK;
                /* Skip key blocks no query of this tile can see. */
                if (a->window > 0 && (long long)(j0 + kb - 1) <= (long long)imin - a->window)
                    continue;
                if (!a->token_type && j0 > imax && j0 >= a->n_bidir)
                    continue;
                /* Scores vectorized across the block's keys: s[r][c] = sum_d q[r][d] * kt[d][c], summed in
                 * d order (no horizontal reductions). */
                for (int d = 0; d < hd; d++) {
                    float *ktd = kt + (size_t)d * BK;
                    for (size_t c = 0; c < kb; c++)
                        ktd[c] = k[(j0 + c) * kv_stride + koff + (size_t)d];
                    for (size_t c = kb; c < BK; c++)
                        ktd[c] = 0;
                }
                for (size_t r = 0; r < nb; r++) {
                    size_t i = imin + r;
                    const float *qr = qtile + r * (size_t)hd;
                    float *sr = s[r];
                    for (int c = 0; c < BK; c++)
                        sr[c] = 0;
                    for (int d = 0; d < hd; d++) {
                        float qd = qr[d];
                        const float *ktd = kt + (size_t)d * BK;
                        for (int c = 0; c < BK; c++)
                            sr[c] += qd * ktd[c];
                    }
                    size_t c;
                    float bm = -INFINITY;
                    for (c = 0; c < kb; c++) {
                        if (!visible(a, i, j0 + c)) {
                            sr[c] = -INFINITY;
                            continue;
                        }
                        float x = sr[c] * a->scale;
                        if (a->softcap > 0)
                            x = tanhf(x / a->softcap) * a->softcap;
                        sr[c] = x;
                        bm = x > bm ? x : bm;
                    }
                    if (bm == -INFINITY)
                        continue;
                    /* Online softmax: rescale what was accumulated to the new running max. */
                    float mnew = m[r] > bm ? m[r] : bm;
                    float alpha = m[r] == -INFINITY ? 0.0f : pf_eng_exp(m[r] - mnew); /* 0 on the first block */
                    float *ar = acc + r * (size_t)hd;
                    if (alpha != 1.0f) {
                        for (int d = 0; d < hd; d++)
                            ar[d] *= alpha;
                    }
                    float p[BK], sum = 0;
                    for (c = 0; c < kb; c++) {
                        float e = pf_eng_exp(sr[c] - mnew);
                        p[c] = sr[c] == -INFINITY ? 0.0f : e;
                    }
                    for (c = 0; c < kb; c++) {
                        if (p[c] == 0.0f)
                            continue;
                        sum += p[c];
                        const float *vr = v + (j0 + c) * kv_stride + koff;
                        for (int d = 0; d < hd; d++)
                            ar[d] += p[c] * vr[d];
                    }
                    l[r] = l[r] * alpha + sum;
                    m[r] = mnew;
                }
            }
            for (size_t r = 0; r < nb; r++) {
                float *o = out + (i0 + r) * qstride + (size_t)h * (size_t)hd;
                float inv = 1.0f / l[r];
                for (int d = 0; d < hd; d++)
                    o[d] = acc[r * (size_t)hd + d] * inv;
            }
        }
    }
    free(own);
    return 0;
}
