/* lora.h - PEFT LoRA adapters merged into a checkpoint's weights at load.
 *
 * A PEFT adapter folder (what `peft` save_pretrained writes and what most published PaliGemma fine-tunes are):
 *   adapter_config.json        {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj",
 *                               ...], "use_rslora": false, ...}
 *   adapter_model.safetensors  base_model.model.<module>.lora_A.weight [r, in] and .lora_B.weight [out, r] for
 *                              every adapted Linear <module> (e.g. language_model.model.layers.3.self_attn.q_proj)
 * Each adapted weight becomes W + scale * B A, scale = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora),
 * computed in f32 from the stored W (any float dtype) BEFORE the engine converts it to its precision, exactly
 * as peft's merge_and_unload() would give a merged checkpoint. Module names may use either transformers
 * layout (language_model.model.* or model.language_model.*), whatever the checkpoint's.
 *
 * Refused, by name: anything merging would get wrong or silently ignore: DoRA (use_dora), fan_in_fan_out,
 * bias != "none", lora_bias, modules_to_save, per-module rank_pattern / alpha_pattern, a regex target_modules string,
 * peft_type other than LORA; a tensor whose module is not in target_modules, an A without its B, a base
 * weight missing from the checkpoint, shapes that do not match it.
 */
#ifndef PF_MODEL_LORA_H
#define PF_MODEL_LORA_H

#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"

#define PF_LORA_MAX_TARGETS 64
#define PF_LORA_MAX_RANK 4096
#define PF_LORA_MAX_CONFIG_BYTES (1u << 20)

typedef struct pf_lora_config {
    int r;
    double alpha;
    bool rslora;
    int n_targets;
    char targets[PF_LORA_MAX_TARGETS][64];
    double scale; /* alpha / r, or alpha / sqrt(r) */
} pf_lora_config;

/* adapter_config.json text -> config; name is used in messages. */
int pf_lora_config_parse(const char *json, size_t len, const char *name, pf_lora_config *out, pf_err *err);

/* True if module path `module` (e.g. "...layers.0.self_attn.q_proj") is one target_modules names: equal to
 * an entry or ending in "." + entry (peft's rule for a list). */
bool pf_lora_targets(const pf_lora_config *c, const char *module);

struct pf_model;
/* Merge the adapter in DIR into m's stored tensors (pf_model_load_adapter calls it before the tensors are
 * checked against the config): each adapted tensor is replaced by an f32 copy owned by m. */
int pf_lora_merge(struct pf_model *m, const char *dir, pf_err *err);

#endif
