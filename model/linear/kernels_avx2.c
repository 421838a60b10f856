/* kernels_avx2.c - AVX2 + FMA (optionally AVX-VNNI) versions of the kernels in kernels.h.
 *
 * 16 ymm registers: tile of 4 weight rows x up to 2 activation rows = 8 accumulators, 4 weight vectors
 * and one activation vector. The k tail (k % 8, or % 32 for int8) is finished in scalar code. */
#include <immintrin.h>
#include <string.h>

#include "base/simd.h"
#include "model/linear/kernels.h"
#include "model/math/dtype.h"

#define T2 PF_SIMD_TARGET_AVX2
#define T2V __attribute__((target(PF_SIMD_ISA_AVX2 ",avxvnni")))
#define INLINE static inline __attribute__((always_inline))

INLINE T2 void store(const pf_gemv *g, int64_t m, int64_t n, float v)
{
    if (g->bias)
        v += g->bias[n];
    float *y = &g->y[m * g->ldy + n];
    *y = g->accumulate ? *y + v : v;
}

INLINE T2 float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE T2 int32_t hsum_i(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

INLINE T2 __m256 ld_f32(const void *w, int64_t k)
{
    return _mm256_loadu_ps((const float *)w + k);
}
INLINE T2 __m256 ld_bf16(const void *w, int64_t k)
{
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + k));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
INLINE T2 __m256 ld_s8(const void *w, int64_t k)
{
    __m128i b = _mm_loadl_epi64((const __m128i *)((const int8_t *)w + k));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}
