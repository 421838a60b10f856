/* image_orient.c - EXIF orientation as Pillow's ImageOps.exif_transpose applies it (opt-in autorotate).
 *
 * exif_transpose maps orientation 2..8 to Image.transpose(FLIP_LEFT_RIGHT, ROTATE_180, FLIP_TOP_BOTTOM,
 * TRANSPOSE, ROTATE_270, TRANSVERSE, ROTATE_90). Here each output row is gathered from the stored image,
 * so the rotated copy is never materialised (the stored one is, since a rotation needs all of it).
 */
#include "image/image_internal.h"

#include <string.h>

void pf_img_oriented_size(int o, int w, int h, int *ow, int *oh)
{
    if (o >= 5 && o <= 8) {
        *ow = h;
        *oh = w;
    } else {
        *ow = w;
        *oh = h;
    }
}

void pf_img_oriented_row(int o, const uint8_t *img, int w, int h, int y, uint8_t *dst)
{
    size_t W = (size_t)w;
    /* source of output pixel (x, y) = start + x * step (in pixels) */
    ptrdiff_t start, step;
    switch (o) {
    case 2: /* FLIP_LEFT_RIGHT: (w-1-x, y) */
        start = (ptrdiff_t)((size_t)y * W + W - 1);
        step = -1;
        break;
    case 3: /* ROTATE_180: (w-1-x, h-1-y) */
        start = (ptrdiff_t)((size_t)(h - 1 - y) * W + W - 1);
        step = -1;
        break;
    case 4: /* FLIP_TOP_BOTTOM: (x, h-1-y) */
        start = (ptrdiff_t)((size_t)(h - 1 - y) * W);
        step = 1;
        break;
    case 5: /* TRANSPOSE: (y, x) */
        start = y;
        step = (ptrdiff_t)W;
        break;
    case 6: /* ROTATE_270 (clockwise quarter turn): (y, h-1-x) */
        start = (ptrdiff_t)((size_t)(h - 1) * W + (size_t)y);
        step = -(ptrdiff_t)W;
        break;
    case 7: /* TRANSVERSE: (w-1-y, h-1-x) */
        start = (ptrdiff_t)((size_t)(h - 1) * W + (W - 1 - (size_t)y));
        step = -(ptrdiff_t)W;
        break;
    case 8: /* ROTATE_90 (counter-clockwise quarter turn): (w-1-y, x) */
        start = (ptrdiff_t)(W - 1 - (size_t)y);
        step = (ptrdiff_t)W;
        break;
    default:
        memcpy(dst, img + (size_t)y * W * 3, W * 3);
        return;
    }
    int ow, oh;
    pf_img_oriented_size(o, w, h, &ow, &oh);
    const uint8_t *s = img + start * 3;
    for (int x = 0; x < ow; x++, s += step * 3)
        memcpy(dst + 3 * (size_t)x, s, 3);
}
