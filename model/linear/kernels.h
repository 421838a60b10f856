/* kernels.h - small-M matrix products on row-major weights, and the activation conversions around them.
 *
 * For decode (M = 1..16 rows) the work is streaming the weights once: y[m][n] = sum_k x[m][k] * W[n][k].
 * These kernels read W row-major ([N][K], the checkpoint's own layout) as f32, bf16 or int8, and keep
 * up to 4 rows x 4 activation rows of partial sums in registers, so each weight byte is read from memory
 * once per call (from L1 for the later m-groups). OpenMP splits N across threads (pf_gemv_run).
 *
 * int8 weights are symmetric per output row: W[n][k] ~= wscale[n] * q[n][k]. Two ways to use them:
 *  - weight-only: f32 activations times the int8 weights converted to f32 (accurate, costs converts);
 *  - dynamic: activations quantized per row to s8 (x ~= xscale[m] * qx[m][k]), stored +128 as u8, and
 *    integer dot products (VNNI vpdpbusd, or vpmaddubsw without VNNI), corrected by 128 * wsum[n].
 *
 * Three tiers, chosen at run time (pf_cpu()->tier): generic C, AVX2+FMA, AVX-512 (F/BW/VL/DQ), the
 * latter two compiled with __attribute__((target)), so the build needs no -march flag.
 */
#ifndef PF_MODEL_KERNELS_H
#define PF_MODEL_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/linear/cpu.h"

typedef enum pf_wtype { PF_W_F32, PF_W_BF16, PF_W_S8 } pf_wtype;

typedef struct pf_gemv {
    int64_t m, n, k;
    const float *x;        /* f32 activations [m][ldx] (f32 / bf16 / s8 weight-only kernels) */
    int64_t ldx;
    const uint8_t *xq;     /* dynamic int8: activations as q+128, [m][k] contiguous */
    const float *xscale;   /* dynamic int8: [m] */
    const void *w;         /* [n][k] row-major */
    const float *wscale;   /* s8 weights: [n] */
    const int32_t *wsum;   /* s8 weights, dynamic: [n] sum_k q[n][k] */
    const float *bias;     /* [n] or NULL */
    float *y;              /* [m][ldy] */
    int64_t ldy;
    bool accumulate;       /* y += result instead of y = result */
} pf_gemv;

/* Compute rows [n0, n1) of y (all m). */
typedef void (*pf_gemv_fn)(const pf_gemv *g, int64_t n0, int64_t n1);

typedef struct pf_kernels {
    const char *name; /* "avx512", "avx512-vnni", "avx2", "avx2-vnni", "generic" */
    pf_cpu_tier tier;
    bool vnni;        /* dynamic int8 uses VNNI (else vpmaddubsw on |q_x| x sign-adjusted weights); both are exact
                       * for weights in +-127 */
    pf_gemv_fn f32, bf16, s8, u8s8;
    /* f32 -> bf16, round to nearest even, NaN kept (same bits as pf_f32_to_bf16). */
    void (*to_bf16)(const float *x, uint16_t *dst, size_t n);
    /* Per-row symmetric quantization of x[m][ldx] (k columns): scale[i] = max|x[i]| / qmax (1 if the row is
     * all zero), q = round_even(x * (qmax / max|x[i]|)) in [-qmax, qmax], stored as (uint8_t)(q + offset)
     * with offset 0 (s8) or 128 (u8), rows of k bytes. qmax <= 127. Activations use 127; weights use the
     * engine's range (quant.h). */
    void (*quant_rows)(const float *x, int64_t ldx, int64_t m, int64_t k, uint8_t *dst, float *scale, int offset,
                       int qmax);
} pf_kernels;

/* The kernels for this CPU (after PALIFLOW_MAX_ISA). */
const pf_kernels *pf_kernels_get(void);
/* The kernels of one tier, or NULL if this CPU cannot run them (tests compare tiers with each other). */
const pf_kernels *pf_kernels_for_tier(pf_cpu_tier tier);

pf_gemv_fn pf_kernels_gemv_fn(const pf_kernels *kt, pf_wtype wt, bool dynamic);

/* Run fn over all of N, split across the OpenMP threads in blocks of whole row groups. */
void pf_gemv_run(pf_gemv_fn fn, const pf_gemv *g);

/* Tier implementations (kernels_generic.c, kernels_avx2.c, kernels_avx512.c). */
extern const pf_kernels pf_kernels_generic;
void pf_kernels_avx2_init(pf_kernels *kt, bool avx_vnni);
void pf_kernels_avx512_init(pf_kernels *kt, bool vnni);

#endif
