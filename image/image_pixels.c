/* image_pixels.c - the processor's rescale + normalise step, as an exact 256-entry table.
 *
 * transformers computes float32(float64(u8) * (1/255)) then (x - 0.5f) / 0.5f in float32; for all 256
 * byte values that equals (u8 / 255.0f - 0.5f) / 0.5f evaluated in float32 (checked bit for bit in
 * ../shared/golden/images/README.md and in tests/image).
 */
#include "image/image.h"

float pf_img_pixel_value(uint8_t v)
{
    volatile float x = (float)v / 255.0f; /* volatile: keep the float32 rounding of each step */
    return (x - 0.5f) / 0.5f;
}

void pf_img_to_pixels(const uint8_t *rgb, int size, float *chw)
{
    float lut[256];
    for (int v = 0; v < 256; v++)
        lut[v] = pf_img_pixel_value((uint8_t)v);
    size_t plane = (size_t)size * (size_t)size;
    float *r = chw, *g = chw + plane, *b = chw + 2 * plane;
    for (size_t i = 0; i < plane; i++) {
        r[i] = lut[rgb[3 * i + 0]];
        g[i] = lut[rgb[3 * i + 1]];
        b[i] = lut[rgb[3 * i + 2]];
    }
}
