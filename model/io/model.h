/* model.h - a loaded PaliGemma checkpoint: config + weights, immutable after load and shareable between
 * threads.
 *
 * Weights are f32 for the reference path: F32 tensors point straight into the memory-mapped files
 * (no copy); BF16/F16 tensors are converted once into one arena. The mappings stay open, so a faster
 * engine can read the stored (e.g. bf16) bytes with pf_model_find_tensor().
 */
#ifndef PF_MODEL_MODEL_H
#define PF_MODEL_MODEL_H

#include <stddef.h>

#include "base/err.h"
#include "model/io/checkpoint.h"
#include "model/io/config.h"

/* Tensor-name layouts (README "Tensor-name layouts"). */
typedef enum {
    PF_LAYOUT_V1 = 1, /* language_model.model.*, vision_tower.vision_model.*, multi_modal_projector.* */
    PF_LAYOUT_V2 = 2  /* model.language_model.*, model.vision_tower.vision_model.*, ..., lm_head.weight */
} pf_layout;

/* One SigLIP encoder layer; Linear weights are [out, in] row-major as stored. */
typedef struct pf_vision_layer_w {
    const float *ln1_w, *ln1_b;
    const float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b;
    const float *ln2_w, *ln2_b;
    const float *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} pf_vision_layer_w;

/* One Gemma / Gemma 2 decoder layer (pre_ff_norm / post_ff_norm only for Gemma 2, else NULL). */
typedef struct pf_text_layer_w {
    const float *input_norm;
    const float *q, *k, *v, *o; /* [H*hd, D], [KV*hd, D], [KV*hd, D], [D, H*hd] */
    const float *post_attn_norm;
    const float *pre_ff_norm, *post_ff_norm;
    const float *gate, *up, *down; /* [I, D], [I, D], [D, I] */
} pf_text_layer_w;

typedef struct pf_model {
    pf_config cfg;
    int has_f32; /* 0: loaded with PF_MODEL_STORED_ONLY: the f32 pointers below are NULL (engine use only) */
    pf_checkpoint ckpt;
    pf_layout layout;
    float *arena; /* converted (non-F32 or unaligned) weights */
    size_t arena_floats;
    float **merged; /* LoRA-merged weights (model/io/lora.h): f32 tensors that replaced stored ones */
    size_t n_merged;
    /* SigLIP */
    const float *patch_w, *patch_b; /* [Dv, C, p, p], [Dv] */
    const float *pos_emb;           /* [P, Dv] */
    pf_vision_layer_w *vlayers;
    const float *post_ln_w, *post_ln_b;
    /* projector: Linear(Dv -> projection_dim) */
    const float *proj_w, *proj_b;
    /* Gemma */
    const float *embed; /* [V, D] */
    pf_text_layer_w *tlayers;
    const float *final_norm;
    const float *lm_head; /* [V, D]; == embed when tied */
} pf_model;

/* Load DIR (config.json + model.safetensors or sharded index). Checks every tensor's presence, dtype and
 * shape against the config and reports the first problem by name. */
int pf_model_load(const char *dir, pf_model **out, pf_err *err);

enum {
    /* Validate everything but convert nothing to f32: the fast engine reads the stored tensors itself
     * (pf_model_find_tensor), so a 3B BF16 checkpoint does not cost 11.7 GB of f32 copies it never uses.
     * The reference forward cannot run on such a model (has_f32 == 0). */
    PF_MODEL_STORED_ONLY = 1u << 0,
};
int pf_model_load_flags(const char *dir, unsigned flags, pf_model **out, pf_err *err);
/* Same, with a PEFT LoRA adapter folder (NULL: none) merged into the weights before they are checked and
 * converted (model/io/lora.h). */
int pf_model_load_adapter(const char *dir, const char *adapter, unsigned flags, pf_model **out, pf_err *err);
/* True if p points into one of the checkpoint's file mappings (false for LoRA-merged weights): only such
 * pages may be given back with MADV_DONTNEED. */
int pf_model_in_mapping(const pf_model *m, const void *p);
void pf_model_free(pf_model *m);
const pf_config *pf_model_config(const pf_model *m);
/* The stored tensor for a layout-independent name in the v1 spelling ("language_model.model.norm.weight");
 * maps to the v2 spelling when the checkpoint uses it. NULL if absent. */
const pf_st_tensor *pf_model_find_tensor(const pf_model *m, const char *v1_name);

#endif
