/* resample_kernels.c - vectorisable inner loops of the resampler.
 *
 * Exactness: Pillow sums u8 * int32 coefficients in int32 (no overflow is possible: the coefficients of
 * one output sum in absolute value to < 1.3 * 2^22). Integer sums do not depend on order, so any
 * vectorisation gives the same bits.
 *
 * The horizontal pass first widens the RGB row to 4 int32 lanes per pixel (RGBX) so each tap is one
 * 128-bit multiply-add for all channels; the compiler vectorises the clean loops. On x86-64, AVX2 and
 * AVX-512 clones are selected at run time (GCC/clang target_clones, resolved by the dynamic loader), never
 * assumed.
 */
#include "workers/resample_kernels.h"

#define PF_RS_BIAS (1 << (PF_RS_PRECISION_BITS - 1))
#define PF_RS_MAX_SCRATCH_PIXELS (1 << 22) /* 64 MB of scratch at most; wider rows take the scalar path */

#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones) && !defined(PF_NO_CLONES)
#define PF_CLONES __attribute__((target_clones("default", "avx2", "avx512f")))
#endif
#endif
#ifndef PF_CLONES
#define PF_CLONES
#endif

static inline uint8_t clip8(int32_t ss)
{
    int32_t v = ss >> PF_RS_PRECISION_BITS;
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

size_t pf_rs_kernel_scratch_size(const pf_rs_axis *ax)
{
    if (!ax->k || ax->in_size > PF_RS_MAX_SCRATCH_PIXELS)
        return 0;
    return (size_t)ax->in_size * 4 * sizeof(int32_t);
}

PF_CLONES
void pf_rs_kernel_horizontal(const pf_rs_axis *ax, const uint8_t *restrict in, uint8_t *restrict out,
                             void *scratch)
{
    int32_t *restrict px = scratch;
    int in_w = ax->in_size;
    for (int x = 0; x < in_w; x++) {
        px[4 * x + 0] = in[3 * x + 0];
        px[4 * x + 1] = in[3 * x + 1];
        px[4 * x + 2] = in[3 * x + 2];
        px[4 * x + 3] = 0;
    }
    const int *bounds = ax->bounds;
    const int kstride = ax->kstride;
    for (int xx = 0; xx < ax->out_size; xx++) {
        const int32_t *restrict k = ax->k + (size_t)xx * (size_t)kstride;
        const int32_t *restrict p = px + 4 * (size_t)bounds[2 * xx];
        int n = bounds[2 * xx + 1];
        int32_t s[4] = {PF_RS_BIAS, PF_RS_BIAS, PF_RS_BIAS, PF_RS_BIAS};
        for (int t = 0; t < n; t++)
            for (int c = 0; c < 4; c++)
                s[c] += p[4 * t + c] * k[t];
        out[3 * xx + 0] = clip8(s[0]);
        out[3 * xx + 1] = clip8(s[1]);
        out[3 * xx + 2] = clip8(s[2]);
    }
}

PF_CLONES
void pf_rs_kernel_accumulate(int32_t *restrict acc, const uint8_t *restrict h, int32_t k, size_t n)
{
    for (size_t i = 0; i < n; i++)
        acc[i] += h[i] * k;
}
