/* kernels_avx512.c - AVX-512 (F/BW/VL/DQ, optionally VNNI) versions of the kernels in kernels.h.
 *
 * Tile: 4 weight rows x up to 4 activation rows = 16 zmm accumulators, lanes over k, reduced at the end.
 * Each 16-wide weight vector is loaded (and widened to f32) once and used by every activation row of the
 * tile. The m-group count is a compile-time constant inside each tile (always_inline + constant argument),
 * so no accumulator lives in memory. */
#include <immintrin.h>
#include <string.h>

#include "base/simd.h"
#include "model/linear/kernels.h"
#include "model/math/dtype.h"

#define T512 PF_SIMD_TARGET_AVX512
#define T512V __attribute__((target(PF_SIMD_ISA_AVX512 ",avx512vnni")))
#define INLINE static inline __attribute__((always_inline))

INLINE T512 void store(const pf_gemv *g, int64_t m, int64_t n, float v)
{
    if (g->bias)
        v += g->bias[n];
    float *y = &g->y[m * g->ldy + n];
    *y = g->accumulate ? *y + v : v;
}

/* Weight loaders: 16 consecutive weights of row w starting at element k, widened to f32. */
INLINE T512 __m512 ld_f32(const void *w, int64_t k)
{
    return _mm512_loadu_ps((const float *)w + k);
}
INLINE T512 __m512 ldm_f32(const void *w, int64_t k, __mmask16 m)
{
    return _mm512_maskz_loadu_ps(m, (const float *)w + k);
}
INLINE T512 __m512 ld_bf16(const void *w, int64_t k)
{
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
INLINE T512 __m512 ldm_bf16(const void *w, int64_t k, __mmask16 m)
{
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + k);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
INLINE T512 __m512 ld_s8(const void *w, int64_t k)
{
    __m128i b = _mm_loadu_si128((const __m128i *)((const int8_t *)w + k));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
}
INLINE T512 __m512 ldm_s8(const void *w, int64_t k, __mmask16 m)
{
    __m128i b = _mm_maskz_loadu_epi8(m, (const int8_t *)w + k);
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
}

#define FMA_ROW(i, xv)                                                                                         \
    do {                                                                                                       \
        a##i##0 = _mm512_fmadd_ps(v0, xv, a##i##0);                                                            \
        a##i##1 = _mm512_fmadd_ps(v1, xv, a##i##1);                                                            \
        a##i##2 = _mm512_fmadd_ps(v2, xv, a##i##2);                                                            \
        a##i##3 = _mm512_fmadd_ps(v3, xv, a##i##3);                                                            \
    } while (0)

#define OUT_ROW(i)                                                                                             \
    do {                                                                                                       \
        if (MB > i) {                                                                                          \
            __m512 acc[4] = {a##i##0, a##i##1, a##i##2, a##i##3};                                              \
            for (int r = 0; r < R; r++)                                                                        \
                store(g, m0 + i, n + r, _mm512_reduce_add_ps(acc[r]) * SCALE(n + r));                          \
        }                                                                                                      \
    } while (0)

/* One tile: rows n..n+R-1 (R <= 4) of W, activation rows m0..m0+MB-1 (MB constant 1..4). */
#define DEF_TILE(NAME, ESZ, LD, LDM, SCALE)                                                                    \
    INLINE T512 void NAME(const pf_gemv *g, int64_t n, int R, int64_t m0, const int MB)                        \
    {                                                                                                          \
        const int64_t K = g->k, kv = K & ~(int64_t)15;                                                         \
        const __mmask16 tail = (__mmask16)((1u << (K & 15)) - 1);                                              \
        const char *W = (const char *)g->w;                                                                    \
        const void *w0 = W + n * K * ESZ, *w1 = W + (n + (R > 1)) * K * ESZ;                                   \
        const void *w2 = W + (n + (R > 2) * 2) * K * ESZ, *w3 = W + (n + (R > 3) * 3) * K * ESZ;               \
        const float *x0 = g->x + m0 * g->ldx, *x1 = x0 + (MB > 1) * g->ldx;                                    \
        const float *x2 = x0 + (MB > 2) * 2 * g->ldx, *x3 = x0 + (MB > 3) * 3 * g->ldx;                        \
        __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00;    \
        __m512 a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00;         \
        __m512 a33 = a00;                                                                                      \
        int64_t k0 = 0;                                                                                        \
        if (MB == 1) { /* one activation row: a second accumulator set on odd steps hides FMA latency */       \
            for (; k0 + 32 <= kv; k0 += 32) {                                                                  \
                __m512 v0 = LD(w0, k0), v1 = LD(w1, k0), v2 = LD(w2, k0), v3 = LD(w3, k0);                     \
                FMA_ROW(0, _mm512_loadu_ps(x0 + k0));                                                          \
                v0 = LD(w0, k0 + 16), v1 = LD(w1, k0 + 16), v2 = LD(w2, k0 + 16), v3 = LD(w3, k0 + 16);         \
                FMA_ROW(1, _mm512_loadu_ps(x0 + k0 + 16));                                                     \
            }                                                                                                  \
        }                                                                                                      \
        for (int64_t k = k0; k < kv; k += 16) {                                                                \
            __m512 v0 = LD(w0, k), v1 = LD(w1, k), v2 = LD(w2, k), v3 = LD(w3, k);                             \
            FMA_ROW(0, _mm512_loadu_ps(x0 + k));                                                               \
            if (MB > 1)                                                                                        \
                FMA_ROW(1, _mm512_loadu_ps(x1 + k));                                                           \
            if (MB > 2)                                                                                        \
                FMA_ROW(2, _mm512_loadu_ps(x2 + k));                                                           \
            if (MB > 3)                                                                                        \
                FMA_ROW(3, _mm512_loadu_ps(x3 + k));                                                           \
        }                                                                                                      \
        if (kv < K) {                                                                                          \
            int64_t k = kv;                                                                                    \
            __m512 v0 = LDM(w0, k, tail), v1 = LDM(w1, k, tail), v2 = LDM(w2, k, tail), v3 = LDM(w3, k, tail); \
            FMA_ROW(0, _mm512_maskz_loadu_ps(tail, x0 + k));                                                   \
            if (MB > 1)                                                                                        \
                FMA_ROW(1, _mm512_maskz_loadu_ps(tail, x1 + k));                                               \
            if (MB > 2)                                                                                        \
                FMA_ROW(2, _mm512_maskz_loadu_ps(tail, x2 + k));                                               \
            if (MB > 3)                                                                                        \
                FMA_ROW(3, _mm512_maskz_loadu_ps(tail, x3 + k));                                               \
        }                                                                                                      \
        if (MB == 1) {                                                                                         \
            a00 = _mm512_add_ps(a00, a10), a01 = _mm512_add_ps(a01, a11);                                      \
            a02 = _mm512_add_ps(a02, a12), a03 = _mm512_add_ps(a03, a13);                                      \
        }                                                                                                      \
        OUT_ROW(0);                                                                                            \
        OUT_ROW(1);                                                                                            \
        OUT_ROW(2);                                                                                            \
        OUT_ROW(3);                                                                                            \
    }

#define DEF_GEMV(NAME, TILE, ATTR)                                                                             \
    static ATTR void NAME(const pf_gemv *g, int64_t n0, int64_t n1)                                            \
    {                                                                                                          \
        for (int64_t n = n0; n < n1; n += 4) {                                                                 \
            int R = n1 - n < 4 ? (int)(n1 - n) : 4;                                                            \
            int64_t m0 = 0;                                                                                    \
            for (; m0 + 4 <= g->m; m0 += 4)                                                                    \
                TILE(g, n, R, m0, 4);                                                                          \
            switch (g->m - m0) {                                                                               \
            case 3: TILE(g, n, R, m0, 3); break;                                                               \
            case 2: TILE(g, n, R, m0, 2); break;                                                               \
            case 1: TILE(g, n, R, m0, 1); break;                                                               \
            default: break;                                                                                    \
            }                                                                                                  \
        }                                                                                                      \
    }

#define SCALE(n) 1.0f
DEF_TILE(tile_f32, 4, ld_f32, ldm_f32, SCALE)
DEF_TILE(tile_bf16, 2, ld_bf16, ldm_bf16, SCALE)
#undef SCALE
#define SCALE(n) g->wscale[n]
DEF_TILE(tile_s8, 1, ld_s8, ldm_s8, SCALE)
#undef SCALE

DEF_GEMV(gemv_f32, tile_f32, T512)
DEF_GEMV(gemv_bf16, tile_bf16, T512)
DEF_GEMV(gemv_s8, tile_s8, T512)

/* ---- dynamic int8: u8 activations (q + 128) x s8 weights, 64 bytes per step ---- */

INLINE T512V __m512i dot_vnni(__m512i acc, __m512i x, __m512i w)
{
    return _mm512_dpbusd_epi32(acc, x, w);
}
/* Without VNNI: vpmaddubsw sums pairs of u8*s8 into saturating s16, so the activations go in as |q| (<= 127)
 * with their sign moved onto the weights (2 * 127 * 127 < 32767: exact for full-range s8 weights), then pairs
 * of s16 into s32. Sums q * w, not (q + 128) * w: no wsum correction (XOFF 128). Masked-off tail lanes hold
 * x = 0, w = 0 and add nothing. */
INLINE T512 __m512i dot_bw(__m512i acc, __m512i x, __m512i w)
{
    __m512i q = _mm512_xor_si512(x, _mm512_set1_epi8((char)0x80));
    __m512i t = _mm512_maddubs_epi16(_mm512_abs_epi8(q), _mm512_mask_sub_epi8(w, _mm512_movepi8_mask(q),
                                                                                _mm512_setzero_si512(), w));
    return _mm512_add_epi32(acc, _mm512_madd_epi16(t, _mm512_set1_epi16(1)));
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
            __m512i acc[4] = {a##i##0, a##i##1, a##i##2, a##i##3};                                             \
            for (int r = 0; r < R; r++) {                                                                      \
                int32_t s = _mm512_reduce_add_epi32(acc[r]) - (128 - XOFF) * g->wsum[n + r];                   \
                store(g, m0 + i, n + r, (float)s * g->xscale[m0 + i] * g->wscale[n + r]);                      \
            }                                                                                                  \
        }                                                                                                      \
    } while (0)

#define DEF_TILE_I(NAME, DOT, ATTR, XOFF_)                                                                     \
    INLINE ATTR void NAME(const pf_gemv *g, int64_t n, int R, int64_t m0, const int MB)                        \
    {                                                                                                          \
        const int XOFF = XOFF_;                                                                                \
        const int64_t K = g->k, kv = K & ~(int64_t)63;                                                         \
        const __mmask64 tail = (K & 63) ? (((__mmask64)1 << (K & 63)) - 1) : 0;                                \
        const int8_t *W = g->w;                                                                                \
        const int8_t *w0 = W + n * K, *w1 = W + (n + (R > 1)) * K, *w2 = W + (n + (R > 2) * 2) * K;            \
        const int8_t *w3 = W + (n + (R > 3) * 3) * K;                                                          \
        const uint8_t *x0 = g->xq + m0 * K, *x1 = x0 + (MB > 1) * K, *x2 = x0 + (MB > 2) * 2 * K;              \
        const uint8_t *x3 = x0 + (MB > 3) * 3 * K;                                                             \
        __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00;           \
        __m512i a12 = a00, a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00;        \
        __m512i a32 = a00, a33 = a00;                                                                          \
        int64_t k0 = 0;                                                                                        \
        if (MB == 1) { /* second accumulator set on odd steps, as in DEF_TILE */                               \
            for (; k0 + 128 <= kv; k0 += 128) {                                                                \
                __m512i v0 = _mm512_loadu_si512(w0 + k0), v1 = _mm512_loadu_si512(w1 + k0);                    \
                __m512i v2 = _mm512_loadu_si512(w2 + k0), v3 = _mm512_loadu_si512(w3 + k0);                    \
                DOT_ROW(DOT, 0, _mm512_loadu_si512(x0 + k0));                                                  \
                v0 = _mm512_loadu_si512(w0 + k0 + 64), v1 = _mm512_loadu_si512(w1 + k0 + 64);                  \
                v2 = _mm512_loadu_si512(w2 + k0 + 64), v3 = _mm512_loadu_si512(w3 + k0 + 64);                  \
                DOT_ROW(DOT, 1, _mm512_loadu_si512(x0 + k0 + 64));                                             \
            }                                                                                                  \
        }                                                                                                      \
        for (int64_t k = k0; k < kv; k += 64) {                                                                \
            __m512i v0 = _mm512_loadu_si512(w0 + k), v1 = _mm512_loadu_si512(w1 + k);                         \
            __m512i v2 = _mm512_loadu_si512(w2 + k), v3 = _mm512_loadu_si512(w3 + k);                         \
            DOT_ROW(DOT, 0, _mm512_loadu_si512(x0 + k));                                                       \
            if (MB > 1)                                                                                        \
                DOT_ROW(DOT, 1, _mm512_loadu_si512(x1 + k));                                                   \
            if (MB > 2)                                                                                        \
                DOT_ROW(DOT, 2, _mm512_loadu_si512(x2 + k));                                                   \
            if (MB > 3)                                                                                        \
                DOT_ROW(DOT, 3, _mm512_loadu_si512(x3 + k));                                                   \
        }                                                                                                      \
        if (tail) {                                                                                            \
            int64_t k = kv;                                                                                    \
            __m512i v0 = _mm512_maskz_loadu_epi8(tail, w0 + k), v1 = _mm512_maskz_loadu_epi8(tail, w1 + k);    \
            __m512i v2 = _mm512_maskz_loadu_epi8(tail, w2 + k), v3 = _mm512_maskz_loadu_epi8(tail, w3 + k);    \
            DOT_ROW(DOT, 0, _mm512_maskz_loadu_epi8(tail, x0 + k));                                            \
            if (MB > 1)                                                                                        \
                DOT_ROW(DOT, 1, _mm512_maskz_loadu_epi8(tail, x1 + k));                                        \
            if (MB > 2)                                                                                        \
                DOT_ROW(DOT, 2, _mm512_maskz_loadu_epi8(tail, x2 + k));                                        \
            if (MB > 3)                                                                                        \
                DOT_ROW(DOT, 3, _mm512_maskz_loadu_epi8(tail, x3 + k));                                        \
        }                                                                                                      \
        if (MB == 1) {                                                                                         \
            a00 = _mm512_add_epi32(a00, a10), a01 = _mm512_add_epi32(a01, a11);                                \
            a02 = _mm512_add_epi32(a02, a12), a03 = _mm512_add_epi32(a03, a13);                                \
        }                                                                                                      \
        OUT_ROW_I(0);                                                                                          \
        OUT_ROW_I(1);                                                                                          \
        OUT_ROW_I(2);                                                                                          \
        OUT_ROW_I(3);                                                                                          \
    }

DEF_TILE_I(tile_u8s8_vnni, dot_vnni, T512V, 0)
DEF_TILE_I(tile_u8s8_bw, dot_bw, T512, 128)
DEF_GEMV(gemv_u8s8_vnni, tile_u8s8_vnni, T512V)
DEF_GEMV(gemv_u8s8_bw, tile_u8s8_bw, T512)

/* ---- conversions ---- */

/* Same bits as pf_f32_to_bf16: round to nearest even, NaN -> quiet NaN. */
static T512 void to_bf16(const float *x, uint16_t *dst, size_t n)
{
    const __m512i lsb = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
    const __m512i absm = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    const __m512i qnan = _mm512_set1_epi32(0x40);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_loadu_si512(x + i);
        __m512i hi = _mm512_srli_epi32(u, 16);
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, _mm512_and_si512(hi, lsb))), 16);
        __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, absm), inf);
        r = _mm512_mask_or_epi32(r, nan, hi, qnan);
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtepi32_epi16(r));
    }
    for (; i < n; i++)
        dst[i] = pf_f32_to_bf16(x[i]);
}

