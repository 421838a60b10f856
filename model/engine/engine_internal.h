/* engine_internal.h - what the engine_*.c files share (not a public API). */
#ifndef PF_MODEL_ENGINE_INTERNAL_H
#define PF_MODEL_ENGINE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "model/engine/engine.h"
#include "model/linear/mm.h"
#include "model/io/safetensors.h"

/* ---- weights (engine_load.c) ---- */

typedef struct eng_vlayer {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    pf_linear *qkv, *o, *fc1, *fc2; /* qkv: q, k, v stacked (with biases) */
} eng_vlayer;

typedef struct eng_tlayer {
    /* Gemma RMSNorm weights as (1 + w) */
    const float *in_norm, *post_attn_norm, *pre_ff_norm, *post_ff_norm; /* the last two: Gemma 2 only */
    pf_linear *qkv, *o, *gu, *down; /* qkv: q, k, v stacked; gu: gate, up stacked */
} eng_tlayer;

struct pf_engine {
    const pf_model *m;
    pf_mm_engine *mm;
    pf_precision prec;
    int threads; /* 0: OpenMP's default */
    /* vision */
    pf_linear *patch, *proj;
    const float *pos_emb, *post_ln_w, *post_ln_b;
    eng_vlayer *v;
    /* text */
    eng_tlayer *t;
    const float *final_norm; /* (1 + w) */
    pf_linear *lm_head;
    const pf_st_tensor *embed; /* stored [V][D], read row by row */
    float embed_scale;         /* sqrt(hidden) (quirk 1) */
    float *rope_inv;           /* [head_dim / 2] inverse frequencies, as the reference computes them */
    float *f32;                /* arena of the small f32 tensors above */
    size_t f32_floats;
    pf_engine_stats st;
};

/* ---- elementwise ops (engine_ops.c), vectorized, rows split across OpenMP threads ---- */

/* Per row i < n: if t: x += post ? rmsnorm(t, post) : t;  then if h: h = rmsnorm(x, w). Weights are (1 + w).
 * Strides in floats. */
void pf_eng_residual_norm(float *x, size_t ldx, const float *t, size_t ldt, const float *post, float *h, size_t ldh,
                          const float *w, size_t n, size_t d, float eps);
/* y = LayerNorm(x) * w + b per row (biased variance, sums in double). y may be x. */
void pf_eng_layernorm(float *y, const float *x, const float *w, const float *b, size_t n, size_t d, float eps);
/* gelu_pytorch_tanh in place over n floats. */
void pf_eng_gelu_tanh(float *x, size_t n);
void pf_eng_gelu_erf(float *x, size_t n);
/* a[i][j] = act(gu[i][j]) * gu[i][I + j] for i < n, j < I (gu rows of 2I floats). */
void pf_eng_gelu_mul(float *a, const float *gu, size_t n, size_t I, int erf_form);
/* x = tanh(x / cap) * cap over n floats. */
void pf_eng_softcap(float *x, size_t n, float cap);
/* Half-split RoPE (quirk 4) in place on rows x[i] (stride ld) holding `heads` heads of head_dim at 1-indexed
 * positions pos[i]: cos/sin from inv[head_dim/2] like the reference. */
void pf_eng_rope(float *x, size_t ld, size_t n, int heads, int head_dim, const int64_t *pos, const float *inv);
/* f32 rows of a stored [V][D] tensor (BF16/F16/F32) times scale. */
void pf_eng_embed_rows(const pf_st_tensor *t, const int32_t *ids, size_t n, size_t d, float scale, float *out,
                       size_t ldo);

/* Vectorizable helpers (engine_math.h) are inline; these are the scalar references used by tests. */
float pf_eng_tanh1(float x);
float pf_eng_exp1(float x);

/* ---- attention (engine_attn.c) ---- */

typedef struct eng_attn {
    int heads, kv_heads, head_dim;
    float scale, softcap;
    int window; /* > 0: key j hidden from query i when j <= i - window */
} eng_attn;

/* One row (sequence) of a prefill: queries and keys are the same n tokens. */
typedef struct eng_attn_row {
    const float *q, *k, *v; /* row 0 of each; strides ldq / ldkv floats */
    float *out;             /* [n][heads * head_dim], stride ldo */
    size_t n;
    const int32_t *token_type; /* NULL: every key visible (bidirectional); else prefix-LM */
} eng_attn_row;

/* Scratch floats one thread needs for pf_eng_attn_prefill at this head_dim. */
size_t pf_eng_attn_prefill_work(int head_dim);
/* All rows, all heads, split across the OpenMP threads; work: nthreads * pf_eng_attn_prefill_work floats. */
void pf_eng_attn_prefill(const eng_attn *a, const eng_attn_row *rows, size_t nrows, size_t ldq, size_t ldkv,
                         size_t ldo, float *work, int nthreads);

/* ---- KV pages (engine_kv.c) ---- */

typedef struct eng_kvpool {
    size_t page_floats;  /* layers * 2 * PAGE * kv_dim */
    size_t layer_floats; /* 2 * PAGE * kv_dim: K block then V block */
    size_t kv_dim;
    float **free_pages;
    size_t n_free, cap_free;
    void **chunks;
    size_t *chunk_bytes;
    size_t n_chunks, cap_chunks;
    size_t pages_made;
} eng_kvpool;

