/* engine.h - the fast PaliGemma forward: oneDNN linear layers at fp32, bf16 or int8, ragged batches,
 * a paged KV cache, continuous-batching decode. Same results as the fp32 reference (model/ref/ref.h) up to
 * summation order at fp32; bf16 and int8 trade accuracy for speed (model/README.md has the figures).
 *
 * Objects, split by who may touch them:
 *   pf_engine      the converted weights (every linear layer incl. the 257k-row LM head, converted once at
 *                  load into oneDNN's preferred layout, fused q/k/v and gate/up), norms and position tables;
 *                  immutable, shared by all threads. Built from a model loaded with PF_MODEL_STORED_ONLY
 *                  (or a full one): it reads the stored tensors, then gives their pages back
 *                  (MADV_DONTNEED) so the checkpoint does not count twice in RSS. Token embeddings are read
 *                  from the stored (e.g. bf16) tensor, row by row.
 *   pf_engine_ctx  one per inference thread: oneDNN stream and primitive cache, activation scratch, the KV
 *                  page pool, the image-features cache. oneDNN and our loops use OpenMP on all cores.
 *   pf_engine_seq  one sequence's KV cache: pages of PF_ENGINE_PAGE tokens from the context's pool.
 *
 * Ragged batching: every row of a prefill batch is a sequence of its own (no padding anywhere): the linear
 * layers run once over all tokens of all rows, attention runs per row (tiled: no [heads, N, N] matrix),
 * all images of the batch go through the vision tower together, and an image seen before (same pixels,
 * by hash) reuses its features. Only the logits asked for are computed.
 */
#ifndef PF_MODEL_ENGINE_H
#define PF_MODEL_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/io/backend.h"
#include "model/io/model.h"
#include "model/linear/cpu.h"

#define PF_ENGINE_PAGE 64 /* tokens per KV page */

typedef struct pf_engine_params {
    pf_precision precision; /* AUTO: the best this CPU runs (pf_precision_resolve) */
    int threads;            /* OpenMP threads for oneDNN and our loops; 0 = all cores (or OMP_NUM_THREADS) */
    bool allow_ref;         /* accept oneDNN `ref:` kernels (slow) instead of failing */
} pf_engine_params;

typedef struct pf_engine pf_engine;
typedef struct pf_engine_ctx pf_engine_ctx;
typedef struct pf_engine_seq pf_engine_seq;

int pf_engine_create(const pf_model *m, const pf_engine_params *o, pf_engine **out, pf_err *err);
void pf_engine_free(pf_engine *e);
const pf_model *pf_engine_model(const pf_engine *e);
pf_precision pf_engine_precision(const pf_engine *e);

typedef struct pf_engine_stats {
    size_t weight_bytes;        /* all converted weights (+ scales, biases, norms, tables) */
    size_t decode_weight_bytes; /* read by one decode step: decoder layers + LM head */
    size_t vision_weight_bytes;
    double load_s;              /* pf_engine_create's wall time (conversion) */
    /* FLOPs (2 * M * N * K of the linear layers) of one image's vision tower + projector, and per text token
     * (decoder layers; the LM head counts per logits row). */
    double vision_flops_per_image, text_flops_per_token, lm_head_flops_per_row;
} pf_engine_stats;
void pf_engine_get_stats(const pf_engine *e, pf_engine_stats *st);

/* Every distinct linear shape of the engine (vision, text, LM head) at each of the given M: oneDNN's (or our
 * kernels') implementation, logged at debug level. Returns the number of `ref:` implementations found
 * (those are errors unless allow_ref), or -1 if a primitive could not be created. */
int pf_engine_check_impls(pf_engine_ctx *c, const int64_t *ms, int nm, pf_err *err);

/* GEMM rate (GFLOP/s, GOP/s for int8) of the engine's own linear layers over one prefill: the vision tower's
 * at m_vision rows, the decoder's at m_text rows (0 skips a tower), best of reps calls each, FLOP-weighted
 * by how often each runs (benchmarks). */
int pf_engine_gemm_rate(pf_engine_ctx *c, int64_t m_vision, int64_t m_text, int reps, double *gflops, pf_err *err);

int pf_engine_ctx_create(const pf_engine *e, pf_engine_ctx **out, pf_err *err);
void pf_engine_ctx_free(pf_engine_ctx *c);
const pf_engine *pf_engine_ctx_engine(const pf_engine_ctx *c);
/* Reserve KV pages for `tokens` tokens now (they are otherwise made as sequences need them and reused). */
int pf_engine_ctx_reserve_kv(pf_engine_ctx *c, size_t tokens, pf_err *err);
/* Bytes of KV pages made so far, and of the image-features cache. */
size_t pf_engine_ctx_kv_bytes(const pf_engine_ctx *c);
/* With PALIFLOW_ENGINE_PROFILE=1 the context times each kind of work (linear layers, attention, norms...):
 * log the shares so far (info) and start over. The same report is logged when the context is freed. */
void pf_engine_ctx_profile_report(pf_engine_ctx *c);
/* Image features kept for reuse (default 64 MB; 0 disables the cache). */
void pf_engine_ctx_set_image_cache(pf_engine_ctx *c, size_t bytes);
/* Image feature lookups that hit the cache, and vision tower runs (images computed). */
void pf_engine_ctx_image_stats(const pf_engine_ctx *c, size_t *hits, size_t *computed);

pf_engine_seq *pf_engine_seq_create(pf_engine_ctx *c, size_t capacity, pf_err *err);
void pf_engine_seq_free(pf_engine_ctx *c, pf_engine_seq *s);
size_t pf_engine_seq_len(const pf_engine_seq *s);
/* Make dst a copy of src's cache (benchmarks: decode batches of sequences with real prompt caches). */
int pf_engine_seq_copy(pf_engine_ctx *c, pf_engine_seq *dst, const pf_engine_seq *src, pf_err *err);

/* One row of a prefill batch. */
typedef struct pf_engine_row {
    const float *pixels;       /* [num_images][C][S][S] normalized, or NULL when num_images == 0 */
    int num_images;
    const int32_t *ids;        /* processor output: <image> x N per image, <bos>, prompt, "\n" (+ suffix) */
    size_t n;
    const int32_t *token_type; /* NULL: inference mask (whole row bidirectional); else prefix-LM training
                                * mask (token type 0 keys visible to all, the others causal) */
    pf_engine_seq *seq;        /* NULL, or an empty sequence that receives the row's K/V */
    /* Logits wanted: NULL = none; else logits [n_logit_rows][V] for positions logit_rows[] (NULL list: the
     * last position, n_logit_rows ignored). */
    float *logits;
    const size_t *logit_rows;
    size_t n_logit_rows;
    float *image_features;     /* optional out: [num_images][num_image_tokens][text hidden] */
} pf_engine_row;

/* Prefill n rows in one ragged batch (positions 1..n per row). */
int pf_engine_prefill(pf_engine_ctx *c, const pf_engine_row *rows, size_t n, pf_err *err);

/* One decode step: tokens[i] is appended to seqs[i]; logits [n][V]. Rows never interact. */
int pf_engine_decode(pf_engine_ctx *c, pf_engine_seq *const *seqs, const int32_t *tokens, size_t n, float *logits,
                     pf_err *err);

/* The generation backend: pf_generator_params{.backend = &pf_gen_backend_engine, .backend_arg = engine}. */
extern const pf_gen_backend pf_gen_backend_engine;

#endif
