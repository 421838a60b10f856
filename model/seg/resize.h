/* resize.h - Pillow's BILINEAR resize of a float32 ('F' mode) image, bit for bit.
 *
 * big_vision places a mask with `PIL.Image.fromarray(m64).resize([w, h], resample=PIL.Image.BILINEAR)`
 * (evaluators/proj/paligemma/transfers/segmentation.py), so the mask threshold (> 0) sees Pillow's numbers.
 * This ports Pillow's src/libImaging/Resample.c for 32-bit float images: separable, horizontal pass then
 * vertical pass, a pass skipped when its size is unchanged; per output index the triangle filter widened by
 * the scale when downscaling (antialiased), bounds rounded as Pillow rounds them, weights normalised by
 * their sum, each sum accumulated in double in kernel order and stored as float after each pass.
 * Compiled without FMA contraction so the roundings are Pillow's baseline build's.
 */
#ifndef PF_MODEL_SEG_RESIZE_H
#define PF_MODEL_SEG_RESIZE_H

#include "base/err.h"

/* IN [in_h][in_w] -> OUT [out_h][out_w]; sizes 1..65536. Fails only on out of memory or bad sizes. */
int pf_seg_resize_bilinear(const float *in, int in_w, int in_h, float *out, int out_w, int out_h, pf_err *err);

#endif
