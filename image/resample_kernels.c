/* resample_kernels.c - the vectorised inner loops of the resampler.
 *
 * Exactness: Pillow sums u8 * int32 coefficients in int32 (no overflow is possible: the coefficients of
 * one output sum in absolute value to < 1.3 * 2^22, checked in tests/image/test_resample.c). Integer sums
 * do not depend on order, so any vectorisation gives Pillow's bits.
 *
 * The loops use GCC/clang generic vectors (16 x int32 accumulators kept in registers) rather than
 * ISA-specific intrinsics: the compiler lowers them to SSE2, AVX2 or AVX-512. Each kernel is compiled once
 * per SIMD tier and the variant for the CPU (capped by PALIFLOW_MAX_ISA) is chosen at run time by
 * base/simd.h, never assumed.
 */
#include "image/resample_kernels.h"

#include <string.h>

#include "base/simd.h"

#define PF_RS_BIAS (1 << (PF_RS_PRECISION_BITS - 1))

typedef uint8_t v16u8 __attribute__((vector_size(16)));
typedef uint16_t v16u16 __attribute__((vector_size(32)));
typedef int32_t v16i32 __attribute__((vector_size(64)));

/* 16 x u16 -> 16 x int32 */
static inline __attribute__((always_inline)) v16i32 load16w(const uint16_t *p)
{
    v16u16 b;
    memcpy(&b, p, sizeof b);
    return __builtin_convertvector(b, v16i32);
}

/* clip8 on 16 lanes, narrowed to bytes */
static inline __attribute__((always_inline)) v16u8 clip16(v16i32 acc)
{
    v16i32 v = acc >> PF_RS_PRECISION_BITS;
    v &= ~(v < 0);           /* negative -> 0 (comparisons give -1 / 0 lanes) */
    v16i32 over = v > 255;
    v = (v & ~over) | (255 & over);
    return __builtin_convertvector(v, v16u8);
}

static inline uint64_t rgb_at(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4); /* the staged rows are padded: the 4th byte is always readable */
    return v & 0xffffff;
}

/* Spread 3 bytes into 3 u16 lanes: 0x00BBGGRR -> 0x0000_00BB_00GG_00RR. */
static inline uint64_t spread3(uint64_t v)
{
    return (v & 0xff) | (v & 0xff00) << 8 | (v & 0xff0000) << 16;
}

/* Pixels [x0, in_w) of the block, one pixel at a time. */
static void pack_scalar(uint16_t *restrict block, size_t x0, int in_w, const uint8_t *const *rows)
{
    const uint8_t *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3], *r4 = rows[4];
    for (size_t x = x0; x < (size_t)in_w; x++) {
        uint64_t a = spread3(rgb_at(r0 + 3 * x)), b = spread3(rgb_at(r1 + 3 * x));
        uint64_t c = spread3(rgb_at(r2 + 3 * x)), d = spread3(rgb_at(r3 + 3 * x));
        uint64_t e = spread3(rgb_at(r4 + 3 * x));
        /* lanes: a0 a1 a2 b0 | b1 b2 c0 c1 | c2 d0 d1 d2 | e0 e1 e2 pad */
        uint64_t w0 = a | b << 48, w1 = b >> 16 | c << 32, w2 = c >> 32 | d << 16;
        uint16_t *o = block + x * PF_RS_LANES; /* four 8-byte stores: no store-to-load forwarding stall */
        memcpy(o, &w0, 8);
        memcpy(o + 4, &w1, 8);
        memcpy(o + 8, &w2, 8);
        memcpy(o + 12, &e, 8);
    }
}

/* All the block's pixels (the AVX2 tier has no hand-written packer: the same code compiled for AVX2). */
static inline __attribute__((always_inline)) void pack_all(uint16_t *restrict block, int in_w,
                                                           const uint8_t *const *rows)
{
    pack_scalar(block, 0, in_w, rows);
}

#if PF_SIMD_MULTI
#include <immintrin.h>
#include <pthread.h>

/* AVX-512BW: four pixels per step. Each row's 16 bytes at 3x (pixels x..x+3 and a bit more) are widened to
 * 16-bit lanes, rows 0+1 into one register, 2+3 into a second, 4 into a third (upper half zero); two
 * two-register word permutes per pair of pixels then pick lane 3r + c of pixel j from row r's element
 * 3j + c, the pad lane from the zero half. Large reductions (3000 px -> 224) spend more time packing than
 * filtering, so this matters there; the result is the same bits as pack_scalar (tests/image). */
#define T512BW PF_SIMD_TARGET_AVX512

/* Permute indices for the pixel pair (j0, j0 + 1): `ab` picks rows 0-3 from (rows 0+1, rows 2+3), `e`
 * keeps those lanes and fills row 4 and the pad lane from (row 4, zeros). */
static void pack_indices(int j0, uint16_t ab[32], uint16_t e[32])
{
    for (int L = 0; L < 32; L++) {
        int j = j0 + L / 16, l = L % 16, r = l / 3, c = l % 3;
        ab[L] = (uint16_t)(r < 4 ? 16 * r + 3 * j + c : 0);
        e[L] = (uint16_t)(l == 15 ? 32 + 16 : r == 4 ? 32 + 3 * j + c : L);
    }
}

T512BW static __m512i widen_rows(const uint8_t *a, const uint8_t *b)
{
    __m256i t = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)a)),
                                        _mm_loadu_si128((const __m128i *)b), 1);
    return _mm512_cvtepu8_epi16(t);
}

