/* annotate.h - one image + one prompt -> a generation request -> text.
 *
 * The single code path shared by `paliflow generate` and the pipeline's inference stage, so both give
 * the same token ids and text for the same image, prompt and model (issue 12):
 *   prompt -> PaliGemmaProcessor ids ("<image>" x num_image_tokens, "<bos>", prompt, "\n")
 *   -> pf_gen_request (pixels of one image) -> generator -> new ids
 *   -> decode(new ids, skip_special_tokens=True).
 */
#ifndef PF_MODEL_ANNOTATE_H
#define PF_MODEL_ANNOTATE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/io/config.h"
#include "model/generate/generate.h"
#include "model/tokenizer/processor.h"
#include "model/tokenizer/tokenizer.h"

typedef struct pf_annot_input {
    pf_proc_row row;    /* the processor's output; owns the ids req points to */
    pf_gen_request req; /* ready to submit (the generator copies what it needs) */
} pf_annot_input;

/* Build the request for one image (pixels [3][S][S], normalized, S = cfg->vision.image_size) and prompt. */
int pf_annot_prepare(const pf_tokenizer *tok, const pf_config *cfg, const char *prompt, const float *pixels,
                     const pf_sample_params *params, uint64_t tag, pf_annot_input *out, pf_err *err);
void pf_annot_input_free(pf_annot_input *in);

/* The text of generated ids, special tokens skipped (malloc'd; may contain NUL bytes: use *len). */
int pf_annot_text(const pf_tokenizer *tok, const int32_t *ids, size_t n, char **text, size_t *len, pf_err *err);

#endif
