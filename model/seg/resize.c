/* resize.c - see resize.h. Names follow Resample.c (precompute_coeffs, ImagingResampleHorizontal_32bpc,
 * ImagingResampleVertical_32bpc) so the two can be read side by side. */
#include "model/seg/resize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double bilinear_filter(double x)
{
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return 1.0 - x;
    return 0.0;
}

/* Pillow: in0/in1 are the (float) box edges, here always 0 and in_size. Returns ksize, or 0 on OOM. */
static int precompute_coeffs(int in_size, int out_size, int **boundsp, double **kkp)
{
    float in0 = 0.0f, in1 = (float)in_size;
    double scale, filterscale;
    filterscale = scale = (double)(in1 - in0) / out_size;
    if (filterscale < 1.0)
        filterscale = 1.0;
    double support = 1.0 * filterscale;   /* the bilinear filter's support is 1 */
    int ksize = (int)ceil(support) * 2 + 1;
    double *kk = malloc((size_t)out_size * (size_t)ksize * sizeof *kk);
    int *bounds = malloc((size_t)out_size * 2 * sizeof *bounds);
    if (!kk || !bounds) {
        free(kk);
        free(bounds);
        return 0;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0;
        double ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);   /* Pillow: "Round the value" (truncation of +0.5) */
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        double *k = &kk[(size_t)xx * ksize];
        int x;
        for (x = 0; x < xmax; x++) {
            double w = bilinear_filter((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0)
                k[x] /= ww;
        for (; x < ksize; x++)
            k[x] = 0;
        bounds[xx * 2 + 0] = xmin;
        bounds[xx * 2 + 1] = xmax;
    }
    *boundsp = bounds;
    *kkp = kk;
    return ksize;
}

int pf_seg_resize_bilinear(const float *in, int in_w, int in_h, float *out, int out_w, int out_h, pf_err *err)
{
    if (in_w < 1 || in_h < 1 || out_w < 1 || out_h < 1 || in_w > 65536 || in_h > 65536 || out_w > 65536 ||
        out_h > 65536)
        return pf_errf(err, "resize: sizes %dx%d -> %dx%d out of range", in_w, in_h, out_w, out_h);
    int need_h = out_w != in_w, need_v = out_h != in_h;
    if (!need_h && !need_v) {   /* PIL's resize returns a copy for an unchanged size */
        memcpy(out, in, (size_t)in_w * (size_t)in_h * sizeof *out);
        return 0;
    }
    int *bh = NULL, *bv = NULL;
    double *kh = NULL, *kv = NULL;
    float *tmp = NULL;
    int ks_h = need_h ? precompute_coeffs(in_w, out_w, &bh, &kh) : 1;
    int ks_v = need_v ? precompute_coeffs(in_h, out_h, &bv, &kv) : 1;
    int rc = -1;
    if (!ks_h || !ks_v)
        goto oom;
    const float *src = in;
    if (need_h) {
        /* Horizontal pass into [in_h][out_w] (all rows: Pillow limits it to the rows the vertical pass
         * reads, which changes no value). Without a vertical pass it writes OUT directly. */
        float *dst = out;
        if (need_v) {
            tmp = malloc((size_t)in_h * (size_t)out_w * sizeof *tmp);
            if (!tmp)
                goto oom;
            dst = tmp;
        }
        for (int yy = 0; yy < in_h; yy++)
            for (int xx = 0; xx < out_w; xx++) {
                int xmin = bh[xx * 2], xmax = bh[xx * 2 + 1];
                const double *k = &kh[(size_t)xx * ks_h];
                double ss = 0.0;
                for (int x = 0; x < xmax; x++)
                    ss += src[(size_t)yy * in_w + x + xmin] * k[x];
                dst[(size_t)yy * out_w + xx] = (float)ss;
            }
        src = dst;
    }
    if (need_v) {
        for (int yy = 0; yy < out_h; yy++) {
            int ymin = bv[yy * 2], ymax = bv[yy * 2 + 1];
            const double *k = &kv[(size_t)yy * ks_v];
            for (int xx = 0; xx < out_w; xx++) {
                double ss = 0.0;
                for (int y = 0; y < ymax; y++)
                    ss += src[(size_t)(y + ymin) * out_w + xx] * k[y];
                out[(size_t)yy * out_w + xx] = (float)ss;
            }
        }
    }
    rc = 0;
oom:
    if (rc)
        pf_errf(err, "resize: out of memory for %dx%d -> %dx%d", in_w, in_h, out_w, out_h);
    free(bh);
    free(bv);
    free(kh);
    free(kv);
    free(tmp);
    return rc;
}
