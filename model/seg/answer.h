/* answer.h - the objects of a PaliGemma detect / segment answer:
 *   "<loc0123><loc0456><loc0789><loc0999><seg012>...(16 seg tokens)... cat ; <loc...>x4 <seg...>x16 dog"
 *
 * big_vision never parses text (its evaluator reads token ids); the splitting follows the regex of the
 * big_vision PaliGemma demo code, applied repeatedly from the start of the text:
 *   (.*?) <loc(\d{4})> x4 \s* (<seg(\d{3})> x16)? \s* ([^;<>]+)? ?(?:; )?
 * i.e. anything before four consecutive <locDDDD> tokens is skipped, 16 consecutive <segDDD> tokens after
 * them (and optional whitespace) are the mask codes, and the label is the text up to ';', '<' or '>',
 * stripped of surrounding whitespace. Then the evaluator's validity rule (segmentation.py): locs in 0..1023,
 * codes in 0..127, y1 > y0 and x1 > x0 (order y0 x0 y1 x1).
 * (Python's \d and \s also match non-ASCII digits and spaces; only ASCII ones are accepted here.)
 */
#ifndef PF_MODEL_SEG_ANSWER_H
#define PF_MODEL_SEG_ANSWER_H

#include <stddef.h>

#include "base/err.h"

typedef struct pf_seg_object {
    char *label;
    int loc[4];          /* y0 x0 y1 x1 as written: 0..9999 */
    int has_codes;       /* 16 <seg> tokens followed the locs */
    int codes[16];       /* 0..999 as written (valid only when has_codes) */
    int box_valid;       /* locs <= 1023, y1 > y0, x1 > x0 */
    int tokens_valid;    /* box_valid, 16 codes, each <= 127: the evaluator's rule for a mask */
} pf_seg_object;

/* Parse TEXT[0..LEN) (may hold NUL bytes: they end no token and are never part of one). *out is malloc'd
 * (pf_seg_objects_free), *n may be 0. Fails only on out of memory. */
int pf_seg_answer_parse(const char *text, size_t len, pf_seg_object **out, size_t *n, pf_err *err);
void pf_seg_objects_free(pf_seg_object *objs, size_t n);

#endif
