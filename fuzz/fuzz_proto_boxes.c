/* libFuzzer target: detection-box parsing of generated text (model/seg/boxes.c). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/seg/boxes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    pf_box *b = NULL;
    size_t n = 0;
    pf_err e;
    if (pf_boxes_parse(text, 640, 480, &b, &n, &e) == 0) {
        for (size_t i = 0; i < n; i++)
            if (b[i].x1 <= b[i].x0 || b[i].y1 <= b[i].y0 || b[i].x1 > 640 || b[i].y1 > 480 || !b[i].label)
                abort();
        pf_boxes_free(b, n);
    }
    free(text);
    return 0;
}
