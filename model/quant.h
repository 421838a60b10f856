/* quant.h - int8 weight quantization: symmetric, one scale per output row (output channel).
 *
 * W[n][k] ~= scale[n] * q[n][k], q in [-qmax, qmax], scale = max_k |W[n][k]| / qmax, round to nearest even.
 * qmax is 127 where every int8 dot product we run sums in 32 bits (VNNI), 63 where oneDNN or our kernels
 * use vpmaddubsw (pairs of u8*s8 summed in saturating 16 bits: 2 * 255 * 63 < 32767 stays exact). */
#ifndef PF_MODEL_QUANT_H
#define PF_MODEL_QUANT_H

#include <stdint.h>

/* Quantize one row of k weights. Returns the scale (1 for an all-zero row); *sum = sum of q (used to undo
 * the +128 offset of u8 activations). Non-finite weights are refused by the caller, not here. */
float pf_quant_row_s8(const float *w, int64_t k, int qmax, int8_t *q, int32_t *sum);

#endif
