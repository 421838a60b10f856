/* rle.h - COCO's uncompressed run-length encoding of a binary mask: {"size": [h, w], "counts": [...]},
 * pixels in column-major (Fortran) order, runs alternating 0s and 1s starting with 0s (so counts[0] may be
 * 0), counts summing to h * w. This is what pycocotools' mask.frPyObjects/decode accept for "iscrowd"
 * annotations and what most mask consumers read.
 */
#ifndef PF_MODEL_SEG_RLE_H
#define PF_MODEL_SEG_RLE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct pf_rle {
    int height, width;
    uint64_t *counts;
    size_t n;
} pf_rle;

/* The mask of a WIDTH x HEIGHT image that is WIN (row-major [wh][ww], nonzero = set) inside the window
 * whose top-left pixel is (X0, Y0) and 0 everywhere else. WIN may be NULL (an empty mask). The window must
 * lie inside the image. */
int pf_rle_from_window(int width, int height, int x0, int y0, int ww, int wh, const uint8_t *win, pf_rle *out,
                       pf_err *err);
/* A full row-major [height][width] mask. */
int pf_rle_encode(const uint8_t *mask, int width, int height, pf_rle *out, pf_err *err);
/* Back to a row-major [height][width] 0/1 mask (malloc'd); refuses counts that do not sum to h*w. */
int pf_rle_decode(const pf_rle *r, uint8_t **mask, pf_err *err);
void pf_rle_free(pf_rle *r);

#endif
