/* resample_kernels.h - the inner loops of the resampler, vectorised (internal to resample.c). */
#ifndef PF_WORKERS_RESAMPLE_KERNELS_H
#define PF_WORKERS_RESAMPLE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "workers/resample.h"

/* Bytes of scratch the fast horizontal kernel needs for this axis; 0 = use the scalar path. */
size_t pf_rs_kernel_scratch_size(const pf_rs_axis *ax);
/* One row through the horizontal pass (needs ax->k and the scratch). */
void pf_rs_kernel_horizontal(const pf_rs_axis *ax, const uint8_t *in, uint8_t *out, void *scratch);
/* acc[i] += k * h[i] for i < n (the vertical pass, one input row into one output row). */
void pf_rs_kernel_accumulate(int32_t *acc, const uint8_t *h, int32_t k, size_t n);

#endif