INLINE float sc_f32(const void *w, int64_t k)
{
    return ((const float *)w)[k];
}
INLINE float sc_bf16(const void *w, int64_t k)
{
    uint32_t u = (uint32_t)((const uint16_t *)w)[k] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
INLINE float sc_s8(const void *w, int64_t k)
{
    return (float)((const int8_t *)w)[k];
}

#define FMA_ROW(i, xv)                                                                                         \
    do {                                                                                                       \
        a##i##0 = _mm256_fmadd_ps(v0, xv, a##i##0);                                                            \
        a##i##1 = _mm256_fmadd_ps(v1, xv, a##i##1);                                                            \
        a##i##2 = _mm256_fmadd_ps(v2, xv, a##i##2);                                                            \
        a##i##3 = _mm256_fmadd_ps(v3, xv, a##i##3);                                                            \
    } while (0)

#define OUT_ROW(i, SC)                                                                                         \
    do {                                                                                                       \
        if (MB > i) {                                                                                          \
            __m256 acc[4] = {a##i##0, a##i##1, a##i##2, a##i##3};                                              \
            const void *wr[4] = {w0, w1, w2, w3};                                                              \
            for (int r = 0; r < R; r++) {                                                                      \
                float s = hsum(acc[r]);                                                                        \
                for (int64_t k = kv; k < K; k++)                                                               \
                    s += x##i[k] * SC(wr[r], k);                                                               \
                store(g, m0 + i, n + r, s * SCALE(n + r));                                                     \
            }                                                                                                  \
        }                                                                                                      \
    } while (0)

#define DEF_TILE(NAME, ESZ, LD, SC, SCALE)                                                                     \
    INLINE T2 void NAME(const pf_gemv *g, int64_t n, int R, int64_t m0, const int MB)                          \
    {                                                                                                          \
        const int64_t K = g->k, kv = K & ~(int64_t)7;                                                          \
        const char *W = (const char *)g->w;                                                                    \
        const void *w0 = W + n * K * ESZ, *w1 = W + (n + (R > 1)) * K * ESZ;                                   \
        const void *w2 = W + (n + (R > 2) * 2) * K * ESZ, *w3 = W + (n + (R > 3) * 3) * K * ESZ;               \
        const float *x0 = g->x + m0 * g->ldx, *x1 = x0 + (MB > 1) * g->ldx;                                    \
        __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;                                     \
        __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00;                                                     \
        int64_t k0 = 0;                                                                                        \
        if (MB == 1) { /* one activation row: second accumulator set on odd steps hides FMA latency */         \
            for (; k0 + 16 <= kv; k0 += 16) {                                                                  \
                __m256 v0 = LD(w0, k0), v1 = LD(w1, k0), v2 = LD(w2, k0), v3 = LD(w3, k0);                     \
                FMA_ROW(0, _mm256_loadu_ps(x0 + k0));                                                          \
                v0 = LD(w0, k0 + 8), v1 = LD(w1, k0 + 8), v2 = LD(w2, k0 + 8), v3 = LD(w3, k0 + 8);             \
                FMA_ROW(1, _mm256_loadu_ps(x0 + k0 + 8));                                                      \
            }                                                                                                  \
        }                                                                                                      \
        for (int64_t k = k0; k < kv; k += 8) {                                                                 \
            __m256 v0 = LD(w0, k), v1 = LD(w1, k), v2 = LD(w2, k), v3 = LD(w3, k);                             \
            FMA_ROW(0, _mm256_loadu_ps(x0 + k));                                                               \
            if (MB > 1)                                                                                        \
                FMA_ROW(1, _mm256_loadu_ps(x1 + k));                                                           \
        }                                                                                                      \
        if (MB == 1) {                                                                                         \
            a00 = _mm256_add_ps(a00, a10), a01 = _mm256_add_ps(a01, a11);                                      \
            a02 = _mm256_add_ps(a02, a12), a03 = _mm256_add_ps(a03, a13);                                      \
        }                                                                                                      \
        OUT_ROW(0, SC);                                                                                        \
        OUT_ROW(1, SC);                                                                                        \
    }

#define DEF_GEMV(NAME, TILE, ATTR)                                                                             \
    static ATTR void NAME(const pf_gemv *g, int64_t n0, int64_t n1)                                            \
    {                                                                                                          \
        for (int64_t n = n0; n < n1; n += 4) {                                                                 \
            int R = n1 - n < 4 ? (int)(n1 - n) : 4;                                                            \
            int64_t m0 = 0;                                                                                    \
            for (; m0 + 2 <= g->m; m0 += 2)                                                                    \
                TILE(g, n, R, m0, 2);                                                                          \
            if (m0 < g->m)                                                                                     \
                TILE(g, n, R, m0, 1);                                                                          \
        }                                                                                                      \
    }

#define SCALE(n) 1.0f
DEF_TILE(tile_f32, 4, ld_f32, sc_f32, SCALE)
DEF_TILE(tile_bf16, 2, ld_bf16, sc_bf16, SCALE)
#undef SCALE
#define SCALE(n) g->wscale[n]
DEF_TILE(tile_s8, 1, ld_s8, sc_s8, SCALE)
#undef SCALE

DEF_GEMV(gemv_f32, tile_f32, T2)
DEF_GEMV(gemv_bf16, tile_bf16, T2)
DEF_GEMV(gemv_s8, tile_s8, T2)

/* ---- dynamic int8, 32 bytes per step ---- */

INLINE T2V __m256i dot_vnni(__m256i acc, __m256i x, __m256i w)
{
    return _mm256_dpbusd_avx_epi32(acc, x, w);
}
/* Without VNNI, vpmaddubsw sums pairs of u8*s8 into saturating s16: 2 * 255 * 127 would overflow. So the
 * activations go in as |q| (<= 127) with their sign moved onto the weights: 2 * 127 * 127 < 32767, exact for
 * the full s8 weight range. This sums q * w (no +128 offset): see XOFF below. */
INLINE T2 __m256i dot_sign(__m256i acc, __m256i x, __m256i w)
{
    __m256i q = _mm256_xor_si256(x, _mm256_set1_epi8((char)0x80)); /* u8 q + 128 -> s8 q */
    __m256i t = _mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(w, q));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(t, _mm256_set1_epi16(1)));
}

#define DOT_ROW(DOT, i, xv)                                                                                    \
    do {                                                                                                       \
        a##i##0 = DOT(a##i##0, xv, v0);                                                                        \
        a##i##1 = DOT(a##i##1, xv, v1);                                                                        \
        a##i##2 = DOT(a##i##2, xv, v2);                                                                        \
        a##i##3 = DOT(a##i##3, xv, v3);                                                                        \
    } while (0)

