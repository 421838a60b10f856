/* objects.h - the "objects" of a detect or segment answer as JSON, the one form `generate`, the
 * pipeline's records and `decode-answer` all write:
 *   [{"label": "cat", "loc": [y0, x0, y1, x1], "x0": .., "y0": .., "x1": .., "y1": ..,
 *     "mask": {"size": [h, w], "counts": [...]}}, ...]
 * loc are the generated tokens; x0..y1 the box in pixels of the original image (loc / 1023 * size, as the
 * detect `boxes`); "mask" only for objects that carry 16 <seg> codes: COCO uncompressed RLE of the whole
 * image (rle.h), all zeros when the evaluator would place no mask (codes > 127, window empty after int()),
 * or null when no decoder was given. Objects whose box is invalid (answer.h) are left out, as for `boxes`.
 */
#ifndef PF_MODEL_SEG_OBJECTS_H
#define PF_MODEL_SEG_OBJECTS_H

#include <jansson.h>
#include <stddef.h>

#include "base/err.h"
#include "model/seg/decoder.h"

/* What a record says when a segment answer's masks could not be decoded for want of the decoder. */
#define PF_SEG_NO_DECODER_NOTE                                                                                     \
    "masks not decoded: no --seg-decoder FILE (big_vision's vae-oid.npz) was given to generate, run or the "     \
    "inference worker"

/* The objects of TEXT[0..LEN) on a WIDTH x HEIGHT image (each 1..65536). DEC may be NULL: masks are then
 * null, and *masks_missing (may be NULL) is set when at least one object had <seg> codes. */
json_t *pf_seg_objects_json(const char *text, size_t len, int width, int height, const pf_seg_decoder *dec,
                            int *masks_missing, pf_err *err);

/* A record's "objects" for a segment answer TEXT[0..LEN) on a WIDTH x HEIGHT image: MADE[0..MADE_LEN) when
 * given (the JSON array an inference worker with a decoder made; used when it parses as an array), else
 * made here with DEC (may be NULL: masks null). When masks are missing, or the objects cannot be made,
 * REC also gets "note" saying why; the raw "text" always keeps the answer. */
void pf_seg_record_objects(json_t *rec, const char *text, size_t len, int width, int height,
                           const pf_seg_decoder *dec, const char *made, size_t made_len);

/* True for a prompt asking for segmentation ("segment cat", "segment cat ; dog"). */
int pf_seg_prompt_is_segment(const char *prompt);

#endif