static T512 void quant_rows(const float *x, int64_t ldx, int64_t m, int64_t k, uint8_t *dst, float *scale,
                            int offset, int qmax)
{
    const __m512i off = _mm512_set1_epi32(offset);
    const __m512i lo = _mm512_set1_epi32(-qmax), hi = _mm512_set1_epi32(qmax);
    const float qm = (float)qmax;
    for (int64_t i = 0; i < m; i++) {
        const float *r = x + i * ldx;
        __m512 vmax = _mm512_setzero_ps();
        int64_t j = 0;
        for (; j + 16 <= k; j += 16)
            vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(r + j)));
        float amax = _mm512_reduce_max_ps(vmax);
        for (; j < k; j++) {
            float a = r[j] < 0 ? -r[j] : r[j];
            amax = a > amax ? a : amax;
        }
        float s = amax > 0.0f ? amax / qm : 1.0f, inv = amax > 0.0f ? qm / amax : 1.0f;
        scale[i] = s;
        const __m512 vinv = _mm512_set1_ps(inv);
        uint8_t *d = dst + i * k;
        for (j = 0; j + 16 <= k; j += 16) {
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(r + j), vinv)); /* round to even */
            q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), off);
            _mm_storeu_si128((__m128i *)(d + j), _mm512_cvtepi32_epi8(q));
        }
        for (; j < k; j++) {
            float q = __builtin_nearbyintf(r[j] * inv);
            q = q > qm ? qm : q < -qm ? -qm : q == q ? q : 0.0f; /* NaN -> 0 */
            d[j] = (uint8_t)((int)q + offset);
        }
    }
}

void pf_kernels_avx512_init(pf_kernels *kt, bool vnni)
{
    kt->name = vnni ? "avx512-vnni" : "avx512";
    kt->tier = PF_TIER_AVX512;
    kt->vnni = vnni;
    kt->f32 = gemv_f32;
    kt->bf16 = gemv_bf16;
    kt->s8 = gemv_s8;
    kt->u8s8 = vnni ? gemv_u8s8_vnni : gemv_u8s8_bw;
    kt->to_bf16 = to_bf16;
    kt->quant_rows = quant_rows;
}
