/* libFuzzer: the safetensors reader (header length, JSON, dtypes, shapes, offsets, overlaps) on arbitrary
 * bytes, then reading every accepted tensor, as the checkpoint loader does.
 * Run: build-fuzz/fuzz/fuzz_checkpoint_header -max_total_time=300 CORPUS_DIR */
#include <stdint.h>
#include <stdlib.h>

#include "model/io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pf_st_file f;
    pf_err err;
    if (pf_st_open_memory("fuzz.safetensors", data, size, &f, &err) != 0)
        return 0;
    for (size_t i = 0; i < f.count; i++) {
        const pf_st_tensor *t = &f.tensors[i];
        if (pf_st_find(&f, t->name) != t)
            abort();
        if (t->numel > (1u << 20))
            continue;
        float *fb = malloc((t->numel ? t->numel : 1) * sizeof(float));
        int64_t *ib = malloc((t->numel ? t->numel : 1) * sizeof(int64_t));
        if (fb && ib && pf_st_read_f32(t, fb, &err) != 0)
            pf_st_read_i64(t, ib, &err);
        free(fb);
        free(ib);
    }
    pf_st_close(&f);
    return 0;
}