#define OUT_ROW_I(i)                                                                                           \
    do {                                                                                                       \
        if (MB > i) {                                                                                          \
            __m256i acc[4] = {a##i##0, a##i##1, a##i##2, a##i##3};                                             \
            const int8_t *wr[4] = {w0, w1, w2, w3};                                                            \
            for (int r = 0; r < R; r++) {                                                                      \
                int32_t s = hsum_i(acc[r]);                                                                    \
                for (int64_t k = kv; k < K; k++)                                                               \
                    s += ((int32_t)x##i[k] - XOFF) * wr[r][k];                                                 \
                s -= (128 - XOFF) * g->wsum[n + r];                                                            \
                store(g, m0 + i, n + r, (float)s * g->xscale[m0 + i] * g->wscale[n + r]);                      \
            }                                                                                                  \
        }                                                                                                      \
    } while (0)

/* XOFF: what the DOT sums are offset by: 0 when they sum (q + 128) * w (VNNI: corrected by 128 * wsum at the
 * end), 128 when they sum q * w (dot_sign). */
#define DEF_TILE_I(NAME, DOT, ATTR, XOFF_)                                                                     \
    INLINE ATTR void NAME(const pf_gemv *g, int64_t n, int R, int64_t m0, const int MB)                        \
    {                                                                                                          \
        const int XOFF = XOFF_;                                                                                \
        const int64_t K = g->k, kv = K & ~(int64_t)31;                                                         \
        const int8_t *W = g->w;                                                                                \
        const int8_t *w0 = W + n * K, *w1 = W + (n + (R > 1)) * K, *w2 = W + (n + (R > 2) * 2) * K;            \
        const int8_t *w3 = W + (n + (R > 3) * 3) * K;                                                          \
        const uint8_t *x0 = g->xq + m0 * K, *x1 = x0 + (MB > 1) * K;                                           \
        __m256i a00 = _mm256_setzero_si256(), a01 = a00, a02 = a00, a03 = a00;                                 \
        __m256i a10 = a00, a11 = a00, a12 = a00, a13 = a00;                                                    \
        int64_t k0 = 0;                                                                                        \
        if (MB == 1) { /* second accumulator set on odd steps, as in DEF_TILE */                               \
            for (; k0 + 64 <= kv; k0 += 64) {                                                                  \
                __m256i v0 = _mm256_loadu_si256((const __m256i *)(w0 + k0));                                   \
                __m256i v1 = _mm256_loadu_si256((const __m256i *)(w1 + k0));                                   \
                __m256i v2 = _mm256_loadu_si256((const __m256i *)(w2 + k0));                                   \
                __m256i v3 = _mm256_loadu_si256((const __m256i *)(w3 + k0));                                   \
                DOT_ROW(DOT, 0, _mm256_loadu_si256((const __m256i *)(x0 + k0)));                               \
                v0 = _mm256_loadu_si256((const __m256i *)(w0 + k0 + 32));                                      \
                v1 = _mm256_loadu_si256((const __m256i *)(w1 + k0 + 32));                                      \
                v2 = _mm256_loadu_si256((const __m256i *)(w2 + k0 + 32));                                      \
                v3 = _mm256_loadu_si256((const __m256i *)(w3 + k0 + 32));                                      \
                DOT_ROW(DOT, 1, _mm256_loadu_si256((const __m256i *)(x0 + k0 + 32)));                          \
            }                                                                                                  \
        }                                                                                                      \
        for (int64_t k = k0; k < kv; k += 32) {                                                                \
            __m256i v0 = _mm256_loadu_si256((const __m256i *)(w0 + k));                                        \
            __m256i v1 = _mm256_loadu_si256((const __m256i *)(w1 + k));                                        \
            __m256i v2 = _mm256_loadu_si256((const __m256i *)(w2 + k));                                        \
            __m256i v3 = _mm256_loadu_si256((const __m256i *)(w3 + k));                                        \
            DOT_ROW(DOT, 0, _mm256_loadu_si256((const __m256i *)(x0 + k)));                                    \
            if (MB > 1)                                                                                        \
                DOT_ROW(DOT, 1, _mm256_loadu_si256((const __m256i *)(x1 + k)));                                \
        }                                                                                                      \
        if (MB == 1) {                                                                                         \
            a00 = _mm256_add_epi32(a00, a10), a01 = _mm256_add_epi32(a01, a11);                                \
            a02 = _mm256_add_epi32(a02, a12), a03 = _mm256_add_epi32(a03, a13);                                \
        }                                                                                                      \
        OUT_ROW_I(0);                                                                                          \
        OUT_ROW_I(1);                                                                                          \
    }

DEF_TILE_I(tile_u8s8_vnni, dot_vnni, T2V, 0)
DEF_TILE_I(tile_u8s8_sign, dot_sign, T2, 128)
DEF_GEMV(gemv_u8s8_vnni, tile_u8s8_vnni, T2V)
DEF_GEMV(gemv_u8s8_sign, tile_u8s8_sign, T2)

/* ---- conversions ---- */

static T2 void to_bf16(const float *x, uint16_t *dst, size_t n)
{
    const __m256i lsb = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
    const __m256i absm = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i qnan = _mm256_set1_epi32(0x40);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i r[2];
        for (int h = 0; h < 2; h++) {
            __m256i u = _mm256_loadu_si256((const __m256i *)(x + i + 8 * h));
            __m256i hi = _mm256_srli_epi32(u, 16);
            __m256i rr = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(hi, lsb))), 16);
            __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absm), inf);
            r[h] = _mm256_blendv_epi8(rr, _mm256_or_si256(hi, qnan), nan);
        }
        /* packus on 32-bit lanes holding 16-bit values: exact (all in [0, 65535]); fix the lane order */
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), 0xd8);
        _mm256_storeu_si256((__m256i *)(dst + i), p);
    }
    for (; i < n; i++)
        dst[i] = pf_f32_to_bf16(x[i]);
}

