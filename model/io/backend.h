/* backend.h - the compute contract behind a generator (model/generate/generate.h): the fp32 reference
 * (model/ref/ref.h: pf_gen_backend_ref) and the fast engine (model/engine/engine.h: pf_gen_backend_engine)
 * each implement these calls over a loaded model.
 *
 * Why it lives in io/: both backends sit above the loaded model and below generation. Declaring the contract
 * next to pf_model lets ref/ and engine/ implement it without including generate/ (which includes them).
 */
#ifndef PF_MODEL_IO_BACKEND_H
#define PF_MODEL_IO_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/io/model.h"

/* One prompt to prefill (pf_gen_backend.prefill_batch). */
typedef struct pf_gen_prefill {
    void *seq;           /* from seq_create; empty */
    const float *pixels; /* [num_images][C][S][S] or NULL */
    int num_images;
    const int32_t *ids;
    size_t n;
} pf_gen_prefill;

/* The compute behind a generator. `ctx` is per generator (scratch), `seq` per sequence (KV cache). */
typedef struct pf_gen_backend {
    const char *name;
    /* arg: pf_generator_params.backend_arg (e.g. the engine's converted weights); NULL for the reference. */
    void *(*ctx_create)(const pf_model *m, void *arg, pf_err *err);
    void (*ctx_free)(void *ctx);
    /* A sequence able to hold `capacity` tokens (prompt + generated). */
    void *(*seq_create)(void *ctx, size_t capacity, pf_err *err);
    void (*seq_free)(void *ctx, void *seq);
    /* Run the prompt (inference mask, positions 1..n) and write the last position's logits [V]. */
    int (*prefill)(void *ctx, void *seq, const float *pixels, int num_images, const int32_t *ids, size_t n,
                   float *logits, pf_err *err);
    /* Optional: prefill several prompts in one ragged batch; logits [n][V] (each prompt's last position).
     * Each prompt must give what prefill gives it alone (within the engine's rounding). On failure the
     * generator retries the prompts one by one, so one bad prompt does not fail the others. */
    int (*prefill_batch)(void *ctx, const pf_gen_prefill *items, size_t n, float *logits, pf_err *err);
    /* Append tokens[i] to seqs[i] for i < n; logits [n][V]. */
    int (*decode)(void *ctx, void *const *seqs, const int32_t *tokens, size_t n, float *logits, pf_err *err);
    size_t max_tokens;         /* longest prompt + generation a sequence may hold */
    size_t max_prefill_tokens; /* prompt tokens admitted into one prefill_batch (0: no limit); a longer
                                * prompt still runs, alone */
} pf_gen_backend;

#endif