static uint16_t g_pack_idx[4][32]; /* ab01, e01, ab23, e23: made once */
static pthread_once_t g_pack_once = PTHREAD_ONCE_INIT;

static void make_pack_indices(void)
{
    pack_indices(0, g_pack_idx[0], g_pack_idx[1]);
    pack_indices(2, g_pack_idx[2], g_pack_idx[3]);
}

T512BW static void pack_avx512(uint16_t *restrict block, int in_w, const uint8_t *const *rows)
{
    pthread_once(&g_pack_once, make_pack_indices);
    const __m512i iab01 = _mm512_loadu_si512(g_pack_idx[0]), ie01 = _mm512_loadu_si512(g_pack_idx[1]);
    const __m512i iab23 = _mm512_loadu_si512(g_pack_idx[2]), ie23 = _mm512_loadu_si512(g_pack_idx[3]);
    size_t x = 0;
    /* 16-byte loads at 3x: rows are readable for 3 * in_w + 1 bytes, so 3x + 16 <= 3 * in_w + 1 */
    for (; 3 * x + 16 <= 3 * (size_t)in_w + 1; x += 4) {
        size_t o = 3 * x;
        __m512i r01 = widen_rows(rows[0] + o, rows[1] + o), r23 = widen_rows(rows[2] + o, rows[3] + o);
        __m512i r4 = _mm512_cvtepu8_epi16(_mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(rows[4] + o))));
        __m512i p01 = _mm512_permutex2var_epi16(_mm512_permutex2var_epi16(r01, iab01, r23), ie01, r4);
        __m512i p23 = _mm512_permutex2var_epi16(_mm512_permutex2var_epi16(r01, iab23, r23), ie23, r4);
        _mm512_storeu_si512(block + x * PF_RS_LANES, p01);
        _mm512_storeu_si512(block + (x + 2) * PF_RS_LANES, p23);
    }
    pack_scalar(block, x, in_w, rows);
}
#endif

PF_SIMD_VARIANTS(extern, void, pf_rs_block_pack, (uint16_t *restrict block, int in_w, const uint8_t *const *rows),
                 (block, in_w, rows), pack_all, pack_all, pack_avx512)

PF_SIMD_CLONES(extern, void, pf_rs_kernel_hblock,
               (const pf_rs_axis *ax, const uint16_t *restrict block, int nrows, uint8_t *const *dst,
                uint16_t *const *dst16),
               (ax, block, nrows, dst, dst16))
{
    const int *bounds = ax->bounds;
    const int kstride = ax->kstride;
    const v16i32 bias = (v16i32){0} + PF_RS_BIAS;
    for (int xx = 0; xx < ax->out_size; xx++) {
        const int32_t *restrict k = ax->k + (size_t)xx * (size_t)kstride;
        const uint16_t *restrict p = block + (size_t)bounds[2 * xx] * PF_RS_LANES;
        int n = bounds[2 * xx + 1];
        v16i32 acc0 = bias, acc1 = (v16i32){0};
        int t = 0;
        for (; t + 1 < n; t += 2) { /* two chains hide the multiply latency */
            acc0 += load16w(p + (size_t)t * PF_RS_LANES) * k[t];
            acc1 += load16w(p + (size_t)(t + 1) * PF_RS_LANES) * k[t + 1];
        }
        if (t < n)
            acc0 += load16w(p + (size_t)t * PF_RS_LANES) * k[t];
        v16u8 o = clip16(acc0 + acc1);
        uint8_t lanes[PF_RS_LANES];
        memcpy(lanes, &o, sizeof lanes);
        if (dst16) {
            for (int r = 0; r < nrows; r++) {
                uint16_t *d = dst16[r] + 3 * (size_t)xx;
                d[0] = lanes[3 * r];
                d[1] = lanes[3 * r + 1];
                d[2] = lanes[3 * r + 2];
            }
        } else {
            for (int r = 0; r < nrows; r++)
                memcpy(dst[r] + 3 * (size_t)xx, lanes + 3 * r, 3);
        }
    }
}

PF_SIMD_CLONES(extern, void, pf_rs_kernel_vgather,
               (const uint16_t *const *rows, const int32_t *k, int n, size_t len, uint8_t *restrict out),
               (rows, k, n, len, out))
{
    const v16i32 bias = (v16i32){0} + PF_RS_BIAS;
    for (size_t i = 0; i < len; i += 64) {
        v16i32 a0 = bias, a1 = bias, a2 = bias, a3 = bias;
        for (int t = 0; t < n; t++) {
            const uint16_t *r = rows[t] + i;
            int32_t kt = k[t];
            a0 += load16w(r) * kt;
            a1 += load16w(r + 16) * kt;
            a2 += load16w(r + 32) * kt;
            a3 += load16w(r + 48) * kt;
        }
        v16u8 o[4] = {clip16(a0), clip16(a1), clip16(a2), clip16(a3)};
        size_t m = len - i < 64 ? len - i : 64; /* rows are padded to 64; the output is not */
        memcpy(out + i, o, m);
    }
}

PF_SIMD_CLONES(extern, void, pf_rs_widen_row, (const uint8_t *restrict src, size_t n, uint16_t *restrict dst),
               (src, n, dst))
{
    for (size_t i = 0; i < n; i++)
        dst[i] = src[i];
}

PF_SIMD_CLONES(extern, void, pf_rs_kernel_accumulate,
               (int32_t *restrict acc, const uint8_t *restrict h, int32_t k, size_t n), (acc, h, k, n))
{
    for (size_t i = 0; i < n; i++)
        acc[i] += h[i] * k;
}
