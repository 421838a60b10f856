/* score.h - training-mode forward of one row with a suffix: per-token NLL and the loss transformers
 * computes from `labels` (README quirks 9 and 10), the basis for ranking answers and evaluating models. */
#ifndef PF_MODEL_SCORE_H
#define PF_MODEL_SCORE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/io/model.h"

#define PF_IGNORE_INDEX (-100)

/* One unpadded row of n tokens. token_type_ids: 0 on image + prefix, 1 on suffix (prefix-LM mask); NULL
 * scores with the inference mask (full attention). labels: target ids or -100.
 * token_nll [n-1]: NLL of labels[t+1] predicted at position t, 0 where that label is -100.
 * *nll_sum and *n_labels: sum and count over the labelled positions (loss = nll_sum / n_labels). */
int pf_score(const pf_model *m, const float *pixels, int num_images, const int32_t *ids,
             const int32_t *token_type_ids, const int32_t *labels, size_t n, float *token_nll, double *nll_sum,
             size_t *n_labels, pf_err *err);

/* The same through the fast engine (model/engine/engine.h): one ragged-batch row with the prefix-LM mask; logits
 * only at the labelled positions. */
struct pf_engine_ctx;
int pf_score_engine(struct pf_engine_ctx *c, const float *pixels, int num_images, const int32_t *ids,
                    const int32_t *token_type_ids, const int32_t *labels, size_t n, float *token_nll, double *nll_sum,
                    size_t *n_labels, pf_err *err);

/* Cross-entropy of one position: logsumexp(logits) - logits[label], in double. */
double pf_score_nll(const float *logits, size_t V, int32_t label);

#endif
