/* dnnl_util.h - oneDNN plumbing shared inside model/ (not a public API): the process's CPU engine, status
 * names, and the one function that builds a matmul primitive descriptor for a given precision, so the ISA
 * probe (cpu.c) and the linear layers (mm.c) ask oneDNN exactly the same question. */
#ifndef PF_MODEL_DNNL_UTIL_H
#define PF_MODEL_DNNL_UTIL_H

#include <dnnl.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "model/linear/cpu.h"

/* The CPU engine, created once (thread-safe). NULL and err set if oneDNN cannot create it. */
dnnl_engine_t pf_dnnl_engine(pf_err *err);

const char *pf_dnnl_status_name(dnnl_status_t s);

/* What a matmul computes: y[M,N] (row stride ldy) = x[M,K] (row stride ldx) . W^T. Per precision:
 *   FP32  f32 x f32 -> f32 (+ bias, + sum post-op)
 *   BF16  bf16 x bf16 -> f32 (+ bias, + sum post-op)
 *   INT8  u8 x s8 -> s32, nothing else: the activations arrive quantized per row and offset by +128; the
 *         caller turns the exact integer sums into floats (undoing the offset with the weights' row sums,
 *         applying activation and weight scales, bias, accumulation). oneDNN 2.6 cannot apply per-row
 *         scales without its reference kernel, and run-time per-column output scales move it from the
 *         fast brgemm kernels to gemm:jit, so no attribute is used at all. */
typedef struct pf_dnnl_mm {
    pf_precision prec;        /* FP32, BF16 or INT8 */
    int64_t m, k, n;
    int64_t ldx, ldy;         /* row strides in elements */
    bool bias;                /* f32 bias [N] (ignored for INT8) */
    bool accumulate;          /* y += result (sum post-op; ignored for INT8) */
    const dnnl_memory_desc_t *wmd; /* weights [K,N]; NULL = format_tag_any (let oneDNN choose) */
} pf_dnnl_mm;

/* Create the primitive descriptor; returns the oneDNN status (dnnl_unimplemented when unsupported). The
 * attributes always select the user-managed scratchpad. */
dnnl_status_t pf_dnnl_matmul_pd(const pf_dnnl_mm *mm, dnnl_primitive_desc_t *pd);

/* Implementation name of a primitive descriptor ("brg:avx512_core_bf16", "gemm:jit", "ref:any" ...). */
const char *pf_dnnl_impl(const_dnnl_primitive_desc_t pd);
/* True for oneDNN's reference (slow, scalar) implementations. */
bool pf_dnnl_impl_is_ref(const char *impl);

/* True if the weights md is a plain (non-blocked) layout. */
bool pf_dnnl_md_is_plain(const dnnl_memory_desc_t *md);

#endif
