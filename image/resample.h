/* resample.h - Pillow-exact bicubic resize of 8-bit RGB images, streaming rows in order.
 *
 * This is a port of Pillow's ImagingResample (src/libImaging/Resample.c, unchanged from Pillow 7 to 11)
 * for mode RGB with the BICUBIC filter (a = -0.5, support 2 scaled by the reduction factor) and the
 * default box (0, 0, w, h):
 *   - per axis, precompute_coeffs: window [xmin, xmin+n) around center = (xx + 0.5) * scale, weights
 *     bicubic((x + xmin - center + 0.5) / filterscale) renormalised by their sum, then 22-bit fixed point
 *     rounded away from zero (normalize_coeffs_8bpc);
 *   - horizontal pass first, then vertical; each pass accumulates u8 * coeff in int32 starting at
 *     1 << 21 and clips (sum >> 22) to 0..255, so the image between passes is uint8 exactly as in Pillow;
 *   - a pass is skipped when that axis keeps its size (Pillow's need_horizontal / need_vertical).
 * The output is bit-identical to Pillow's Image.resize((W, H), Image.BICUBIC) on an RGB image.
 *
 * Streaming: input rows are pushed in order (0 .. in_h-1); each is resampled horizontally at once and
 * accumulated into the few output rows whose vertical window contains it, so memory is O(in_w + out_w *
 * active rows), never a full-resolution copy, for any aspect ratio. Integer sums are associative, so
 * accumulating row by row gives exactly Pillow's vertical sums. Coefficients are precomputed per axis
 * (once per size pair) unless that table would be huge (absurd aspect ratios), in which case they are
 * recomputed on the fly with the same floating-point expressions.
 */
#ifndef PF_WORKERS_RESAMPLE_H
#define PF_WORKERS_RESAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define PF_RS_PRECISION_BITS 22 /* Pillow: 32 - 8 - 2 */

/* One axis' coefficients (Pillow's precompute_coeffs + normalize_coeffs_8bpc). */
typedef struct pf_rs_axis {
    int in_size, out_size;
    double scale, support, ss; /* ss = 1 / filterscale */
    int *bounds;               /* 2 per output: first input index, tap count (Pillow's xmin, xmax) */
    double *ww;                /* per output: sum of the raw weights (the normaliser) */
    int32_t *k;                /* fixed-point coefficients, kstride per output; NULL = computed on demand */
    int kstride;               /* max tap count */
    size_t total_taps;         /* sum of tap counts */
} pf_rs_axis;

/* max_table_bytes: precompute the int32 table only if it fits (0 = never precompute). */
int pf_rs_axis_init(pf_rs_axis *a, int in_size, int out_size, size_t max_table_bytes, pf_err *err);
void pf_rs_axis_free(pf_rs_axis *a);
/* Coefficient `tap` of output `out` in fixed point (from the table or recomputed identically). */
int32_t pf_rs_axis_coeff(const pf_rs_axis *a, int out, int tap);

/* Streaming resampler. out must hold out_w * out_h * 3 bytes (HWC RGB). */
typedef struct pf_resampler {
    int in_w, in_h, out_w, out_h;
    int need_h, need_v;
    pf_rs_axis ax, ay;
    int y_next;          /* next input row expected */
    int y_first, y_last; /* input rows [y_first, y_last) are used (Pillow's ybox) */
    int lo;              /* first output row not yet finished */
    int hi;              /* accumulate mode: output rows [lo, hi) have received input rows */
    size_t row_len;      /* out_w * 3 */
    size_t row_stride;   /* row_len rounded up for the vector kernels (elements) */
    /* horizontal pass: blocks of rows interleaved for the vector kernel, or the scalar path */
    uint16_t *block;     /* in_w * PF_RS_LANES samples (NULL: scalar path) */
    uint8_t *stage;      /* PF_RS_BLOCK_ROWS input rows copied until the block is full, + a zero row */
    size_t stage_stride;
    int block_rows, block_y0;
    uint8_t *hrows;      /* scalar path / accumulate mode: PF_RS_BLOCK_ROWS rows of row_stride */
    /* vertical pass: gather (ring of horizontally resampled rows, summed in registers) or accumulate */
    int gather;
    int ring;            /* rows in the ring (gather) or accumulator rows (accumulate) */
    uint16_t *vring;     /* gather: ring * row_stride, 16-bit copies of horizontal results */
    int32_t *acc;        /* accumulate: ring * row_len */
    const uint16_t **vrows; /* gather: row pointers of one output row */
    int32_t *vk;           /* gather: its coefficients */
    uint8_t *out;
} pf_resampler;

int pf_resampler_init(pf_resampler *r, int in_w, int in_h, int out_w, int out_h, uint8_t *out, pf_err *err);
/* Push the next input row (in_w * 3 bytes, RGB). Rows beyond the last one are ignored. */
void pf_resampler_push(pf_resampler *r, const uint8_t *row);
/* 1 once every output row has been written. */
int pf_resampler_finished(const pf_resampler *r);
void pf_resampler_free(pf_resampler *r);

/* Whole-image convenience wrappers (rows `stride` bytes apart). */
int pf_resample_rgb(const uint8_t *in, int in_w, int in_h, size_t stride, uint8_t *out, int out_w, int out_h,
                    pf_err *err);
/* Straight scalar port of Pillow's two passes over a full image (no streaming, no vector kernels): the
 * oracle the tests compare the fast streaming path against. */
int pf_resample_rgb_reference(const uint8_t *in, int in_w, int in_h, size_t stride, uint8_t *out, int out_w,
                              int out_h, pf_err *err);

#endif
