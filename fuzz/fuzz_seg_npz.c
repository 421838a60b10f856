/* libFuzzer target: the .npz / .npy readers (model/seg/npz.c, npy.c) and the mask decoder's checks of what
 * they give (decoder.c). Input byte 0 picks the path: even = a whole .npz archive (libarchive's zip reader,
 * member sizes, .npy headers, then the decoder's key/shape/finiteness checks), odd = one .npy buffer.
 * Invariants checked: a parsed array's payload lies inside its buffer and matches prod(shape) * itemsize.
 * Run: build-fuzz/fuzz/fuzz_seg_npz -max_total_time=300 -rss_limit_mb=2048 /tmp/c_npz fuzz/corpus_seg_npz
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/seg/decoder.h"
#include "model/seg/npy.h"
#include "model/seg/npz.h"

static void check_array(const pf_npy *a, const uint8_t *buf, size_t len)
{
    uint64_t count = 1;
    for (int i = 0; i < a->ndim; i++)
        count *= (uint64_t)a->shape[i];
    if (a->data < buf || a->data + a->nbytes != buf + len || count * (uint64_t)a->itemsize != a->nbytes ||
        (int64_t)count != a->count)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    pf_err e;
    if (data[0] & 1) {
        pf_npy a;
        if (pf_npy_parse(data + 1, size - 1, "fuzz", &a, &e) == 0)
            check_array(&a, data + 1, size - 1);
        return 0;
    }
    /* Small limits: the fuzzer explores the checks, not the allocator. */
    pf_npz_limits lim = {.max_members = 64, .max_member_bytes = 4u << 20, .max_total_bytes = 16u << 20};
    pf_npz z;
    if (pf_npz_read_memory(data + 1, size - 1, "fuzz.npz", &lim, &z, &e) == 0) {
        for (size_t i = 0; i < z.n; i++)
            check_array(&z.m[i].arr, z.m[i].bytes, z.m[i].len);
        pf_seg_decoder *d;
        if (pf_seg_decoder_from_npz(&z, "fuzz.npz", &d, &e) == 0)
            pf_seg_decoder_free(d);
        pf_npz_free(&z);
    }
    return 0;
}
