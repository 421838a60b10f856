#include "model/generate/score.h"

#include <math.h>
#include <stdlib.h>

#include "model/engine/engine.h"
#include "model/ref/ref.h"

double pf_score_nll(const float *logits, size_t V, int32_t label)
{
    double mx = logits[0];
    for (size_t i = 1; i < V; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    double s = 0;
    for (size_t i = 0; i < V; i++)
        s += exp((double)logits[i] - mx);
    return mx + log(s) - (double)logits[label];
}

int pf_score(const pf_model *m, const float *pixels, int num_images, const int32_t *ids,
             const int32_t *token_type_ids, const int32_t *labels, size_t n, float *token_nll, double *nll_sum,
             size_t *n_labels, pf_err *err)
{
    size_t D = (size_t)m->cfg.text.hidden, V = (size_t)m->cfg.text.vocab_size;
    *nll_sum = 0;
    *n_labels = 0;
    if (n == 0 || n > PF_REF_MAX_TOKENS)
        return pf_errf(err, "score: row of %zu tokens is outside [1, %u]", n, PF_REF_MAX_TOKENS);
    for (size_t t = 0; t < n; t++)
        if (labels[t] != PF_IGNORE_INDEX && (labels[t] < 0 || (size_t)labels[t] >= V))
            return pf_errf(err, "score: label %d at position %zu is neither -100 nor in [0, %zu)", labels[t], t, V);
    float *hidden = malloc(sizeof(float) * n * D), *logits = malloc(sizeof(float) * V);
    if (!hidden || !logits) {
        free(hidden);
        free(logits);
        return pf_errf(err, "score: out of memory for %zu tokens", n);
    }
    int rc = pf_ref_forward(m, pixels, num_images, ids, n, token_type_ids, NULL, hidden, NULL, err);
    /* Shift by one (quirk 10): position t predicts labels[t + 1]. Logits one row at a time, so a 257k
     * vocabulary never needs [n][V] floats. */
    for (size_t t = 0; rc == 0 && t + 1 < n; t++) {
        int32_t lab = labels[t + 1];
        token_nll[t] = 0;
        if (lab == PF_IGNORE_INDEX)
            continue;
        pf_ref_logits(m, hidden + t * D, 1, logits);
        double nll = pf_score_nll(logits, V, lab);
        token_nll[t] = (float)nll;
        *nll_sum += nll;
        (*n_labels)++;
    }
    free(hidden);
    free(logits);
    return rc;
}

int pf_score_engine(struct pf_engine_ctx *c, const float *pixels, int num_images, const int32_t *ids,
                    const int32_t *token_type_ids, const int32_t *labels, size_t n, float *token_nll, double *nll_sum,
                    size_t *n_labels, pf_err *err)
{
    const pf_model *m = pf_engine_model(pf_engine_ctx_engine(c));
    size_t V = (size_t)m->cfg.text.vocab_size;
    *nll_sum = 0;
    *n_labels = 0;
    if (n == 0 || n > PF_REF_MAX_TOKENS)
        return pf_errf(err, "score: row of %zu tokens is outside [1, %u]", n, PF_REF_MAX_TOKENS);
    size_t *rows = malloc(n * sizeof *rows), nr = 0;
    if (!rows)
        return pf_errf(err, "score: out of memory");
    for (size_t t = 0; t + 1 < n; t++) {
        token_nll[t] = 0;
        if (labels[t + 1] == PF_IGNORE_INDEX)
            continue;
        if (labels[t + 1] < 0 || (size_t)labels[t + 1] >= V) {
            free(rows);
            return pf_errf(err, "score: label %d at position %zu is neither -100 nor in [0, %zu)", labels[t + 1],
                           t + 1, V);
        }
        rows[nr++] = t;
    }
    float *logits = malloc((nr ? nr : 1) * V * sizeof(float));
    if (!logits) {
        free(rows);
        return pf_errf(err, "score: out of memory for %zu x %zu logits", nr, V);
    }
    pf_engine_row r = {.pixels = pixels, .num_images = num_images, .ids = ids, .n = n,
                       .token_type = token_type_ids, .logits = nr ? logits : NULL, .logit_rows = rows,
                       .n_logit_rows = nr};
    int rc = pf_engine_prefill(c, &r, 1, err);
    for (size_t i = 0; rc == 0 && i < nr; i++) { /* quirk 10: position t predicts labels[t + 1] */
        double nll = pf_score_nll(logits + i * V, V, labels[rows[i] + 1]);
        token_nll[rows[i]] = (float)nll;
        *nll_sum += nll;
        (*n_labels)++;
    }
    free(rows);
    free(logits);
    return rc;
}
