/* dtype.h - the element types found in checkpoints and tensor files, and exact conversions. */
#ifndef PF_MODEL_DTYPE_H
#define PF_MODEL_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum pf_dtype {
    PF_DT_F32,
    PF_DT_F16,
    PF_DT_BF16,
    PF_DT_F64,
    PF_DT_I64,
    PF_DT_I32,
    PF_DT_I16,
    PF_DT_I8,
    PF_DT_U8,
    PF_DT_BOOL,
    PF_DT_COUNT
} pf_dtype;

/* Safetensors names ("F32", "BF16", ...). Returns -1 for a name we do not know. */
int pf_dtype_from_name(const char *name, pf_dtype *out);
const char *pf_dtype_name(pf_dtype dt);
size_t pf_dtype_size(pf_dtype dt);

/* Exact widening conversions (bf16 and f16 are subsets of f32). */
float pf_bf16_to_f32(uint16_t h);
float pf_f16_to_f32(uint16_t h);
/* Round to nearest even, NaN stays NaN. */
uint16_t pf_f32_to_bf16(float f);

/* Convert n elements of dtype dt starting at src (any alignment) into f32. Returns -1 if dt is not a
 * float type (F32/F16/BF16/F64). */
int pf_convert_to_f32(pf_dtype dt, const void *src, size_t n, float *dst);

#endif
