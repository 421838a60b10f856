/* quant.h - int8 weight quantization: symmetric, one scale per output row (output channel).
 *
 * W[n][k] ~= scale[n] * q[n][k], q in [-qmax, qmax], scale = max_k |W[n][k]| / qmax, round to nearest even.
 * The engine uses qmax 127 on every CPU: with VNNI every product sums in 32 bits; without it our kernels feed
 * vpmaddubsw |q_x| and sign-adjusted weights (2 * 127 * 127 < 32767, exact), and prefill-sized products run
 * as exact integer sums in sgemm instead of oneDNN's saturating u8 x s8 (model/linear/mm.c). */
#ifndef PF_MODEL_QUANT_H
#define PF_MODEL_QUANT_H

#include <stdint.h>

/* Quantize one row of k weights. Returns the scale (1 for an all-zero row); *sum = sum of q (used to undo
 * the +128 offset of u8 activations). Non-finite weights are refused by the caller, not here. */
float pf_quant_row_s8(const float *w, int64_t k, int qmax, int8_t *q, int32_t *sum);

#endif
