/* libFuzzer: config.json (with transformers' defaults and bounds), generation_config.json and
 * model.safetensors.index.json parsers on arbitrary text.
 * Run: build-fuzz/fuzz/fuzz_config -max_total_time=300 CORPUS_DIR (seed with golden config.json files) */
#include <stdint.h>
#include <stdlib.h>

#include "model/io/checkpoint.h"
#include "model/io/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pf_config c;
    pf_err err;
    if (pf_config_parse((const char *)data, size, "config.json", &c, &err) == 0) {
        /* Accepted configs must be internally consistent: what the loader and forward rely on. */
        if (c.text.heads % c.text.kv_heads != 0 || c.text.head_dim % 2 != 0 || c.vision.hidden % c.vision.heads != 0 ||
            c.num_image_tokens != c.vision.num_patches || c.num_image_tokens > PF_CFG_MAX_PATCHES ||
            c.projection_dim != c.text.hidden || c.n_eos < 1 || c.n_eos > PF_CFG_MAX_EOS)
            abort();
        for (int i = 0; i < c.n_eos; i++)
            if (c.eos_ids[i] < 0 || c.eos_ids[i] >= c.text.vocab_size)
                abort();
        pf_config_parse_generation((const char *)data, size, "generation_config.json", &c, &err);
    }
    pf_ckpt_index ix;
    if (pf_ckpt_index_parse((const char *)data, size, "index.json", &ix, &err) == 0)
        pf_ckpt_index_free(&ix);
    return 0;
}
