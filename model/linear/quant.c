/* quant.c - see quant.h. */
#include "model/linear/quant.h"

#include <math.h>

float pf_quant_row_s8(const float *w, int64_t k, int qmax, int8_t *q, int32_t *sum)
{
    float amax = 0.0f;
    for (int64_t i = 0; i < k; i++)
        amax = fmaxf(amax, fabsf(w[i]));
    float scale = amax > 0.0f ? amax / (float)qmax : 1.0f;
    float inv = amax > 0.0f ? (float)qmax / amax : 0.0f;
    int32_t s = 0;
    for (int64_t i = 0; i < k; i++) {
        /* round half to even without a libm call (baseline x86-64 has no roundss): adding and removing
         * 1.5 * 2^23 leaves the nearest-even integer for |v| <= 2^22; here |v| <= qmax */
        float v = (w[i] * inv + 12582912.0f) - 12582912.0f;
        v = v > (float)qmax ? (float)qmax : v < (float)-qmax ? (float)-qmax : v;
        q[i] = (int8_t)v;
        s += q[i];
    }
    *sum = s;
    return scale;
}
