/* image_colour.c - Pillow's convert("RGB") for the layouts our decoders deliver, one row at a time.
 *
 * Rules (../shared/golden/images/README.md): alpha is dropped, never composited; grey is replicated;
 * 16-bit samples keep their high byte (v >> 8, what Pillow's ";16B" raw modes do for RGB/RGBA, and our
 * documented choice for 16-bit grey); CMYK uses Pillow's integer cmyk2rgb. ICC profiles are ignored.
 */
#include "image/image_internal.h"

#include <string.h>

/* Pillow: MULDIV255(a, b, tmp) = (tmp = a * b + 128, ((tmp >> 8) + tmp) >> 8) */
static inline int muldiv255(int a, int b)
{
    int tmp = a * b + 128;
    return ((tmp >> 8) + tmp) >> 8;
}

static inline uint8_t clip8(int v)
{
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

/* Pillow's cmyk2rgb for one pixel (inlined: the CMYK loops below then vectorise) */
static inline void cmyk_to_rgb(int c, int m, int y, int k, uint8_t *rgb)
{
    int nk = 255 - k;
    rgb[0] = clip8(nk - muldiv255(c, nk));
    rgb[1] = clip8(nk - muldiv255(m, nk));
    rgb[2] = clip8(nk - muldiv255(y, nk));
}

int pf_img_layout_bpp(pf_img_layout layout)
{
    switch (layout) {
    case PF_LAYOUT_RGB8: return 3;
    case PF_LAYOUT_G8: return 1;
    case PF_LAYOUT_GA8: return 2;
    case PF_LAYOUT_RGBA8: return 4;
    case PF_LAYOUT_CMYK8: return 4;
    case PF_LAYOUT_CMYKA8: return 5;
    case PF_LAYOUT_G16: return 2;
    case PF_LAYOUT_GA16: return 4;
    case PF_LAYOUT_RGB16: return 6;
    case PF_LAYOUT_RGBA16: return 8;
    case PF_LAYOUT_CMYK16: return 8;
    case PF_LAYOUT_CMYKA16: return 10;
    case PF_LAYOUT_NONE: break;
    }
    return 0;
}

/* High byte of a native-endian 16-bit sample (decoders hand us aligned or unaligned data: use memcpy). */
static inline uint8_t hi8(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return (uint8_t)(v >> 8);
}

void pf_img_convert_row(pf_img_layout layout, const void *src_, int width, uint8_t *restrict dst)
{
    const uint8_t *restrict s = src_;
    size_t w = (size_t)width;
    switch (layout) {
    case PF_LAYOUT_RGB8:
        memcpy(dst, s, w * 3);
        break;
    case PF_LAYOUT_G8:
        for (size_t x = 0; x < w; x++)
            dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = s[x];
        break;
    case PF_LAYOUT_GA8:
        for (size_t x = 0; x < w; x++)
            dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = s[2 * x];
        break;
    case PF_LAYOUT_RGBA8:
        for (size_t x = 0; x < w; x++) {
            dst[3 * x + 0] = s[4 * x + 0];
            dst[3 * x + 1] = s[4 * x + 1];
            dst[3 * x + 2] = s[4 * x + 2];
        }
        break;
    case PF_LAYOUT_CMYK8:
    case PF_LAYOUT_CMYKA8: {
        size_t bpp = layout == PF_LAYOUT_CMYK8 ? 4 : 5;
        for (size_t x = 0; x < w; x++) {
            const uint8_t *p = s + bpp * x;
            cmyk_to_rgb(p[0], p[1], p[2], p[3], dst + 3 * x);
        }
        break;
    }
    case PF_LAYOUT_G16:
    case PF_LAYOUT_GA16: {
        size_t bpp = layout == PF_LAYOUT_G16 ? 2 : 4;
        for (size_t x = 0; x < w; x++)
            dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = hi8(s + bpp * x);
        break;
    }
    case PF_LAYOUT_RGB16:
    case PF_LAYOUT_RGBA16: {
        size_t bpp = layout == PF_LAYOUT_RGB16 ? 6 : 8;
        for (size_t x = 0; x < w; x++) {
            const uint8_t *p = s + bpp * x;
            dst[3 * x + 0] = hi8(p);
            dst[3 * x + 1] = hi8(p + 2);
            dst[3 * x + 2] = hi8(p + 4);
        }
        break;
    }
    case PF_LAYOUT_CMYK16:
    case PF_LAYOUT_CMYKA16: {
        size_t bpp = layout == PF_LAYOUT_CMYK16 ? 8 : 10;
        for (size_t x = 0; x < w; x++) {
            const uint8_t *p = s + bpp * x;
            cmyk_to_rgb(hi8(p), hi8(p + 2), hi8(p + 4), hi8(p + 6), dst + 3 * x);
        }
        break;
    }
    case PF_LAYOUT_NONE:
        memset(dst, 0, w * 3);
        break;
    }
}
