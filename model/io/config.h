/* config.h - a PaliGemma config.json, with transformers 4.47's defaults wherever a field is absent.
 *
 * Hub configs omit many fields (google/paligemma-3b-pt-224 has no head_dim, image_size, rope_theta...);
 * the defaults below are those of PaliGemmaConfig, SiglipVisionConfig, GemmaConfig and Gemma2Config.
 * Derived values follow PaliGemmaConfig.__init__: num_image_tokens = (image_size // patch_size)^2 and
 * vision projection_dim = top-level projection_dim; top-level vocab_size is unused (text_config's counts).
 * Every size is bounded (PF_CFG_MAX_*) so later allocations derived from it cannot overflow.
 */
#ifndef PF_MODEL_CONFIG_H
#define PF_MODEL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef enum { PF_TEXT_GEMMA = 1, PF_TEXT_GEMMA2 = 2 } pf_text_kind;

/* Activations a config may name. GELU_TANH covers gelu_pytorch_tanh, gelu_new and gelu_fast (the same
 * tanh formula); GELU is the exact erf form. */
typedef enum { PF_ACT_GELU_TANH = 1, PF_ACT_GELU = 2 } pf_act;

#define PF_CFG_MAX_EOS 16
/* Bounds on config sizes: far above any real model, low enough that products of a few of them fit
 * comfortably in 64 bits. */
#define PF_CFG_MAX_HIDDEN 65536
#define PF_CFG_MAX_INTERMEDIATE 1048576
#define PF_CFG_MAX_LAYERS 1024
#define PF_CFG_MAX_HEADS 1024
#define PF_CFG_MAX_HEAD_DIM 4096
#define PF_CFG_MAX_VOCAB 16777216
#define PF_CFG_MAX_IMAGE_SIZE 16384
#define PF_CFG_MAX_PATCHES 65536
#define PF_CFG_MAX_CHANNELS 16

typedef struct pf_vision_config {
    int hidden;          /* hidden_size (768) */
    int intermediate;    /* intermediate_size (3072) */
    int layers;          /* num_hidden_layers (12) */
    int heads;           /* num_attention_heads (12) */
    int head_dim;        /* hidden / heads (derived) */
    int patch_size;      /* patch_size (16) */
    int image_size;      /* image_size (224) */
    int channels;        /* num_channels (3) */
    int num_patches;     /* (image_size / patch_size)^2 (derived) */
    float layer_norm_eps;/* layer_norm_eps (1e-6) */
    pf_act act;          /* hidden_act ("gelu_pytorch_tanh") */
} pf_vision_config;

typedef struct pf_text_config {
    pf_text_kind kind;   /* model_type "gemma" | "gemma2" */
    int hidden;          /* hidden_size */
    int intermediate;    /* intermediate_size */
    int layers;          /* num_hidden_layers */
    int heads;           /* num_attention_heads */
    int kv_heads;        /* num_key_value_heads */
    int head_dim;        /* head_dim (256: NOT hidden/heads) */
    int vocab_size;      /* vocab_size */
    float rms_norm_eps;  /* rms_norm_eps (1e-6) */
    float rope_theta;    /* rope_theta (10000) */
    int max_position_embeddings; /* (8192); informational, positions beyond it are allowed */
    float attn_logit_softcapping;  /* gemma2: 50 (0 = off; JSON null = off) */
    float final_logit_softcapping; /* gemma2: 30 (0 = off) */
    float query_pre_attn_scalar;   /* gemma2: 256; gemma: attention scale comes from head_dim */
    int sliding_window;  /* gemma2: 4096 on even layers (0 = off) */
    pf_act act;          /* hidden_activation (absent -> gelu_pytorch_tanh; hidden_act is ignored) */
} pf_text_config;

typedef struct pf_config {
    pf_vision_config vision;
    pf_text_config text;
    int image_token_index;   /* (256000) */
    int num_image_tokens;    /* = vision.num_patches */
    int projection_dim;      /* (2048); must equal text.hidden */
    int bos_id, pad_id;      /* (2, 0) */
    int eos_ids[PF_CFG_MAX_EOS]; /* eos_token_id: int or list; generation_config.json overrides */
    int n_eos;
    int tie_word_embeddings; /* text_config.tie_word_embeddings (true) */
    int random_weights;      /* "paliflow_random_weights": true, set by make-random-checkpoint: output is noise */
} pf_config;

/* Parse config.json at PATH. If DIR/generation_config.json exists next to it, its eos_token_id is used
 * for stopping (that is what transformers' generate() reads). */
int pf_config_load(const char *config_json_path, pf_config *out, pf_err *err);
/* Parse config JSON text (what pf_config_load does after reading; name is used in messages). */
int pf_config_parse(const char *json, size_t len, const char *name, pf_config *out, pf_err *err);
/* Apply a generation_config.json text: eos_token_id (int or list) replaces out->eos_ids when present. */
int pf_config_parse_generation(const char *json, size_t len, const char *name, pf_config *out, pf_err *err);

/* True if id is one of the config's eos ids. */
int pf_config_is_eos(const pf_config *c, int32_t id);
/* Is decoder layer `layer` a sliding-window layer (Gemma 2: even layers, when sliding_window > 0)? */
int pf_config_layer_is_sliding(const pf_config *c, int layer);

#endif
