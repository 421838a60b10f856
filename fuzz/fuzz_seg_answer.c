/* libFuzzer target: segment / detect answer parsing (model/seg/answer.c), the objects JSON without a decoder
 * (objects.c) and the mask window and RLE of any box (mask.c, rle.c) on a small image.
 * Invariants: every object's locs and codes fit their token widths, validity follows the stated rule, the
 * pixel window lies inside the image, and an RLE decodes back to the window it was made from.
 * Run: build-fuzz/fuzz/fuzz_seg_answer -max_total_time=300 /tmp/c_ans fuzz/corpus_seg_answer
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/seg/answer.h"
#include "model/seg/mask.h"
#include "model/seg/objects.h"
#include "model/seg/rle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pf_seg_object *o;
    size_t n;
    pf_err e;
    const char *text = (const char *)data;
    if (pf_seg_answer_parse(text, size, &o, &n, &e))
        return 0;
    int W = 37, H = 23;
    for (size_t i = 0; i < n; i++) {
        const int *l = o[i].loc;
        if (!o[i].label)
            abort();
        for (int k = 0; k < 4; k++)
            if (l[k] < 0 || l[k] > 9999)
                abort();
        int valid = l[0] <= 1023 && l[1] <= 1023 && l[2] <= 1023 && l[3] <= 1023 && l[2] > l[0] && l[3] > l[1];
        if (valid != o[i].box_valid || (o[i].tokens_valid && (!valid || !o[i].has_codes)))
            abort();
        int win[4];
        if (pf_seg_window(l, W, H, win)) {
            if (win[0] < 0 || win[1] < 0 || win[2] > H || win[3] > W)
                abort();
            /* A checkerboard in the window, through RLE and back. */
            int ww = win[3] - win[1], wh = win[2] - win[0];
            uint8_t *m = malloc((size_t)ww * wh);
            for (int k = 0; k < ww * wh; k++)
                m[k] = (uint8_t)((k + k / ww) & 1);
            pf_rle r;
            uint8_t *back;
            if (pf_rle_from_window(W, H, win[1], win[0], ww, wh, m, &r, &e) || pf_rle_decode(&r, &back, &e))
                abort();
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    int in = y >= win[0] && y < win[2] && x >= win[1] && x < win[3];
                    if (back[y * W + x] != (in ? m[(y - win[0]) * ww + (x - win[1])] : 0))
                        abort();
                }
            free(back);
            pf_rle_free(&r);
            free(m);
        }
    }
    pf_seg_objects_free(o, n);
    json_t *j = pf_seg_objects_json(text, size, W, H, NULL, NULL, &e);
    if (!j)
        abort();
    json_decref(j);
    return 0;
}
