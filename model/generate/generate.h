/* generate.h - generation as continuous batching: requests come and go between steps; every request
 * produces exactly the tokens it would produce alone (its own KV cache, its own RNG, rows never mix).
 *
 * The generation logic here (admission, sampling, stopping, bookkeeping) is separate from the compute,
 * which sits behind pf_gen_backend: the fp32 reference (model/ref/ref.h) by default; a faster engine plugs
 * in the same four calls.
 */
#ifndef PF_MODEL_GENERATE_H
#define PF_MODEL_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/io/model.h"
#include "model/generate/sample.h"
#include "model/io/backend.h"

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
