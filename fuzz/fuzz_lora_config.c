/* libFuzzer: the PEFT adapter_config.json parser (model/io/lora.h) on arbitrary text.
 * Run: build-fuzz/fuzz/fuzz_lora_config -max_total_time=300 CORPUS_DIR (seed with adapter_config.json files) */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/io/lora.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pf_lora_config c;
    pf_err err;
    if (pf_lora_config_parse((const char *)data, size, "adapter_config.json", &c, &err) == 0) {
        /* What the merge relies on: a rank in range, a finite scale, 1..64 non-empty target names. */
        if (c.r < 1 || c.r > PF_LORA_MAX_RANK || !isfinite(c.scale) || c.n_targets < 1 ||
            c.n_targets > PF_LORA_MAX_TARGETS)
            abort();
        for (int i = 0; i < c.n_targets; i++)
            if (!c.targets[i][0] || strlen(c.targets[i]) >= sizeof c.targets[i])
                abort();
        pf_lora_targets(&c, "language_model.model.layers.0.self_attn.q_proj");
    }
    return 0;
}
