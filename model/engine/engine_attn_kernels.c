/* engine_attn_kernels.c - the two inner loops of decode attention, per CPU tier (AVX-512, AVX2+FMA, C):
 *   scores: s[h][j] = scale * q_h . k_j   for up to 8 query heads sharing one kv head, keys j of one page;
 *   values: o_h += sum_j p[h][j] v_j.
 * Scores keep one accumulator register per head (independent FMA chains; each key vector is loaded once for
 * all heads) and reduce it per key; values keep a 16- (8-) float slice of every head's output in registers
 * across all keys of the page. Decode attention reads the whole KV cache every step, so these run at the
 * speed the cache streams from memory rather than at the latency of one FMA chain. */
#include <immintrin.h>
#include <string.h>

#include "base/simd.h"
#include "model/engine/engine_internal.h"

#define INLINE static inline __attribute__((always_inline))
#define T512 PF_SIMD_TARGET_AVX512
#define T256 PF_SIMD_TARGET_AVX2

/* ---- AVX-512 ---- */

INLINE T512 void scores512(const float *q, size_t ldq, int G, int hd, const float *k, size_t kv_dim, size_t nk,
                           float scale, float *s, size_t lds)
{
    for (size_t j = 0; j < nk; j++) {
        const float *kr = k + j * kv_dim;
        __m512 acc[8];
        for (int h = 0; h < G; h++)
            acc[h] = _mm512_setzero_ps();
        int d = 0;
        for (; d + 16 <= hd; d += 16) {
            __m512 kv = _mm512_loadu_ps(kr + d);
            for (int h = 0; h < G; h++)
                acc[h] = _mm512_fmadd_ps(_mm512_loadu_ps(q + (size_t)h * ldq + (size_t)d), kv, acc[h]);
        }
        if (d < hd) {
            __mmask16 m = (__mmask16)((1u << (hd - d)) - 1);
            __m512 kv = _mm512_maskz_loadu_ps(m, kr + d);
            for (int h = 0; h < G; h++)
                acc[h] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + (size_t)h * ldq + (size_t)d), kv, acc[h]);
        }
        for (int h = 0; h < G; h++)
            s[(size_t)h * lds + j] = _mm512_reduce_add_ps(acc[h]) * scale;
    }
}

INLINE T512 void values512(const float *p, size_t ldp, int G, int hd, const float *v, size_t kv_dim, size_t nk,
                           float *o)
{
    for (int d = 0; d < hd; d += 16) {
        __mmask16 m = hd - d >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (hd - d)) - 1);
        __m512 acc[8];
        for (int h = 0; h < G; h++)
            acc[h] = _mm512_maskz_loadu_ps(m, o + (size_t)h * (size_t)hd + (size_t)d);
        for (size_t j = 0; j < nk; j++) {
            __m512 vv = _mm512_maskz_loadu_ps(m, v + j * kv_dim + (size_t)d);
            for (int h = 0; h < G; h++)
                acc[h] = _mm512_fmadd_ps(_mm512_set1_ps(p[(size_t)h * ldp + j]), vv, acc[h]);
        }
        for (int h = 0; h < G; h++)
            _mm512_mask_storeu_ps(o + (size_t)h * (size_t)hd + (size_t)d, m, acc[h]);
    }
}

#define DISPATCH(fn, G, ...)                                                                                        \
    switch (G) {                                                                                                    \
    case 1: fn(__VA_ARGS__, 1); break;                                                                              \
    case 2: fn(__VA_ARGS__, 2); break;                                                                              \
    case 3: fn(__VA_ARGS__, 3); break;                                                                              \
    case 4: fn(__VA_ARGS__, 4); break;                                                                              \
    case 5: fn(__VA_ARGS__, 5); break;                                                                              \
    case 6: fn(__VA_ARGS__, 6); break;                                                                              \
    case 7: fn(__VA_ARGS__, 7); break;                                                                              \
    default: fn(__VA_ARGS__, 8); break;                                                                             \
    }

#define S512(q, ldq, hd, k, kv_dim, nk, scale, s, lds, G) scores512(q, ldq, G, hd, k, kv_dim, nk, scale, s, lds)
#define V512(p, ldp, hd, v, kv_dim, nk, o, G) values512(p, ldp, G, hd, v, kv_dim, nk, o)

T512 static void scores_avx512(const float *q, size_t ldq, int g, int hd, const float *k, size_t kv_dim, size_t nk,
                               float scale, float *s, size_t lds)
{
    for (int h0 = 0; h0 < g; h0 += 8)
        DISPATCH(S512, g - h0, q + (size_t)h0 * ldq, ldq, hd, k, kv_dim, nk, scale, s + (size_t)h0 * lds, lds)
}

T512 static void values_avx512(const float *p, size_t ldp, int g, int hd, const float *v, size_t kv_dim, size_t nk,
                               float *o)
{
    for (int h0 = 0; h0 < g; h0 += 8)
        DISPATCH(V512, g - h0, p + (size_t)h0 * ldp, ldp, hd, v, kv_dim, nk, o + (size_t)h0 * (size_t)hd)
}

/* ---- AVX2 ---- */

INLINE T256 float hsum256(__m256 x)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

