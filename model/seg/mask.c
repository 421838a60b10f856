/* mask.c - see mask.h. */
#include "model/seg/mask.h"

#include <stdlib.h>

#include "model/seg/resize.h"

int pf_seg_window(const int loc[4], int width, int height, int win[4])
{
    /* Python: y1 * h with y1 = tokens / 1023 a float64, then int() truncates; the same double operations.
     * Locs are clamped to the vocabulary's 0..1023 so the window always lies inside the image. */
    int l[4];
    for (int i = 0; i < 4; i++)
        l[i] = loc[i] < 0 ? 0 : loc[i] > 1023 ? 1023 : loc[i];
    loc = l;
    win[0] = (int)((double)loc[0] / 1023.0 * height);
    win[1] = (int)((double)loc[1] / 1023.0 * width);
    win[2] = (int)((double)loc[2] / 1023.0 * height);
    win[3] = (int)((double)loc[3] / 1023.0 * width);
    return win[3] > win[1] && win[2] > win[0];
}

int pf_seg_threshold(const float *m64, int ww, int wh, uint8_t *win_out, float *resized, pf_err *err)
{
    float *r = resized ? resized : malloc((size_t)ww * (size_t)wh * sizeof *r);
    if (!r)
        return pf_errf(err, "seg mask: out of memory for a %dx%d window", ww, wh);
    int rc = pf_seg_resize_bilinear(m64, PF_SEG_OUT, PF_SEG_OUT, r, ww, wh, err);
    if (rc == 0)
        for (size_t i = 0; i < (size_t)ww * (size_t)wh; i++)
            win_out[i] = r[i] > 0.0f;
    if (!resized)
        free(r);
    return rc;
}

int pf_seg_object_mask(const pf_seg_decoder *d, const pf_seg_object *o, int width, int height, pf_rle *out,
                       int *placed, pf_err *err)
{
    if (placed)
        *placed = 0;
    if (width < 1 || height < 1 || width > 65536 || height > 65536)
        return pf_errf(err, "seg mask: image size %dx%d out of range (1..65536)", width, height);
    int win[4];
    if (!o->tokens_valid || !pf_seg_window(o->loc, width, height, win))
        return pf_rle_from_window(width, height, 0, 0, 0, 0, NULL, out, err);
    int ww = win[3] - win[1], wh = win[2] - win[0];
    float m64[PF_SEG_OUT * PF_SEG_OUT];
    uint8_t *m = malloc((size_t)ww * (size_t)wh);
    if (!m)
        return pf_errf(err, "seg mask: out of memory for a %dx%d window", ww, wh);
    int rc = pf_seg_decode(d, o->codes, m64, err);
    if (rc == 0)
        rc = pf_seg_threshold(m64, ww, wh, m, NULL, err);
    if (rc == 0)
        rc = pf_rle_from_window(width, height, win[1], win[0], ww, wh, m, out, err);
    free(m);
    if (rc == 0 && placed)
        *placed = 1;
    return rc;
}