static T2 void quant_rows(const float *x, int64_t ldx, int64_t m, int64_t k, uint8_t *dst, float *scale, int offset,
                          int qmax)
{
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i lo = _mm256_set1_epi32(-qmax), hi = _mm256_set1_epi32(qmax);
    const float qm = (float)qmax;
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i flip = _mm256_set1_epi8((char)(offset ? 0x80 : 0)); /* s8 -> u8 (+128) by flipping the sign bit */
    for (int64_t i = 0; i < m; i++) {
        const float *r = x + i * ldx;
        __m256 vmax = _mm256_setzero_ps();
        int64_t j = 0;
        for (; j + 8 <= k; j += 8)
            vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(r + j), absm));
        float lanes[8], amax = 0.0f;
        _mm256_storeu_ps(lanes, vmax);
        for (int l = 0; l < 8; l++)
            amax = lanes[l] > amax ? lanes[l] : amax;
        for (; j < k; j++) {
            float a = r[j] < 0 ? -r[j] : r[j];
            amax = a > amax ? a : amax;
        }
        float s = amax > 0.0f ? amax / qm : 1.0f, inv = amax > 0.0f ? qm / amax : 1.0f;
        scale[i] = s;
        const __m256 vinv = _mm256_set1_ps(inv);
        uint8_t *d = dst + i * k;
        for (j = 0; j + 32 <= k; j += 32) {
            __m256i q[4];
            for (int v = 0; v < 4; v++) {
                q[v] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(r + j + 8 * v), vinv));
                q[v] = _mm256_min_epi32(_mm256_max_epi32(q[v], lo), hi);
            }
            __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            b = _mm256_xor_si256(_mm256_permutevar8x32_epi32(b, perm), flip);
            _mm256_storeu_si256((__m256i *)(d + j), b);
        }
        for (; j < k; j++) {
            float q = __builtin_nearbyintf(r[j] * inv);
            q = q > qm ? qm : q < -qm ? -qm : q == q ? q : 0.0f; /* NaN -> 0 */
            d[j] = (uint8_t)((int)q + offset);
        }
    }
}

void pf_kernels_avx2_init(pf_kernels *kt, bool avx_vnni)
{
    kt->name = avx_vnni ? "avx2-vnni" : "avx2";
    kt->tier = PF_TIER_AVX2;
    kt->vnni = avx_vnni; /* full-range s8 weights are exact either way (dot_sign without VNNI) */
    kt->f32 = gemv_f32;
    kt->bf16 = gemv_bf16;
    kt->s8 = gemv_s8;
    kt->u8s8 = avx_vnni ? gemv_u8s8_vnni : gemv_u8s8_sign;
    kt->to_bf16 = to_bf16;
    kt->quant_rows = quant_rows;
}
