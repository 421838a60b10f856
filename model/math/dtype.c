#include "model/math/dtype.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} g_dtypes[PF_DT_COUNT] = {
    [PF_DT_F32] = {"F32", 4}, [PF_DT_F16] = {"F16", 2}, [PF_DT_BF16] = {"BF16", 2}, [PF_DT_F64] = {"F64", 8},
    [PF_DT_I64] = {"I64", 8}, [PF_DT_I32] = {"I32", 4}, [PF_DT_I16] = {"I16", 2},   [PF_DT_I8] = {"I8", 1},
    [PF_DT_U8] = {"U8", 1},   [PF_DT_BOOL] = {"BOOL", 1},
};

int pf_dtype_from_name(const char *name, pf_dtype *out)
{
    for (int i = 0; i < PF_DT_COUNT; i++) {
        if (strcmp(name, g_dtypes[i].name) == 0) {
            *out = (pf_dtype)i;
            return 0;
        }
    }
    return -1;
}

const char *pf_dtype_name(pf_dtype dt) { return (unsigned)dt < PF_DT_COUNT ? g_dtypes[dt].name : "?"; }
size_t pf_dtype_size(pf_dtype dt) { return (unsigned)dt < PF_DT_COUNT ? g_dtypes[dt].size : 0; }

float pf_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float pf_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf / nan */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign; /* +-0 */
    } else {
        /* subnormal: value = man * 2^-24, exactly representable in f32 */
        float f = ldexpf((float)man, -24);
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t pf_f32_to_bf16(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((bits >> 16) | 0x40); /* quiet NaN */
    uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)((bits + rounding) >> 16);
}

int pf_convert_to_f32(pf_dtype dt, const void *src, size_t n, float *dst)
{
    const uint8_t *p = src;
    switch (dt) {
    case PF_DT_F32:
        memcpy(dst, src, n * 4);
        return 0;
    case PF_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = pf_bf16_to_f32(h);
        }
        return 0;
    case PF_DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = pf_f16_to_f32(h);
        }
        return 0;
    case PF_DT_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return 0;
    default:
        return -1;
    }
}
