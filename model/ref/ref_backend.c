/* ref_backend.c - the fp32 reference compute behind the generator (pf_gen_backend_ref). */
#include <stdlib.h>

#include "model/ref/ref.h"

typedef struct ref_ctx {
    const pf_model *m;
    pf_ref_scratch scratch;
} ref_ctx;

static void *ref_ctx_create(const pf_model *m, void *arg, pf_err *err)
{
    (void)arg;
    if (!m->has_f32) {
        pf_errf(err, "the reference backend needs the f32 weights (model loaded with PF_MODEL_STORED_ONLY)");
        return NULL;
    }
    ref_ctx *c = calloc(1, sizeof *c);
    if (!c)
        pf_errf(err, "out of memory");
    else
        c->m = m;
    return c;
}

static void ref_ctx_free(void *ctx)
{
    ref_ctx *c = ctx;
    if (!c)
        return;
    pf_ref_scratch_free(&c->scratch);
    free(c);
}

static void *ref_seq_create(void *ctx, size_t capacity, pf_err *err)
{
    ref_ctx *c = ctx;
    pf_ref_kv *kv = malloc(sizeof *kv);
    if (!kv) {
        pf_errf(err, "out of memory");
        return NULL;
    }
    if (pf_ref_kv_init(kv, c->m, capacity, err) != 0) {
        free(kv);
        return NULL;
    }
    return kv;
}

static void ref_seq_free(void *ctx, void *seq)
{
    (void)ctx;
    if (seq)
        pf_ref_kv_free(seq);
    free(seq);
}

static int ref_prefill(void *ctx, void *seq, const float *pixels, int num_images, const int32_t *ids, size_t n,
                       float *logits, pf_err *err)
{
    ref_ctx *c = ctx;
    size_t D = (size_t)c->m->cfg.text.hidden;
    float *hidden = malloc(sizeof(float) * n * D);
    if (!hidden)
        return pf_errf(err, "prefill: out of memory for %zu tokens", n);
    int rc = pf_ref_forward(c->m, pixels, num_images, ids, n, NULL, seq, hidden, NULL, err);
    if (rc == 0)
        pf_ref_logits(c->m, hidden + (n - 1) * D, 1, logits);
    free(hidden);
    return rc;
}

static int ref_decode(void *ctx, void *const *seqs, const int32_t *tokens, size_t n, float *logits, pf_err *err)
{
    ref_ctx *c = ctx;
    return pf_ref_decode(c->m, (pf_ref_kv *const *)seqs, tokens, n, logits, &c->scratch, err);
}

const pf_gen_backend pf_gen_backend_ref = {
    .name = "reference-fp32",
    .ctx_create = ref_ctx_create,
    .ctx_free = ref_ctx_free,
    .seq_create = ref_seq_create,
    .seq_free = ref_seq_free,
    .prefill = ref_prefill,
    .decode = ref_decode,
    .max_tokens = PF_REF_MAX_TOKENS,
};
