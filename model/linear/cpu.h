/* cpu.h - what this CPU can do, found at run time, and which matmul precision it should run.
 *
 * Two questions answered separately:
 *  1. Instruction sets (cpuid + xgetbv): what our own kernels may use (pf_cpu()->tier and flags).
 *  2. What oneDNN 2.6 actually implements for matmul at each precision on this machine
 *     (pf_precision_probe: create a primitive descriptor and look at the implementation it picked).
 *     oneDNN refuses bf16 matmul on AVX2, and silently falls back to its slow `ref:` code for some
 *     combinations; both count as "not supported" here.
 *
 * PALIFLOW_MAX_ISA=generic|avx2|avx512|avx512_vnni|avx512_bf16 caps our kernels, the SIMD variants of
 * base/simd.h (the tier itself comes from there) and oneDNN (dnnl_set_max_cpu_isa), so the AVX2 paths can
 * be tested on an AVX-512 machine. It is read once, by the first call to pf_cpu() — before any oneDNN
 * primitive is created (oneDNN fixes its ISA at first use).
 */
#ifndef PF_MODEL_CPU_H
#define PF_MODEL_CPU_H

#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"
#include "base/simd.h" /* pf_cpu_tier, pf_simd_tier(): the tier our own SIMD code runs at */

typedef struct pf_cpu_features {
    char vendor[13];
    char brand[49];
    /* Raw cpuid bits, already masked by what the OS saves (xgetbv). */
    bool sse41, avx, avx2, fma, f16c;
    bool avx512f, avx512bw, avx512vl, avx512dq, avx512_vnni, avx512_bf16;
    bool avx_vnni;
    bool amx_tile, amx_bf16, amx_int8;
    bool os_avx, os_avx512, os_amx; /* xgetbv: the OS saves YMM / ZMM+opmask / AMX tile state */
    bool amx_permitted;             /* arch_prctl(ARCH_GET_XCOMP_PERM) grants this process AMX tile data */
    /* What we use, after PALIFLOW_MAX_ISA. */
    pf_cpu_tier tier;
    bool use_vnni512; /* tier AVX512 and AVX512_VNNI */
    bool use_avx_vnni; /* tier >= AVX2 and AVX-VNNI (VEX-encoded vpdpbusd) */
    bool use_bf16_512; /* tier AVX512 and AVX512_BF16 */
    const char *cap;   /* the PALIFLOW_MAX_ISA value applied, or NULL */
} pf_cpu_features;

/* Read the CPU (no caching, no environment). */
void pf_cpu_detect(pf_cpu_features *out);

/* The process-wide features, detected once (thread-safe), with PALIFLOW_MAX_ISA applied (to oneDNN too). */
const pf_cpu_features *pf_cpu(void);

const char *pf_cpu_tier_name(pf_cpu_tier t);

/* Short human description, e.g. "AMD EPYC: avx512 (vnni, bf16), oneDNN avx512_core_bf16". */
void pf_cpu_describe(char *buf, size_t len);

/* oneDNN's effective ISA as a name ("avx2", "avx512_core_bf16", ...). */
const char *pf_cpu_dnnl_isa_name(void);
/* True if oneDNN's int8 kernels use VNNI (no 16-bit saturation in u8*s8 pair sums): its u8 x s8 matmul is
 * exact for full-range s8 weights. Without VNNI (vpmaddubsw) it is not, and mm.c does not use it. */
bool pf_cpu_dnnl_int8_full_range(void);

/* Matmul precision. AUTO resolves to a concrete one with pf_precision_resolve. */
typedef enum pf_precision {
    PF_PREC_AUTO = 0,
    PF_PREC_FP32,
    PF_PREC_BF16,
    PF_PREC_INT8,
    PF_PREC_COUNT
} pf_precision;

/* "auto" | "fp32" | "bf16" | "int8" (also "f32", "float32", "bfloat16"). */
int pf_precision_parse(const char *s, pf_precision *out, pf_err *err);
const char *pf_precision_name(pf_precision p);

typedef struct pf_precision_support {
    bool ok[PF_PREC_COUNT];        /* oneDNN implements matmul at this precision without `ref:` code */
    bool native_bf16;              /* the CPU has bf16 dot-product instructions (AVX512_BF16 or AMX) */
    char impl[PF_PREC_COUNT][96];  /* implementation oneDNN picked at the probe shape, or why it failed */
} pf_precision_support;

/* Probe oneDNN once per process (cached; thread-safe). */
const pf_precision_support *pf_precision_probe(void);

/* Resolve a request against this machine. AUTO picks by measurement (precision_probe.h: the fastest
 * precision within its accuracy contract, cached per CPU model); if the probe itself fails, bf16 where the
 * CPU computes it natively, else int8 where oneDNN has a non-reference int8 matmul, else fp32. An explicit request this machine cannot run
 * fails with a message naming the reason and what is available. */
int pf_precision_resolve(pf_precision requested, pf_precision *out, pf_err *err);

#endif
