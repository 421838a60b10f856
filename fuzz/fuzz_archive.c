/* libFuzzer: the shard lister and member reader (pipeline/archive/archive.h) on arbitrary bytes: tar (and
 * whatever libarchive's gzip/bzip2/xz/zstd filters take in front of it) and zip. Every member it hands out
 * must have a name and key, a refusal or a name the name check accepts, an extra that is a JSON object; a
 * member read back never exceeds the byte limit. The first byte sets the limits (member bytes 1..256 KiB,
 * the member cap 1..256), so refusals by size and the cap are reached too.
 * Run: build-fuzz/fuzz/fuzz_archive -max_total_time=300 fuzz/corpus_archive (seeds: one byte of limits, then a
 * tar, tar.gz or zip with siblings, a traversal name, a symlink and a duplicate). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "pipeline/archive/archive.h"

typedef struct fuzz_ctx {
    size_t max;
} fuzz_ctx;

static void check_member(const pf_archive_member *m, const uint8_t *data, size_t n, void *arg)
{
    const fuzz_ctx *c = arg;
    char why[200];
    if (!m->name || !m->key || m->entry < 0)
        abort();
    if (!m->refused && pf_archive_check_name(m->name, why, sizeof why))
        abort();   /* a hostile name went through */
    if (m->extra) {
        json_t *j = json_loads(m->extra, 0, NULL);
        if (!json_is_object(j))
            abort();
        json_decref(j);
    }
    if (data && n > c->max)
        abort();   /* the byte limit did not hold */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    pf_log_set_level(PF_LOG_ERROR);   /* sibling problems are warnings */
    fuzz_ctx c = {(size_t)(data[0] & 0x0f) * 16384 + 1};
    pf_archive_limits lim = {c.max, (size_t)(data[0] >> 4) * 16 + 1, 4096};
    pf_err err;
    pf_archive_walk_memory(data + 1, size - 1, &lim, check_member, &c, &err);
    return 0;
}
