/* libFuzzer: base64 (records' path_b64). Decoding arbitrary text never crashes; whatever decodes encodes back
 * to exactly the same text (one encoding per byte string), and any bytes round-trip through encode+decode.
 * Run: build-fuzz/fuzz/fuzz_base64 -max_total_time=120 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base64.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    uint8_t *raw;
    size_t n;
    if (pf_b64_decode(text, &raw, &n) == 0) {
        char *again = pf_b64_encode(raw, n);
        if (!again || strcmp(again, text) != 0)
            abort();
        free(again);
        free(raw);
    }
    char *enc = pf_b64_encode(data, size);
    if (!enc || pf_b64_decode(enc, &raw, &n) != 0 || n != size || memcmp(raw, data, size) != 0)
        abort();
    free(raw);
    free(enc);
    free(text);
    return 0;
}
