/* resample_kernels.h - the inner loops of the resampler, vectorised (internal to resample.c). */
#ifndef PF_WORKERS_RESAMPLE_KERNELS_H
#define PF_WORKERS_RESAMPLE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "image/resample.h"

/* The horizontal pass works on blocks of PF_RS_BLOCK_ROWS input rows interleaved per pixel into
 * PF_RS_LANES 16-bit lanes: lane 3 * r + c holds channel c of row r (the last lane is padding), so one
 * tap of one output pixel is a single PF_RS_LANES-wide multiply-add for all rows and channels. */
#define PF_RS_BLOCK_ROWS 5
#define PF_RS_LANES 16

/* Widest input row the block kernel takes (its block buffer is in_w * 32 bytes); wider rows take the
 * scalar path. */
#define PF_RS_MAX_BLOCK_WIDTH (1 << 20)

/* Interleave PF_RS_BLOCK_ROWS staged rows (RGB, in_w pixels, each readable for 3 * in_w + 1 bytes) into
 * the block buffer. */
void pf_rs_block_pack(uint16_t *block, int in_w, const uint8_t *const *rows);
/* Horizontal pass of a block: rows 0..nrows-1 of the block into dst[r] (out_w * 3 bytes each), or into
 * dst16[r] as 16-bit values when dst16 is not NULL (the vertical ring). */
void pf_rs_kernel_hblock(const pf_rs_axis *ax, const uint16_t *block, int nrows, uint8_t *const *dst,
                         uint16_t *const *dst16);
/* Vertical pass of one output row: out[i] = clip(bias + sum_t k[t] * rows[t][i]) for i < len. The rows
 * (16-bit copies of the horizontal results) must be readable up to len rounded up to PF_RS_ROW_ALIGN. */
#define PF_RS_ROW_ALIGN 64
void pf_rs_kernel_vgather(const uint16_t *const *rows, const int32_t *k, int n, size_t len, uint8_t *out);
/* dst[i] = src[i] for i < n (a row into the 16-bit ring). */
void pf_rs_widen_row(const uint8_t *src, size_t n, uint16_t *dst);
/* acc[i] += k * h[i] for i < n (vertical pass by accumulation, for extreme reductions). */
void pf_rs_kernel_accumulate(int32_t *acc, const uint8_t *h, int32_t k, size_t n);

#endif
