/* boxes.h - detection boxes from PaliGemma's generated text (the big_vision rule).
 *
 * A detection answer looks like "<loc0123><loc0456><loc0789><loc1000> cat ; <loc...>x4 dog". Each object
 * is four <locNNNN> tokens in the order y0 x0 y1 x1 (NNNN in 0..1023, a fraction NNNN/1023 of the square
 * model input), optionally 16 <segNNN> mask tokens, then the label: the text after the fourth loc (or
 * the last seg) up to ";" or the next "<", trimmed. Objects are separated by " ; ". Since the resize to
 * S x S ignores the aspect ratio, the fractions map straight onto the original image: x = NNNN/1023 * width,
 * y = NNNN/1023 * height (big_vision evaluators/proj/paligemma/transfers/segmentation.py:
 * `bbox = tokens[:, :4] / 1023`, then y*h, x*w on the original resolution).
 * Text before a box, fewer than four consecutive locs (truncated output) and boxes whose corners are out
 * of order or empty (y1 <= y0 or x1 <= x0: invalid in the big_vision evaluator too) give no box; so do
 * four-digit locs above 1023 (the demo's regex takes them as a box, the evaluator calls it invalid).
 * The splitting is model/seg/answer.h's, shared with segment answers.
 */
#ifndef PF_MODEL_SEG_BOXES_H
#define PF_MODEL_SEG_BOXES_H

#include <stddef.h>

#include "base/err.h"

typedef struct pf_box {
    char *label;
    int loc[4];                 /* y0 x0 y1 x1 as generated, 0..1023 */
    double x0, y0, x1, y1;      /* pixels of the original image */
} pf_box;

/* Parse TEXT; *out is malloc'd (free with pf_boxes_free), *n may be 0. Fails only on out-of-memory. */
int pf_boxes_parse(const char *text, int width, int height, pf_box **out, size_t *n, pf_err *err);
void pf_boxes_free(pf_box *boxes, size_t n);

#endif
