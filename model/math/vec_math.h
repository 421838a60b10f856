/* vec_math.h - branch-free exp and tanh that gcc vectorizes (no libm calls in the loops). The hot loops
 * that call them get their SIMD variants from base/simd.h.
 *
 * exp: Cephes' expf (range reduction by ln 2 split in two, degree-5 polynomial), within 2 ulp of libm on
 * [-87.3, 88.3] (inputs are clamped to that range: below, results flush towards 0).
 * tanh: Cephes' tanhf: odd polynomial below 0.625, 1 - 2 / (exp(2|x|) + 1) above; within a few ulp.
 */
#ifndef PF_MODEL_ENGINE_MATH_H
#define PF_MODEL_ENGINE_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float pf_eng_exp(float x)
{
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.3f ? 88.3f : x;
    float t = x * 1.44269504088896341f + 12582912.0f; /* round(x / ln 2) by the 1.5 * 2^23 trick */
    float n = t - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23; /* 2^n, -126 <= n <= 127 here */
    float scale;
    memcpy(&scale, &e, sizeof scale);
    return y * scale;
}

static inline float pf_eng_tanh(float x)
{
    float ax = fabsf(x), s = x * x;
    float p = -5.70498872745e-3f;
    p = p * s + 2.06390887954e-2f;
    p = p * s - 5.37397155531e-2f;
    p = p * s + 1.33314422036e-1f;
    p = p * s - 3.33332819422e-1f;
    float small = x + x * s * p;
    float big = copysignf(1.0f - 2.0f / (pf_eng_exp(2.0f * ax) + 1.0f), x);
    return ax < 0.625f ? small : big;
}

#endif
