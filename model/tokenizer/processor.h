/* processor.h - the text side of transformers 4.47 PaliGemmaProcessor.__call__ (see
 * ../shared/golden/tokenizer/README.md, "Processor rules").
 *
 * If no prompt of the batch contains "<image>":
 *     "<image>" x (image_seq_len * num_images) + "<bos>" + prompt + "\n",  suffix -> suffix + "<eos>"
 * If any prompt contains "<image>" (num_images is then ignored and suffixes get no "<eos>"):
 *     every "<image>" -> "<image>" x image_seq_len, "<bos>" inserted after the last "<image>" (at 0 if
 *     none), then "\n".
 * The strings are tokenized as a pair (prompt string, suffix) without special tokens: token_type_ids are
 * 0 for the prompt and 1 for the suffix, labels are the ids with -100 where the type is 0. Batches are
 * padded to the longest row (pad id = "<pad>", attention 0, type 0, label -100).
 *
 * transformers raises TypeError for a single str suffix together with a prompt containing "<image>"; here
 * that case behaves like a batch of one (the suffix gets no "<eos>").
 */
#ifndef PF_MODEL_PROCESSOR_H
#define PF_MODEL_PROCESSOR_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/tokenizer/tokenizer.h"

/* Refuse rows with more image tokens than this (the longest real prompt is 4 x 4096). */
#define PF_PROC_MAX_IMAGE_TOKENS (1 << 20)

typedef struct pf_proc_row {
    pf_ids input_ids, token_type_ids, labels; /* the last two are empty when !has_suffix */
    int has_suffix;
} pf_proc_row;

/* prompt NULL is treated as "" (text=None); suffix NULL = no suffix. */
int pf_processor_build(const pf_tokenizer *tok, const char *prompt, const char *suffix, int image_seq_len,
                       int num_images, pf_proc_row *out, pf_err *err);
void pf_proc_row_free(pf_proc_row *row);

/* Strings with explicit lengths (they may contain NUL). s == NULL means "none". */
typedef struct pf_proc_text {
    const char *s;
    size_t len;
} pf_proc_text;

int pf_processor_build_n(const pf_tokenizer *tok, pf_proc_text prompt, pf_proc_text suffix, int image_seq_len,
                         int num_images, pf_proc_row *out, pf_err *err);

typedef enum { PF_PROC_PAD_LEFT = 0, PF_PROC_PAD_RIGHT = 1 } pf_proc_pad_side;

/* A padded batch: rows x cols, row-major. token_type_ids and labels are NULL without suffixes. */
typedef struct pf_proc_batch {
    size_t rows, cols;
    int has_suffix;
    int32_t *input_ids, *attention_mask, *token_type_ids, *labels;
} pf_proc_batch;

/* prompts[n]; suffixes NULL (none) or suffixes[n] (every .s non-NULL); num_images[n]. Padding "longest". */
int pf_processor_build_batch(const pf_tokenizer *tok, const pf_proc_text *prompts,
                             const pf_proc_text *suffixes, size_t n, int image_seq_len, const int *num_images,
                             pf_proc_pad_side side, pf_proc_batch *out, pf_err *err);
void pf_proc_batch_free(pf_proc_batch *b);

#endif
