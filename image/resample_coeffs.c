/* resample_coeffs.c - Pillow's precompute_coeffs / normalize_coeffs_8bpc for the bicubic filter.
 *
 * Every floating-point expression below is written in the same order as in Pillow's Resample.c so that
 * the doubles, and hence the rounded 22-bit coefficients, are identical. Build this file without
 * floating-point contraction (no FMA): Pillow's wheels and Debian package are built for baseline x86-64,
 * where `a * b + c` is rounded twice. workers/CMakeLists.txt passes -ffp-contract=off.
 */
#include "image/resample.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define BICUBIC_SUPPORT 2.0

/* Pillow's bicubic_filter with a = -0.5 (the #define expands in place, hence the literal constants). */
static double bicubic_filter(double x)
{
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((-0.5 + 2.0) * x - (-0.5 + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * -0.5;
    return 0.0;
}

static int32_t to_fixed(double k)
{
    /* normalize_coeffs_8bpc: round half away from zero */
    if (k < 0)
        return (int32_t)(-0.5 + k * (1 << PF_RS_PRECISION_BITS));
    return (int32_t)(0.5 + k * (1 << PF_RS_PRECISION_BITS));
}

static double raw_weight(const pf_rs_axis *a, int out, int tap, int xmin)
{
    double center = 0.0 + (out + 0.5) * a->scale;
    return bicubic_filter((tap + xmin - center + 0.5) * a->ss);
}

int32_t pf_rs_axis_coeff(const pf_rs_axis *a, int out, int tap)
{
    if (a->k)
        return a->k[(size_t)out * (size_t)a->kstride + (size_t)tap];
    int xmin = a->bounds[2 * out];
    double w = raw_weight(a, out, tap, xmin);
    double ww = a->ww[out];
    if (ww != 0.0)
        w /= ww;
    return to_fixed(w);
}

int pf_rs_axis_init(pf_rs_axis *a, int in_size, int out_size, size_t max_table_bytes, pf_err *err)
{
    memset(a, 0, sizeof *a);
    if (in_size < 1 || out_size < 1)
        return pf_errf(err, "resample: sizes must be >= 1 (in %d, out %d)", in_size, out_size);
    a->in_size = in_size;
    a->out_size = out_size;
    /* Pillow receives the box as floats: (float)in_size - 0.0f, then widens to double. For sizes above
     * 2^24 the float rounding changes the scale, and Pillow lives with that; so do we. */
    float in0 = 0.0f, in1 = (float)in_size;
    double filterscale = a->scale = (double)(in1 - in0) / out_size;
    if (filterscale < 1.0)
        filterscale = 1.0;
    a->support = BICUBIC_SUPPORT * filterscale;
    a->ss = 1.0 / filterscale;

    a->bounds = malloc((size_t)out_size * 2 * sizeof *a->bounds);
    a->ww = malloc((size_t)out_size * sizeof *a->ww);
    if (!a->bounds || !a->ww) {
        pf_rs_axis_free(a);
        return pf_errf(err, "resample: out of memory for %d coefficients", out_size);
    }
    int kstride = 0;
    size_t total = 0;
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * a->scale;
        int xmin = (int)(center - a->support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + a->support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; x++)
            ww += raw_weight(a, xx, x, xmin);
        a->bounds[2 * xx] = xmin;
        a->bounds[2 * xx + 1] = xmax;
        a->ww[xx] = ww;
        if (xmax > kstride)
            kstride = xmax;
        total += (size_t)xmax;
    }
    a->kstride = kstride;
    a->total_taps = total;
    size_t table = (size_t)out_size * (size_t)kstride * sizeof(int32_t);
    if (kstride > 0 && table / (size_t)kstride / sizeof(int32_t) == (size_t)out_size && table <= max_table_bytes) {
        a->k = calloc((size_t)out_size * (size_t)kstride, sizeof(int32_t));
        if (!a->k) {
            pf_rs_axis_free(a);
            return pf_errf(err, "resample: out of memory for a %zu-byte coefficient table", table);
        }
        for (int xx = 0; xx < out_size; xx++) {
            int32_t *k = a->k + (size_t)xx * (size_t)kstride;
            int xmin = a->bounds[2 * xx], n = a->bounds[2 * xx + 1];
            for (int x = 0; x < n; x++) {
                double w = raw_weight(a, xx, x, xmin);
                if (a->ww[xx] != 0.0)
                    w /= a->ww[xx];
                k[x] = to_fixed(w);
            }
        }
    }
    return 0;
}

void pf_rs_axis_free(pf_rs_axis *a)
{
    free(a->bounds);
    free(a->ww);
    free(a->k);
    a->bounds = NULL;
    a->ww = NULL;
    a->k = NULL;
}
