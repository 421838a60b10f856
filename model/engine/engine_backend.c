/* engine_backend.c - the engine behind the generator (pf_gen_backend_engine): ragged batched prefill of the
 * requests admitted in a step, batched decode of all running ones, KV caches from the context's page pool. */
#include <stdlib.h>

#include "model/engine/engine_internal.h"

/* Prompt tokens admitted into one batched prefill: bounds the activations (about 40 KB per token for a 3B
 * model, plus the MLP chunk) while keeping the matmuls large. */
#define MAX_PREFILL_TOKENS 4096

static void *eb_ctx_create(const pf_model *m, void *arg, pf_err *err)
{
    const pf_engine *e = arg;
    if (!e) {
        pf_errf(err, "engine backend: no engine given (pf_generator_params.backend_arg)");
        return NULL;
    }
    if (pf_engine_model(e) != m) {
        pf_errf(err, "engine backend: the engine was built for another model");
        return NULL;
    }
    pf_engine_ctx *c;
    return pf_engine_ctx_create(e, &c, err) == 0 ? c : NULL;
}

static void eb_ctx_free(void *ctx) { pf_engine_ctx_free(ctx); }

static void *eb_seq_create(void *ctx, size_t capacity, pf_err *err) { return pf_engine_seq_create(ctx, capacity, err); }

static void eb_seq_free(void *ctx, void *seq) { pf_engine_seq_free(ctx, seq); }

static int eb_prefill(void *ctx, void *seq, const float *pixels, int num_images, const int32_t *ids, size_t n,
                      float *logits, pf_err *err)
{
    pf_engine_seq *s = seq;
    s->len = 0; /* a retry after a failed batch starts over */
    pf_engine_row r = {.pixels = pixels, .num_images = num_images, .ids = ids, .n = n, .seq = s, .logits = logits};
    return pf_engine_prefill(ctx, &r, 1, err);
}

static int eb_prefill_batch(void *ctx, const pf_gen_prefill *items, size_t n, float *logits, pf_err *err)
{
    pf_engine_ctx *c = ctx;
    size_t V = (size_t)c->e->m->cfg.text.vocab_size;
    pf_engine_row *rows = calloc(n, sizeof *rows);
    if (!rows)
        return pf_errf(err, "prefill: out of memory");
    for (size_t i = 0; i < n; i++)
        rows[i] = (pf_engine_row){.pixels = items[i].pixels, .num_images = items[i].num_images, .ids = items[i].ids,
                                  .n = items[i].n, .seq = items[i].seq, .logits = logits + i * V};
    int rc = pf_engine_prefill(c, rows, n, err);
    free(rows);
    return rc;
}

static int eb_decode(void *ctx, void *const *seqs, const int32_t *tokens, size_t n, float *logits, pf_err *err)
{
    return pf_engine_decode(ctx, (pf_engine_seq *const *)seqs, tokens, n, logits, err);
}

const pf_gen_backend pf_gen_backend_engine = {
    .name = "engine",
    .ctx_create = eb_ctx_create,
    .ctx_free = eb_ctx_free,
    .seq_create = eb_seq_create,
    .seq_free = eb_seq_free,
    .prefill = eb_prefill,
    .prefill_batch = eb_prefill_batch,
    .decode = eb_decode,
    .max_tokens = (size_t)1 << 20,
    .max_prefill_tokens = MAX_PREFILL_TOKENS,
};
