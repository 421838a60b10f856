/* ref.h - the fp32 reference forward of PaliGemma: SigLIP, projector, merge, Gemma / Gemma 2 decoder.
 *
 * Plain single-threaded C, readable top to bottom, exact to transformers 4.47 up to fp32 summation order
 * (every rule is in ../shared/golden/model/README.md; comments cite its quirk numbers). Attention is tiled
 * with an online softmax, so no [heads, N, N] score matrix is ever materialized.
 * Everything works on ONE row (one prompt, no padding): batched == unbatched by construction; a batch of
 * decode steps (pf_ref_decode) computes each row exactly as it would alone (bitwise).
 * Rows are bounded by PF_REF_MAX_TOKENS tokens.
 */
#ifndef PF_MODEL_REF_H
#define PF_MODEL_REF_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/io/backend.h"
#include "model/io/model.h"

#define PF_REF_MAX_TOKENS (1u << 17)

/* Optional observer of intermediate tensors (the golden "debug/" names without the prefix):
 * vision_embeddings, vision_layer_{i}, vision_post_layernorm, inputs_embeds, decoder_input,
 * decoder_layer_{i}, final_norm. data is [rows][cols], valid only during the call. */
typedef struct pf_ref_debug {
    void (*fn)(void *ctx, const char *name, const float *data, size_t rows, size_t cols);
    void *ctx;
} pf_ref_debug;

/* KV cache of one sequence: K and V of every layer for positions 0..len-1 (capacity cap).
 * Layout [layers][cap][kv_heads*head_dim]. RoPE is applied before caching (quirk 4). */
typedef struct pf_ref_kv {
    size_t cap, len;
    int layers, kv_dim;
    float *k, *v;
} pf_ref_kv;

int pf_ref_kv_init(pf_ref_kv *kv, const pf_model *m, size_t cap, pf_err *err);
void pf_ref_kv_free(pf_ref_kv *kv);

/* Reusable scratch buffers (grown on demand); one per thread. Zero-initialize, free with pf_ref_scratch_free. */
typedef struct pf_ref_scratch {
    float *buf[12];
    size_t cap[12];
} pf_ref_scratch;
void pf_ref_scratch_free(pf_ref_scratch *s);

/* image_features of one image: pixels [C][S][S] (normalized) -> out [num_image_tokens][text hidden]
 * = projector(SigLIP last_hidden_state) / sqrt(text hidden) (quirk 6, 13). */
int pf_ref_image_features(const pf_model *m, const float *pixels, float *out, const pf_ref_debug *dbg, pf_err *err);

/* Token embeddings with image features scattered at <image> positions, in order (quirk 6); before the
 * sqrt(hidden) normalizer. feats holds num_images * num_image_tokens rows; the number of <image> ids
 * must match exactly (with num_images == 0, <image> ids are embedded as ordinary tokens if in the vocab).
 * Fails on ids outside the vocabulary. */
int pf_ref_embed(const pf_model *m, const int32_t *ids, size_t n, const float *feats, int num_images, float *x,
                 pf_err *err);

/* The decoder over one row of n tokens at positions 1..n (quirk 7). x [n][D] holds pf_ref_embed's output
 * and receives the final-normed hidden states. token_type == NULL: inference mask (full attention over the
 * row, quirk 8); else training prefix-LM mask: key j visible to every query iff token_type[j] == 0, else
 * causal (quirk 9). If kv != NULL the layers' K/V are stored in it (kv->len becomes n; needs cap >= n). */
int pf_ref_decoder(const pf_model *m, float *x, size_t n, const int32_t *token_type, pf_ref_kv *kv,
                   const pf_ref_debug *dbg, pf_err *err);

/* logits [n][V] = h [n][D] . lm_head^T, with Gemma 2's final soft-cap (quirk 12). */
void pf_ref_logits(const pf_model *m, const float *h, size_t n, float *logits);

/* One row end to end: image features (pixels may be NULL if num_images == 0), merge, decoder.
 * hidden [n][D] receives the final-normed states (feed pf_ref_logits). */
int pf_ref_forward(const pf_model *m, const float *pixels, int num_images, const int32_t *ids, size_t n,
                   const int32_t *token_type, pf_ref_kv *kv, float *hidden, const pf_ref_debug *dbg,
                   pf_err *err);

/* One decode step for n sequences: token[i] is appended to kvs[i] (at position kvs[i]->len + 1) and
 * logits [n][V] receive the next-token logits. Rows never interact: each equals its solo result bitwise. */
int pf_ref_decode(const pf_model *m, pf_ref_kv *const *kvs, const int32_t *tokens, size_t n, float *logits,
                  pf_ref_scratch *s, pf_err *err);

/* ---- building blocks (ref_ops.c), exposed for tests and benchmarks ---- */

/* y[n][out] = x[n][in] . w[out][in]^T (+ b[out]). Each output element is computed by the same sequence of
 * float operations whatever n is, so rows are independent bitwise. */
void pf_ref_linear(float *y, const float *x, const float *w, const float *b, size_t n, size_t in, size_t out);

/* Attention mask and scaling for pf_ref_attention. */
typedef struct pf_ref_attn {
    int heads, kv_heads, head_dim;
    float scale;    /* multiplies q.k */
    float softcap;  /* > 0: tanh(s / c) * c after scaling (Gemma 2) */
    int window;     /* > 0: key j hidden from query i when j <= i - window (Gemma 2 sliding layers) */
    size_t n_bidir; /* keys [0, n_bidir) are visible to every query; later keys only to queries at or after them */
    const int32_t *token_type; /* if set, replaces n_bidir: key j visible to every query iff token_type[j] == 0 */
} pf_ref_attn;

/* Tiled attention with online softmax. q [nq][heads*hd] are the queries at key indices q0..q0+nq-1;
 * k, v: nk keys with row stride kv_stride floats; out [nq][heads*hd]. out may alias q.
 * work: pf_ref_attention_work_floats(head_dim) floats of tiles, or NULL to allocate them here (returns -1
 * only if that fails). */
int pf_ref_attention(const pf_ref_attn *a, const float *q, size_t nq, size_t q0, const float *k, const float *v,
                     size_t nk, size_t kv_stride, float *out, float *work);
size_t pf_ref_attention_work_floats(int head_dim);

void pf_ref_rmsnorm(float *y, const float *x, const float *w, size_t n, size_t d, float eps);
void pf_ref_layernorm(float *y, const float *x, const float *w, const float *b, size_t n, size_t d, float eps);
void pf_ref_gelu_tanh(float *x, size_t n);
void pf_ref_gelu_erf(float *x, size_t n);
/* Half-split RoPE in place on rows [n][heads*head_dim] at 1-indexed positions pos[i] (quirk 4). */
void pf_ref_rope(float *x, size_t n, int heads, int head_dim, const int64_t *pos, float theta);

/* Peak scratch floats pf_ref_image_features allocates for this config (the 896-px memory bound). */
size_t pf_ref_vision_scratch_floats(const pf_config *c);
/* Run ONE SigLIP encoder layer on x [P][Dv] in place (exposed for the memory test). */
int pf_ref_vision_layer(const pf_vision_config *vc, const pf_vision_layer_w *L, float *x, size_t P, pf_err *err);

/* The reference behind a generator (model/generate/generate.h: the default backend). */
extern const pf_gen_backend pf_gen_backend_ref;

#endif
