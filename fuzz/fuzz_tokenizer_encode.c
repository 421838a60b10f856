/* fuzz_tokenizer_encode: libFuzzer target for encode / decode / processor on the real PaliGemma tokenizer.
 *
 * The tokenizer is loaded once from $PALIFLOW_TOKENIZER (default: the build's BUILD/fixtures/tokenizer.json,
 * unpacked from fixtures/paligemma-tokenizer.tar.xz). For each input:
 *   byte 0 % 3 == 0: encode the rest as text. Invalid UTF-8 must be refused; valid text must give ids in
 *     range, and decode(encode(text)) must give the text back with U+2581 read as a space (a property of
 *     this tokenizer: its decoder undoes everything the encoder does except that replacement);
 *   == 1: decode the rest as little-endian int32 ids, with and without skip_special;
 *   == 2: processor: prompt and suffix cut from the rest, small image_seq_len / num_images.
 *
 *   cmake -S . -B build-fuzz -DPALIFLOW_FUZZ=ON -DCMAKE_C_COMPILER=clang-14 \
 *         -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined" -DBUILD_TESTING=OFF
 *   cmake --build build-fuzz -j2 --target fuzz_tokenizer_encode
 *   mkdir -p /tmp/corpus_enc && build-fuzz/fuzz/fuzz_tokenizer_encode -max_total_time=300 -max_len=8192 \
 *         -rss_limit_mb=2048 /tmp/corpus_enc
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer/processor.h"
#include "model/tokenizer/tokenizer.h"

static pf_tokenizer *g_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *path = getenv("PALIFLOW_TOKENIZER");
    if (!path)
        path = PF_TOKENIZER_FIXTURE;
    pf_err err;
    if (pf_tokenizer_load(path, &g_tok, &err) != 0) {
        fprintf(stderr, "fuzz_tokenizer_encode: %s (set PALIFLOW_TOKENIZER)\n", err.msg);
        abort();
    }
    return 0;
}

static void check_encode(const char *text, size_t len)
{
    pf_ids ids = {0};
    pf_err err;
    if (pf_tokenizer_encode(g_tok, text, len, &ids, &err) != 0) {
        if (!strstr(err.msg, "UTF-8"))
            abort(); /* the only way valid input may fail */
        pf_ids_free(&ids);
        return;
    }
    size_t vs = pf_tokenizer_vocab_size(g_tok);
    for (size_t i = 0; i < ids.n; i++)
        if (ids.v[i] < 0 || (size_t)ids.v[i] >= vs)
            abort();
    char *out;
    size_t olen;
    if (pf_tokenizer_decode(g_tok, ids.v, ids.n, 0, &out, &olen, &err) != 0)
        abort();
    /* expected: text with every U+2581 replaced by a space */
    char *want = malloc(len + 1);
    size_t w = 0;
    for (size_t i = 0; i < len;) {
        if (i + 3 <= len && memcmp(text + i, "\xE2\x96\x81", 3) == 0) {
            want[w++] = ' ';
            i += 3;
        } else {
            want[w++] = text[i++];
        }
    }
    if (olen != w || memcmp(out, want, w) != 0) {
        fprintf(stderr, "round trip differs: %zu bytes in, %zu bytes back\n", w, olen);
        abort();
    }
    free(want);
    free(out);
    pf_ids_free(&ids);
}

static void check_decode(const uint8_t *d, size_t n)
{
    size_t k = n / 4;
    int32_t *ids = malloc((k ? k : 1) * sizeof *ids);
    for (size_t i = 0; i < k; i++) {
        uint32_t v = (uint32_t)d[4 * i] | (uint32_t)d[4 * i + 1] << 8 | (uint32_t)d[4 * i + 2] << 16 |
                     (uint32_t)d[4 * i + 3] << 24;
        /* mostly ids near the special / byte / loc ranges, sometimes anything */
        ids[i] = (v >> 31) ? (int32_t)v : (int32_t)(v % 600 + ((v >> 20) & 1 ? 256800 : 0));
    }
    pf_err err;
    for (int skip = 0; skip <= 1; skip++) {
        char *out;
        size_t olen;
        if (pf_tokenizer_decode(g_tok, ids, k, skip, &out, &olen, &err) != 0)
            abort();
        if (out[olen] != '\0')
            abort();
        free(out);
    }
    free(ids);
}

static void check_processor(const uint8_t *d, size_t n)
{
    if (n < 3)
        return;
    int seq = d[0] % 5, nimg = d[1] % 3;
    size_t cut = n > 3 ? d[2] % (n - 2) : 0;
    pf_proc_text prompt = {(const char *)d + 3, cut}, suffix = {(const char *)d + 3 + cut, n - 3 - cut};
    if (d[0] & 0x80)
        suffix.s = NULL;
    pf_proc_row row;
    pf_err err;
    if (pf_processor_build_n(g_tok, prompt, suffix, seq, nimg, &row, &err) == 0) {
        if (row.has_suffix && (row.labels.n != row.input_ids.n || row.token_type_ids.n != row.input_ids.n))
            abort();
        pf_proc_row_free(&row);
    }
    pf_proc_text prompts[2] = {prompt, suffix.s ? suffix : prompt};
    int ni[2] = {nimg, 1};
    pf_proc_batch b;
    if (pf_processor_build_batch(g_tok, prompts, NULL, 2, seq, ni,
                                 (d[1] & 0x80) ? PF_PROC_PAD_RIGHT : PF_PROC_PAD_LEFT, &b, &err) == 0)
        pf_proc_batch_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    switch (data[0] % 3) {
    case 0:
        check_encode((const char *)data + 1, size - 1);
        break;
    case 1:
        check_decode(data + 1, size - 1);
        break;
    default:
        check_processor(data + 1, size - 1);
        break;
    }
    return 0;
}
