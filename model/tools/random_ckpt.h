/* random_ckpt.h - random PaliGemma checkpoints with the real shapes and config, in the Hugging Face layout.
 *
 * So anyone can benchmark (and test the loader) without the real weights: config.json as transformers 4.47
 * save_pretrained writes it (only fields that differ from the defaults), generation_config.json,
 * model.safetensors or model-0000i-of-0000N.safetensors shards + model.safetensors.index.json, tensor names
 * language_model.model.*, vision_tower.vision_model.*, multi_modal_projector.* (lm_head tied, not stored).
 *
 * Values: deterministic in (seed, tensor name, element index) only, so the bytes do not depend on sharding
 * or threads. Approximately normal (Irwin-Hall sum of 4 uniforms, bounded at 3.5 sigma), scaled so
 * activations stay finite through all layers: linear weights std 1/sqrt(fan_in), embeddings std
 * 1/sqrt(hidden) (the model multiplies them by sqrt(hidden)), Gemma RMSNorm weights near 0 (Gemma uses 1+w),
 * SigLIP LayerNorm weights near 1, biases small. Written streaming: never the whole model in memory.
 */
#ifndef PF_MODEL_RANDOM_CKPT_H
#define PF_MODEL_RANDOM_CKPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/math/dtype.h"

typedef struct pf_rc_spec {
    char name[64];
    bool gemma2;
    /* text decoder */
    int64_t vocab, hidden, layers, heads, kv_heads, head_dim, intermediate;
    int64_t query_pre_attn_scalar, sliding_window; /* gemma2 */
    double attn_softcap, final_softcap;            /* gemma2 */
    /* vision tower */
    int64_t image_size, patch, v_hidden, v_layers, v_heads, v_intermediate;
    /* top level */
    int64_t projection_dim, image_token_index, top_vocab;
} pf_rc_spec;

/* Built-in shapes: the twelve published ones (PaliGemma 3B at 224/448/896; PaliGemma 2 3B/10B/28B at
 * 224/448/896) and two tiny test models ("tiny-gemma", "tiny-gemma2"). */
int pf_rc_spec_lookup(const char *name, pf_rc_spec *out, pf_err *err);
/* NULL-terminated list of the names pf_rc_spec_lookup knows. */
const char *const *pf_rc_spec_names(void);
/* Shrink a spec to a few-MB demo model keeping the real vocabulary, image size and patch size (so real
 * prompts and images work): text width `hidden` (default 8 when <= 0), 2 layers, 2 q heads / 1 kv head,
 * head_dim = hidden, MLP 4x; vision width 16, 2 layers, 2 heads, MLP 32. */
void pf_rc_spec_tiny(pf_rc_spec *s, int64_t hidden);
/* Sanity of a (possibly edited) spec: positive sizes, heads divide, patch divides image size... */
int pf_rc_spec_check(const pf_rc_spec *s, pf_err *err);

/* One tensor of the checkpoint. */
typedef struct pf_rc_tensor {
    char name[112];
    int ndim;
    int64_t shape[4];
    float mean, std;
} pf_rc_tensor;

/* All tensors, in the order they are written (language model, projector, vision tower). Caller frees. */
int pf_rc_tensors(const pf_rc_spec *s, pf_rc_tensor **out, size_t *count, pf_err *err);

/* config.json text (malloc'd, ends with a newline); NULL on out of memory. dtype names torch_dtype. */
char *pf_rc_config_json(const pf_rc_spec *s, pf_dtype dtype);

/* Value of element i of a tensor (what the writer stores before rounding to the file dtype). */
float pf_rc_value(uint64_t seed, const pf_rc_tensor *t, uint64_t i);

typedef struct pf_rc_params {
    uint64_t seed;
    uint64_t max_shard_bytes; /* 0 = 5 GB (5e9), as transformers' save_pretrained */
    bool f32;                 /* write F32 instead of BF16 */
    bool progress;            /* progress lines on stderr */
} pf_rc_params;

/* Write the checkpoint into out_dir (created if missing; files replaced atomically). */
int pf_rc_write(const pf_rc_spec *s, const char *out_dir, const pf_rc_params *o, pf_err *err);

#endif
