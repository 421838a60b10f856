/* dnnl_util.h - oneDNN plumbing shared inside model/ (not a public API): the process's CPU engine, status
 * names, and the one function that builds a matmul primitive descriptor for a given precision, so the ISA
 * probe (cpu.c) and the linear layers (mm.c) ask oneDNN exactly the same question. */
#ifndef PF_MODEL_DNNL_UTIL_H
#define PF_MODEL_DNNL_UTIL_H

#include <dnnl.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "model/cpu.h"

/* The CPU engine, created once (thread-safe). NULL and err set if oneDNN cannot create it. */
dnnl_engine_t pf_dnnl_engine(pf_err *err);

const char *pf_dnnl_status_name(dnnl_status_t s);

/* What a matmul computes: y[M,N] (row stride ldy, f32) = x[M,K] (row stride ldx) . W^T, where the source
 * type follows the precision (f32, bf16, or s8 with per-row scales), plus options. */
typedef struct pf_dnnl_mm {
    pf_precision prec;        /* FP32, BF16 or INT8 */
    int64_t m, k, n;
    int64_t ldx, ldy;         /* row strides in elements */
    bool bias;                /* f32 bias [N] */
    bool accumulate;          /* y += result (sum post-op) */
    /* INT8: output scales per N given at run time (the weight scales); no bias. oneDNN 2.6 has no per-row
     * scale that keeps a non-reference kernel (a binary multiply by an [M,1] tensor gives ref_int8), so the
     * caller applies the activation row scales and the bias afterwards. */
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
