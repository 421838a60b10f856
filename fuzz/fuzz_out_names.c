/* libFuzzer: the names the output views make from image paths (pipeline/out_names.c pf_safe_component, used
 * for WebDataset sample keys and the sidecar tree's cut or odd components) on arbitrary bytes. Checks what the
 * views rely on to never write outside their folder or make a bad tar member: the name is never empty, never
 * "." or "..", holds no '/' and no NUL, no byte outside the allowed alphabet, and at most MAX bytes.
 * Run: build-fuzz/fuzz/fuzz_out_names -max_total_time=300 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/out_view.h"

static int allowed(unsigned char c, int keep_dot)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           (keep_dot && c == '.');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int keep_dot = data[0] & 1;
    size_t max = 1 + data[1] % 220;   /* the views use 40 and 200 */
    char out[256];
    pf_safe_component((const char *)data + 2, size - 2, keep_dot, max, out);
    size_t n = strlen(out);
    if (n == 0 || n > max || !strcmp(out, ".") || !strcmp(out, ".."))
        abort();
    for (size_t i = 0; i < n; i++)
        if (!allowed((unsigned char)out[i], keep_dot))
            abort();
    return 0;
}
