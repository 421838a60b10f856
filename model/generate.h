/* generate.h - generation as continuous batching: requests come and go between steps; every request
 * produces exactly the tokens it would produce alone (its own KV cache, its own RNG, rows never mix).
 *
 * The generation logic here (admission, sampling, stopping, bookkeeping) is separate from the compute,
 * which sits behind pf_gen_backend: the fp32 reference (model/ref.h) by default; a faster engine plugs
 * in the same four calls.
 */
#ifndef PF_MODEL_GENERATE_H
#define PF_MODEL_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/model.h"
#include "model/sample.h"

typedef struct pf_gen_request {
    const float *pixels; /* [num_images][C][S][S] normalized; NULL/0 if there are no <image> ids */
    int num_images;
    const int32_t *ids;  /* processor output incl. <image> x N, <bos>, prompt, "\n" */
    size_t n_ids;
    pf_sample_params params;
    uint64_t tag;        /* caller's id, echoed in the result */
} pf_gen_request;

typedef struct pf_gen_result {
    uint64_t tag;
    int32_t *ids;  /* new tokens, including a final eos when stopped by one */
    size_t n_ids;
    int stopped_by_eos;
    char *error;   /* NULL, or why this request failed (the others go on) */
    double prefill_s; /* this request's prefill (vision + prompt) */
    double decode_s;  /* wall time of the decode steps it took part in (shared with its batch) */
} pf_gen_result;

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

/* The fp32 reference backend (model/ref.h). */
extern const pf_gen_backend pf_gen_backend_ref;

typedef struct pf_generator_params {
    const pf_gen_backend *backend; /* NULL: the reference */
    void *backend_arg;             /* passed to backend->ctx_create */
    size_t max_active;             /* sequences decoding at once; 0: 64. Others wait in the queue. */
} pf_generator_params;

typedef struct pf_generator pf_generator;

int pf_generator_create(const pf_model *m, pf_generator **out, pf_err *err);
int pf_generator_create_params(const pf_model *m, const pf_generator_params *opts, pf_generator **out, pf_err *err);
void pf_generator_free(pf_generator *g);

/* Queue a request (inputs are copied). Fails (-1) for a request that can never run: no ids, ids outside
 * the vocabulary, <image> count != num_images * num_image_tokens, max_new_tokens < 1, too long. */
int pf_generator_submit(pf_generator *g, const pf_gen_request *req, pf_err *err);

/* One step: prefill newly admitted requests (in one ragged batch when the backend has prefill_batch;
 * sampling their first token), then one decode step for every sequence that was already running. *done receives a malloc'd array of the requests that finished
 * (n_done of them, possibly 0 with *done NULL): free it with pf_gen_results_free(*done, n_done).
 * Returns -1 only for failures of the generator itself; a failing request finishes with .error set. */
int pf_generator_step(pf_generator *g, pf_gen_result **done, size_t *n_done, pf_err *err);

/* Requests queued or running. */
size_t pf_generator_active(const pf_generator *g);

/* Run n requests to completion; out[i] is request i's result (free each with pf_gen_result_free).
 * A request refused by submit gets out[i].error and the others go on. The generator must be idle. */
int pf_generate(pf_generator *g, const pf_gen_request *reqs, size_t n, pf_gen_result *out, pf_err *err);

void pf_gen_result_free(pf_gen_result *r);            /* frees ids and error, not r itself */
void pf_gen_results_free(pf_gen_result *r, size_t n); /* frees each and the array */

#endif
