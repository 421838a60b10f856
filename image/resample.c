/* resample.c - the streaming two-pass resampler (see resample.h) and the scalar reference port. */
#include "image/resample.h"

#include <stdlib.h>
#include <string.h>

#include "image/resample_kernels.h"

/* Coefficient tables above this size are recomputed on the fly instead (only absurd aspect ratios, e.g.
 * 100000000 x 1, get there; normal images need a few KB). */
#define PF_RS_MAX_TABLE (32u << 20)
#define PF_RS_BIAS (1 << (PF_RS_PRECISION_BITS - 1))

static inline uint8_t clip8(int32_t ss)
{
    int32_t v = ss >> PF_RS_PRECISION_BITS; /* arithmetic shift, as Pillow's clip8 */
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

/* ---- horizontal pass ------------------------------------------------------------------------------ */

/* Pillow's ImagingResampleHorizontal_8bpc for 3 bands, reading u8 RGB directly (the reference, and the
 * path for rows too wide for the block kernel or coefficients too many to tabulate). */
static void horizontal_row_scalar(const pf_rs_axis *ax, const uint8_t *in, uint8_t *out)
{
    for (int xx = 0; xx < ax->out_size; xx++) {
        int xmin = ax->bounds[2 * xx], n = ax->bounds[2 * xx + 1];
        int32_t s0 = PF_RS_BIAS, s1 = PF_RS_BIAS, s2 = PF_RS_BIAS;
        const uint8_t *p = in + (size_t)xmin * 3;
        for (int x = 0; x < n; x++) {
            int32_t k = pf_rs_axis_coeff(ax, xx, x);
            s0 += p[3 * x + 0] * k;
            s1 += p[3 * x + 1] * k;
            s2 += p[3 * x + 2] * k;
        }
        out[3 * xx + 0] = clip8(s0);
        out[3 * xx + 1] = clip8(s1);
        out[3 * xx + 2] = clip8(s2);
    }
}

/* ---- streaming resampler -------------------------------------------------------------------------- */

/* The gather ring holds the vertical window plus one horizontal block; above this size (reductions of
 * thousands of rows into one) the vertical pass accumulates row by row instead. */
#define PF_RS_GATHER_MAX_BYTES (16u << 20)

/* Largest number of output rows whose vertical window contains one input row. */
static int max_active_rows(const pf_rs_axis *ay)
{
    int best = 0, lo = 0, hi = 0;
    for (int y = 0; y < ay->in_size; y++) {
        while (hi < ay->out_size && ay->bounds[2 * hi] <= y)
            hi++;
        while (lo < hi && ay->bounds[2 * lo] + ay->bounds[2 * lo + 1] <= y)
            lo++;
        if (hi - lo > best)
            best = hi - lo;
    }
    return best;
}

int pf_resampler_init(pf_resampler *r, int in_w, int in_h, int out_w, int out_h, uint8_t *out, pf_err *err)
{
    memset(r, 0, sizeof *r);
    if (in_w < 1 || in_h < 1 || out_w < 1 || out_h < 1)
        return pf_errf(err, "resample: bad sizes %dx%d -> %dx%d", in_w, in_h, out_w, out_h);
    r->in_w = in_w;
    r->in_h = in_h;
    r->out_w = out_w;
    r->out_h = out_h;
    r->out = out;
    r->need_h = out_w != in_w;
    r->need_v = out_h != in_h;
    r->row_len = (size_t)out_w * 3;
    r->row_stride = (r->row_len + PF_RS_ROW_ALIGN - 1) / PF_RS_ROW_ALIGN * PF_RS_ROW_ALIGN;
    if (pf_rs_axis_init(&r->ay, in_h, out_h, PF_RS_MAX_TABLE, err))
        return -1;
    r->y_first = r->ay.bounds[0];
    r->y_last = r->ay.bounds[2 * (out_h - 1)] + r->ay.bounds[2 * (out_h - 1) + 1];
    if (r->need_h) {
        if (pf_rs_axis_init(&r->ax, in_w, out_w, PF_RS_MAX_TABLE, err))
            goto fail;
        if (r->ax.k && in_w <= PF_RS_MAX_BLOCK_WIDTH) {
            r->block = calloc((size_t)in_w * PF_RS_LANES, sizeof *r->block);
            r->stage_stride = (size_t)in_w * 3 + 4;
            r->stage = calloc(PF_RS_BLOCK_ROWS + 1, r->stage_stride);
            if (!r->block || !r->stage)
                goto oom;
        }
    }
    r->hrows = calloc(PF_RS_BLOCK_ROWS, r->row_stride);
    if (!r->hrows)
        goto oom;
    if (r->need_v) {
        size_t ring = (size_t)r->ay.kstride + PF_RS_BLOCK_ROWS;
        if (ring * r->row_stride * sizeof(uint16_t) <= PF_RS_GATHER_MAX_BYTES) {
            r->gather = 1;
            r->ring = (int)ring;
            r->vring = calloc(ring * r->row_stride, sizeof *r->vring);
            r->vrows = malloc((size_t)r->ay.kstride * sizeof *r->vrows);
            r->vk = malloc((size_t)r->ay.kstride * sizeof *r->vk);
            if (!r->vring || !r->vrows || !r->vk)
                goto oom;
        } else {
            r->ring = max_active_rows(&r->ay);
            r->acc = malloc((size_t)r->ring * r->row_len * sizeof(int32_t));
            if (!r->acc)
                goto oom;
        }
    }
    return 0;
oom:
    pf_errf(err, "resample: out of memory for %dx%d -> %dx%d", in_w, in_h, out_w, out_h);
fail:
    pf_resampler_free(r);
    return -1;
}

void pf_resampler_free(pf_resampler *r)
{
    pf_rs_axis_free(&r->ax);
    pf_rs_axis_free(&r->ay);
    free(r->block);
    free(r->stage);
    free(r->hrows);
    free(r->vring);
    free(r->vrows);
    free(r->vk);
    free(r->acc);
    r->block = r->vring = NULL;
    r->stage = r->hrows = NULL;
    r->vrows = NULL;
    r->vk = r->acc = NULL;
}

/* Accumulate mode: output row yy is complete. */
static void finish_acc_row(pf_resampler *r, int yy)
{
    const int32_t *acc = r->acc + (size_t)(yy % r->ring) * r->row_len;
    uint8_t *dst = r->out + (size_t)yy * r->row_len;
    for (size_t i = 0; i < r->row_len; i++)
        dst[i] = clip8(acc[i]);
}

/* Where the horizontal result of input row y goes: an output row (no vertical pass), a ring slot (gather,
 * 16-bit) or a scratch row (accumulate). */
static uint8_t *hdest(pf_resampler *r, int y, int slot)
{
    if (!r->need_v)
        return r->out + (size_t)y * r->row_len;
    return r->hrows + (size_t)slot * r->row_stride;
}

static uint16_t *ring_row(const pf_resampler *r, int y)
{
    return r->vring + (size_t)(y % r->ring) * r->row_stride;
}

/* Input row y has passed the horizontal stage; its result is at h (gather: already in the ring). */
static void vertical_row_done(pf_resampler *r, int y, const uint8_t *h)
{
    if (!r->need_v) {
        r->lo = y + 1;
        return;
    }
    const int *b = r->ay.bounds;
    if (r->gather) {
        while (r->lo < r->out_h && b[2 * r->lo] + b[2 * r->lo + 1] <= y + 1) {
            int yy = r->lo, ymin = b[2 * yy], n = b[2 * yy + 1];
            for (int t = 0; t < n; t++) {
                r->vrows[t] = ring_row(r, ymin + t);
                r->vk[t] = pf_rs_axis_coeff(&r->ay, yy, t);
            }
            pf_rs_kernel_vgather(r->vrows, r->vk, n, r->row_len, r->out + (size_t)yy * r->row_len);
            r->lo++;
        }
        return;
    }
    while (r->hi < r->out_h && b[2 * r->hi] <= y) {
        int32_t *acc = r->acc + (size_t)(r->hi % r->ring) * r->row_len;
        for (size_t i = 0; i < r->row_len; i++)
            acc[i] = PF_RS_BIAS;
        r->hi++;
    }
    for (int yy = r->lo; yy < r->hi; yy++) {
        int t = y - b[2 * yy];
        if (t < b[2 * yy + 1])
            pf_rs_kernel_accumulate(r->acc + (size_t)(yy % r->ring) * r->row_len, h, pf_rs_axis_coeff(&r->ay, yy, t),
                                    r->row_len);
    }
    while (r->lo < r->hi && b[2 * r->lo] + b[2 * r->lo + 1] <= y + 1) {
        finish_acc_row(r, r->lo);
        r->lo++;
    }
}

static void flush_block(pf_resampler *r)
{
    uint8_t *dst[PF_RS_BLOCK_ROWS];
    uint16_t *dst16[PF_RS_BLOCK_ROWS];
    const uint8_t *rows[PF_RS_BLOCK_ROWS];
    for (int i = 0; i < PF_RS_BLOCK_ROWS; i++) /* missing rows of a short last block read the zero row */
        rows[i] = r->stage + (size_t)(i < r->block_rows ? i : PF_RS_BLOCK_ROWS) * r->stage_stride;
    pf_rs_block_pack(r->block, r->in_w, rows);
    for (int i = 0; i < r->block_rows; i++) {
        dst[i] = hdest(r, r->block_y0 + i, i);
        dst16[i] = r->gather ? ring_row(r, r->block_y0 + i) : NULL;
    }
    pf_rs_kernel_hblock(&r->ax, r->block, r->block_rows, dst, r->gather ? dst16 : NULL);
    for (int i = 0; i < r->block_rows; i++)
        vertical_row_done(r, r->block_y0 + i, dst[i]);
    r->block_rows = 0;
}

void pf_resampler_push(pf_resampler *r, const uint8_t *row)
{
    int y = r->y_next;
    if (y >= r->in_h)
        return;
    r->y_next++;
    if (y < r->y_first || y >= r->y_last)
        return;
    if (r->block) {
        if (r->block_rows == 0)
            r->block_y0 = y;
        memcpy(r->stage + (size_t)r->block_rows++ * r->stage_stride, row, (size_t)r->in_w * 3);
        if (r->block_rows == PF_RS_BLOCK_ROWS || y == r->y_last - 1)
            flush_block(r);
        return;
    }
    uint8_t *h = hdest(r, y, 0);
    if (r->need_h)
        horizontal_row_scalar(&r->ax, row, h);
    else
        memcpy(h, row, r->row_len);
    if (r->gather)
        pf_rs_widen_row(h, r->row_len, ring_row(r, y));
    vertical_row_done(r, y, h);
}

int pf_resampler_finished(const pf_resampler *r)
{
    return r->lo >= r->out_h;
}

int pf_resample_rgb(const uint8_t *in, int in_w, int in_h, size_t stride, uint8_t *out, int out_w, int out_h,
                    pf_err *err)
{
    pf_resampler r;
    if (pf_resampler_init(&r, in_w, in_h, out_w, out_h, out, err))
        return -1;
    for (int y = 0; y < in_h; y++)
        pf_resampler_push(&r, in + (size_t)y * stride);
    int ok = pf_resampler_finished(&r);
    pf_resampler_free(&r);
    return ok ? 0 : pf_errf(err, "resample: internal error: output incomplete");
}

/* ---- reference ------------------------------------------------------------------------------------ */

int pf_resample_rgb_reference(const uint8_t *in, int in_w, int in_h, size_t stride, uint8_t *out, int out_w,
                              int out_h, pf_err *err)
{
    pf_rs_axis ax, ay;
    if (pf_rs_axis_init(&ay, in_h, out_h, SIZE_MAX, err))
        return -1;
    int need_h = out_w != in_w, need_v = out_h != in_h;
    int y0 = ay.bounds[0], y1 = ay.bounds[2 * (out_h - 1)] + ay.bounds[2 * (out_h - 1) + 1];
    const uint8_t *src = in;
    size_t src_stride = stride;
    uint8_t *tmp = NULL;
    if (need_h) {
        if (pf_rs_axis_init(&ax, in_w, out_w, SIZE_MAX, err)) {
            pf_rs_axis_free(&ay);
            return -1;
        }
        tmp = malloc((size_t)(y1 - y0) * (size_t)out_w * 3);
        if (!tmp) {
            pf_rs_axis_free(&ax);
            pf_rs_axis_free(&ay);
            return pf_errf(err, "resample: out of memory");
        }
        for (int y = y0; y < y1; y++)
            horizontal_row_scalar(&ax, in + (size_t)y * stride, tmp + (size_t)(y - y0) * out_w * 3);
        pf_rs_axis_free(&ax);
        src = tmp;
        src_stride = (size_t)out_w * 3;
    } else {
        y0 = 0; /* the vertical pass reads the input directly */
    }
    if (need_v) {
        for (int yy = 0; yy < out_h; yy++) {
            int ymin = ay.bounds[2 * yy] - y0, n = ay.bounds[2 * yy + 1];
            for (int xx = 0; xx < out_w * 3; xx++) {
                int32_t ss = PF_RS_BIAS;
                for (int y = 0; y < n; y++)
                    ss += src[(size_t)(ymin + y) * src_stride + xx] * pf_rs_axis_coeff(&ay, yy, y);
                out[(size_t)yy * out_w * 3 + xx] = clip8(ss);
            }
        }
    } else {
        for (int y = 0; y < out_h; y++)
            memcpy(out + (size_t)y * out_w * 3, src + (size_t)y * src_stride, (size_t)out_w * 3);
    }
    free(tmp);
    pf_rs_axis_free(&ay);
    return 0;
}