struct pf_engine_seq {
    size_t cap, len;
    size_t npages;
    float **pages;
};

int pf_eng_kvpool_init(eng_kvpool *p, const pf_engine *e);
void pf_eng_kvpool_free(eng_kvpool *p);
int pf_eng_kvpool_grow(eng_kvpool *p, size_t pages, pf_err *err);
/* K row of token t at layer l (V row: + PAGE * kv_dim). */
static inline float *pf_eng_kv_k(const eng_kvpool *p, const pf_engine_seq *s, int l, size_t t)
{
    return s->pages[t / PF_ENGINE_PAGE] + (size_t)l * p->layer_floats + (t % PF_ENGINE_PAGE) * p->kv_dim;
}

/* Decode attention: query rows q[i] (stride ldq) of sequence seqs[i] at key index len_i (its K/V already
 * written at that index); out rows stride ldo. Split across OpenMP threads by (sequence, kv head). */
void pf_eng_attn_decode(const eng_attn *a, const eng_kvpool *p, int layer, pf_engine_seq *const *seqs,
                        const float *q, size_t ldq, float *out, size_t ldo, size_t n, float *work,
                        size_t work_per_thread);
size_t pf_eng_attn_decode_work(const eng_attn *a, size_t max_len);

/* Decode attention's inner loops for this CPU (engine_attn_kernels.c): s[h][j] = scale * q_h . k_j and
 * o_h += sum_j p[h][j] v_j for h < g query heads (rows ldq / ldp apart; o rows hd apart), nk keys kv_dim
 * apart. */
typedef void (*pf_eng_scores_fn)(const float *q, size_t ldq, int g, int hd, const float *k, size_t kv_dim,
                                 size_t nk, float scale, float *s, size_t lds);
typedef void (*pf_eng_values_fn)(const float *p, size_t ldp, int g, int hd, const float *v, size_t kv_dim,
                                 size_t nk, float *o);
void pf_eng_attn_kernels(pf_eng_scores_fn *scores, pf_eng_values_fn *values);

/* ---- image-features cache (engine_imgcache.c) ---- */

typedef struct eng_img_entry {
    uint64_t h[2];
    float *feats;
    size_t floats;
    uint64_t last_use;
} eng_img_entry;

typedef struct eng_imgcache {
    eng_img_entry *v;
    size_t n, cap;
    size_t bytes, limit;
    uint64_t clock;
    size_t hits, computed;
} eng_imgcache;

void pf_eng_imgcache_hash(const float *pixels, size_t floats, uint64_t h[2]);
const float *pf_eng_imgcache_get(eng_imgcache *c, const uint64_t h[2], size_t floats);
void pf_eng_imgcache_put(eng_imgcache *c, const uint64_t h[2], const float *feats, size_t floats);
void pf_eng_imgcache_free(eng_imgcache *c);

/* ---- per-thread context ---- */

enum { SCR_X, SCR_H, SCR_QKV, SCR_ATT, SCR_MLP, SCR_ACT, SCR_T, SCR_POS, SCR_ATTN_WORK, SCR_LOGIT_IN, SCR_IDS,
       SCR_PATCH, SCR_FEATS, SCR_COUNT };

/* Time per kind of work, when PALIFLOW_ENGINE_PROFILE is set (printed when the context is freed). */
enum { PROF_VISION_LIN, PROF_VISION_ATTN, PROF_VISION_OTHER, PROF_EMBED, PROF_NORM, PROF_QKV, PROF_ROPE_KV,
       PROF_ATTN, PROF_O, PROF_GATE_UP, PROF_ACT, PROF_DOWN, PROF_LM_HEAD, PROF_COUNT };

struct pf_engine_ctx {
    const pf_engine *e;
    int profile;
    double prof[PROF_COUNT];
    double prof_t; /* start of the current interval */
    pf_mm_ctx *mm;
    int nthreads;
    void *scr[SCR_COUNT];
    size_t scr_cap[SCR_COUNT];
    bool scr_mapped[SCR_COUNT];
    eng_kvpool kv;
    eng_imgcache img;
};

/* Charge the time since the last mark to kind k (no-op unless profiling). */
void pf_eng_prof_mark(pf_engine_ctx *c, int k);

/* Scratch buffer i with at least bytes (64-byte aligned, contents not kept when it grows; large ones are
 * anonymous mappings with transparent huge pages: first-touch faults are a measurable cost of a fresh
 * context, 512 times fewer with 2 MB pages). */
void *pf_eng_scratch(pf_engine_ctx *c, int i, size_t bytes, pf_err *err);

/* The vision tower + projector + 1/sqrt(hidden) for nimg images: feats[i] receives [N][D_text]. */
int pf_eng_vision(pf_engine_ctx *c, const float *const *pixels, size_t nimg, float *const *feats, pf_err *err);

/* Decoder layers over a ragged batch (engine_text.c). */
int pf_eng_text_prefill(pf_engine_ctx *c, const pf_engine_row *rows, size_t nrows, const float *const *row_feats,
                        pf_err *err);

#endif
