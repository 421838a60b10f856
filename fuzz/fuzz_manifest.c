/* libFuzzer: the manifest reader (pipeline/manifest.h) on arbitrary bytes, in each format. The first byte
 * picks the format (auto, JSONL, CSV, TSV); the rest is the file. Every item it accepts must hold a path, at
 * most PF_MANIFEST_MAX_PROMPTS non-empty prompts and a meta that is a JSON object; a bad line never stops it.
 * Run: build-fuzz/fuzz/fuzz_manifest -max_total_time=300 CORPUS_DIR */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "pipeline/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;   /* fmemopen refuses an empty buffer; the empty manifest is a unit test case */
    pf_log_set_level(PF_LOG_ERROR);   /* bad lines are warnings: keep the fuzzer's output readable */
    static const pf_manifest_format fmts[4] = {PF_MANIFEST_AUTO, PF_MANIFEST_JSONL, PF_MANIFEST_CSV,
                                               PF_MANIFEST_TSV};
    pf_manifest_format fmt = fmts[data[0] & 3];
    FILE *f = fmemopen((void *)(data + 1), size - 1, "r");
    if (!f)
        return 0;
    pf_manifest *m = NULL;
    pf_err err;
    if (pf_manifest_open_stream(f, "fuzz.manifest", (data[0] & 4) ? "/dir" : NULL, fmt, &m, &err) == 0) {
        pf_manifest_item it;
        int r;
        while ((r = pf_manifest_next(m, &it, &err)) == 1) {
            if (!it.path || !it.path[0] || it.n_prompts > PF_MANIFEST_MAX_PROMPTS)
                abort();
            for (size_t i = 0; i < it.n_prompts; i++)
                if (!it.prompts[i] || !it.prompts[i][0])
                    abort();
            if (it.meta) {
                json_t *j = json_loads(it.meta, 0, NULL);
                if (!json_is_object(j))
                    abort();
                json_decref(j);
            }
        }
        if (r < 0)
            abort();   /* a memory stream has no read errors */
        pf_manifest_close(m);
    }
    fclose(f);
    return 0;
}
