/* mask.h - one object's mask on the original image, as big_vision's evaluator places it
 * (evaluators/proj/paligemma/transfers/segmentation.py):
 *   bbox = loc / 1023 (float64); y1, x1, y2, x2 = int(y0*h), int(x0*w), int(y1*h), int(x1*w) (truncation,
 *   h and w of the ORIGINAL image); no mask when the tokens are invalid or the window is empty after int();
 *   else the 64x64 decoder output resized to (x2-x1, y2-y1) by Pillow's float BILINEAR, thresholded > 0.0,
 *   placed in the window [y1:y2, x1:x2]; everything outside is 0.
 */
#ifndef PF_MODEL_SEG_MASK_H
#define PF_MODEL_SEG_MASK_H

#include <stdint.h>

#include "base/err.h"
#include "model/seg/answer.h"
#include "model/seg/decoder.h"
#include "model/seg/rle.h"

/* The pixel window of LOC (y0 x0 y1 x1, each 0..1023) on a WIDTH x HEIGHT image: WIN = {y1, x1, y2, x2},
 * end-exclusive. Returns 1 when it is non-empty (x2 > x1 and y2 > y1). */
int pf_seg_window(const int loc[4], int width, int height, int win[4]);

/* M64 (the decoder output) resized into a WW x WH window and thresholded: WIN_OUT [wh][ww] gets 0/1.
 * RESIZED (may be NULL) gets the float values before the threshold. */
int pf_seg_threshold(const float *m64, int ww, int wh, uint8_t *win_out, float *resized, pf_err *err);

/* The whole rule for object O on a WIDTH x HEIGHT image: decode (when O's tokens are valid and its window
 * non-empty), resize, threshold, place, encode. An invalid or empty object gives an all-zero mask.
 * *placed (may be NULL) tells which. */
int pf_seg_object_mask(const pf_seg_decoder *d, const pf_seg_object *o, int width, int height, pf_rle *out,
                       int *placed, pf_err *err);

#endif
