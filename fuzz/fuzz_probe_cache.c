/* libFuzzer: the precision probe's cache file parser (model/linear/precision_probe.h) on arbitrary text.
 * Run: build-fuzz/fuzz/fuzz_probe_cache -max_total_time=300 CORPUS_DIR (seed with a written
 * ~/.cache/paliflow/precision-probe.tsv) */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "model/linear/precision_probe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pf_probe_table t;
    pf_err err;
    /* "k" is the key a fuzzer can most easily produce; a found table must hold only checked values. */
    if (pf_probe_cache_parse((const char *)data, size, "k", &t, &err) == 1) {
        for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++)
            if (!isfinite(t.row[p].gflops) || t.row[p].gflops < 0 || !isfinite(t.row[p].rel_err) ||
                t.row[p].rel_err < 0)
                abort();
        pf_precision out;
        pf_probe_choose(&t, &out, NULL, 0, &err);
    }
    return 0;
}