INLINE T256 void scores256(const float *q, size_t ldq, int G, int hd, const float *k, size_t kv_dim, size_t nk,
                           float scale, float *s, size_t lds)
{
    int d8 = hd & ~7;
    for (size_t j = 0; j < nk; j++) {
        const float *kr = k + j * kv_dim;
        __m256 acc[8];
        for (int h = 0; h < G; h++)
            acc[h] = _mm256_setzero_ps();
        for (int d = 0; d < d8; d += 8) {
            __m256 kv = _mm256_loadu_ps(kr + d);
            for (int h = 0; h < G; h++)
                acc[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)h * ldq + (size_t)d), kv, acc[h]);
        }
        for (int h = 0; h < G; h++) {
            float t = hsum256(acc[h]);
            for (int d = d8; d < hd; d++)
                t += q[(size_t)h * ldq + (size_t)d] * kr[d];
            s[(size_t)h * lds + j] = t * scale;
        }
    }
}

INLINE T256 void values256(const float *p, size_t ldp, int G, int hd, const float *v, size_t kv_dim, size_t nk,
                           float *o)
{
    int d8 = hd & ~7;
    for (int d = 0; d < d8; d += 8) {
        __m256 acc[8];
        for (int h = 0; h < G; h++)
            acc[h] = _mm256_loadu_ps(o + (size_t)h * (size_t)hd + (size_t)d);
        for (size_t j = 0; j < nk; j++) {
            __m256 vv = _mm256_loadu_ps(v + j * kv_dim + (size_t)d);
            for (int h = 0; h < G; h++)
                acc[h] = _mm256_fmadd_ps(_mm256_set1_ps(p[(size_t)h * ldp + j]), vv, acc[h]);
        }
        for (int h = 0; h < G; h++)
            _mm256_storeu_ps(o + (size_t)h * (size_t)hd + (size_t)d, acc[h]);
    }
    for (int h = 0; h < G; h++)
        for (int d = d8; d < hd; d++)
            for (size_t j = 0; j < nk; j++)
                o[(size_t)h * (size_t)hd + (size_t)d] += p[(size_t)h * ldp + j] * v[j * kv_dim + (size_t)d];
}

#define S256(q, ldq, hd, k, kv_dim, nk, scale, s, lds, G) scores256(q, ldq, G, hd, k, kv_dim, nk, scale, s, lds)
#define V256(p, ldp, hd, v, kv_dim, nk, o, G) values256(p, ldp, G, hd, v, kv_dim, nk, o)

T256 static void scores_avx2(const float *q, size_t ldq, int g, int hd, const float *k, size_t kv_dim, size_t nk,
                             float scale, float *s, size_t lds)
{
    for (int h0 = 0; h0 < g; h0 += 8)
        DISPATCH(S256, g - h0, q + (size_t)h0 * ldq, ldq, hd, k, kv_dim, nk, scale, s + (size_t)h0 * lds, lds)
}

T256 static void values_avx2(const float *p, size_t ldp, int g, int hd, const float *v, size_t kv_dim, size_t nk,
                             float *o)
{
    for (int h0 = 0; h0 < g; h0 += 8)
        DISPATCH(V256, g - h0, p + (size_t)h0 * ldp, ldp, hd, v, kv_dim, nk, o + (size_t)h0 * (size_t)hd)
}

/* ---- plain C ---- */

static void scores_c(const float *q, size_t ldq, int g, int hd, const float *k, size_t kv_dim, size_t nk, float scale,
                     float *s, size_t lds)
{
    for (size_t j = 0; j < nk; j++)
        for (int h = 0; h < g; h++) {
            float acc = 0;
            for (int d = 0; d < hd; d++)
                acc += q[(size_t)h * ldq + (size_t)d] * k[j * kv_dim + (size_t)d];
            s[(size_t)h * lds + j] = acc * scale;
        }
}

static void values_c(const float *p, size_t ldp, int g, int hd, const float *v, size_t kv_dim, size_t nk, float *o)
{
    for (size_t j = 0; j < nk; j++)
        for (int h = 0; h < g; h++)
            for (int d = 0; d < hd; d++)
                o[(size_t)h * (size_t)hd + (size_t)d] += p[(size_t)h * ldp + j] * v[j * kv_dim + (size_t)d];
}

/* The variant for this CPU's tier capped by PALIFLOW_MAX_ISA (base/simd.h); decode keeps the pointers for the
 * pages of a whole step. */
PF_SIMD_VARIANTS(static, void, attn_scores,
                 (const float *q, size_t ldq, int g, int hd, const float *k, size_t kv_dim, size_t nk, float scale,
                  float *s, size_t lds),
                 (q, ldq, g, hd, k, kv_dim, nk, scale, s, lds), scores_c, scores_avx2, scores_avx512)
PF_SIMD_VARIANTS(static, void, attn_values,
                 (const float *p, size_t ldp, int g, int hd, const float *v, size_t kv_dim, size_t nk, float *o),
                 (p, ldp, g, hd, v, kv_dim, nk, o), values_c, values_avx2, values_avx512)

void pf_eng_attn_kernels(pf_eng_scores_fn *scores, pf_eng_values_fn *values)
{
    *scores = PF_SIMD_PICK(attn_scores);
    *values = PF_SIMD_PICK(attn_values);
}
