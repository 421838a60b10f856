/* mm.h - linear layers y[M,N] = x[M,K] . W[N,K]^T (+ bias) at fp32, bf16 or int8, over oneDNN.
 *
 * Three objects, split by who may touch them:
 *   pf_mm_engine  the precision and kernel choices for this machine; immutable, shared by all threads.
 *   pf_linear     one weight matrix, converted ONCE at creation into the layout its precision runs
 *                 fastest from; immutable, shared by all threads.
 *   pf_mm_ctx     one per calling thread: oneDNN stream, primitives cached by shape (M varies with the
 *                 batch, oneDNN needs fixed M: runtime M dims fall back to slow or ref: kernels in 2.6),
 *                 activation buffers, scratchpad. No allocation once warm.
 *
 * Weights are converted once, into oneDNN's preferred layout for a prefill-sized M (format_tag any +
 * reorder) when that is a blocked one (AVX-512: brgemm, fastest at every M, decode included); when oneDNN
 * wants a plain layout (AVX2: gemm:jit) they are stored row-major [N,K], which oneDNN reads for large M and
 * our kernels (kernels.h) read for decode-sized M, where they beat gemm:jit.
 *   fp32  f32 activations and weights.
 *   bf16  activations converted per call to bf16 (round to nearest even), f32 accumulation and output.
 *   int8  s8 weights (+-127) with one symmetric scale per output row (quant.h); activations quantized per
 *         call, per row, symmetric (dynamic quantization) and offset to u8; oneDNN (where it has VNNI, so its
 *         u8 x s8 sums are exact), our kernels (small M; without VNNI also prefill M, in blocks of 64 rows:
 *         oneDNN's u8 x s8 would saturate there), or, on CPUs below AVX2, sgemm over the integer codes as
 *         f32 (exact while sums stay below 2^24) compute the integer sums; our epilogue applies offset, row
 *         and column scales, bias, accumulation: the same numbers on every path and every M.
 *         Our kernels also offer weight-only int8 (f32 activations), slower at every M measured.
 * Every oneDNN primitive's implementation is logged (debug) and a `ref:` one is an error unless allowed.
 *
 * Threads: oneDNN and our kernels use OpenMP (all cores by default; OMP_NUM_THREADS to limit).
 */
#ifndef PF_MODEL_MM_H
#define PF_MODEL_MM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/linear/cpu.h"
#include "model/math/dtype.h"

#define PF_MM_MAX_M (1 << 20)
#define PF_MM_MAX_DIM (1 << 24)
#define PF_LINEAR_MAX_PARTS 4

typedef enum pf_mm_layout {
    PF_LAYOUT_AUTO = 0, /* what oneDNN prefers (see above) */
    PF_LAYOUT_ROWMAJOR, /* force row-major [N,K] (fp32/bf16), e.g. to compare our kernels with oneDNN */
    PF_LAYOUT_PACKED,   /* force oneDNN's choice even if plain */
} pf_mm_layout;

typedef struct pf_mm_params {
    pf_precision precision; /* AUTO is resolved with pf_precision_resolve */
    int kernel_max_m;       /* fp32/bf16: our kernels for M <= this on row-major weights; 0 = default (16),
                             * -1 = never */
    int int8_kernel_max_m;  /* int8: our kernels for M <= this; 0 = default (64), -1 = never */
    int int8_wo_max_m;      /* int8 kernels: weight-only for M <= this, dynamic above; 0 = default (-1:
                             * never, dynamic is faster at every M measured), -1 = never */
    int64_t layout_m;       /* M at which oneDNN picks the weights layout; 0 = default (1024) */
    pf_mm_layout layout;
    bool allow_ref;         /* run oneDNN `ref:` implementations instead of failing */
} pf_mm_params;

typedef struct pf_mm_engine pf_mm_engine;
typedef struct pf_linear pf_linear;
typedef struct pf_mm_ctx pf_mm_ctx;

/* opt may be NULL (auto precision, defaults). */
int pf_mm_engine_create(const pf_mm_params *opt, pf_mm_engine **out, pf_err *err);
void pf_mm_engine_destroy(pf_mm_engine *e);
pf_precision pf_mm_engine_precision(const pf_mm_engine *e);
/* The options in force (defaults filled in). */
const pf_mm_params *pf_mm_engine_params(const pf_mm_engine *e);
/* One line: precision, kernel tier, oneDNN ISA, thresholds. */
void pf_mm_engine_describe(const pf_mm_engine *e, char *buf, size_t len);

/* A weight matrix given as 1..4 parts stacked along N (e.g. q, k, v projections run as one matmul).
 * Each part: rows of k elements, row stride ld (0 = k), dtype F32/F16/BF16; bias optional per part
 * (parts without one get zeros if any part has one). Data may be unaligned (e.g. inside an mmap). */
typedef struct pf_linear_part {
    const void *w;
    pf_dtype dtype;
    int64_t n;
    int64_t ld;
    const void *bias;
    pf_dtype bias_dtype;
} pf_linear_part;

typedef struct pf_linear_desc {
    const char *name; /* for messages, e.g. "language_model.model.layers.3.mlp.gate_up" */
    int64_t k;
    int nparts;
    pf_linear_part parts[PF_LINEAR_MAX_PARTS];
    /* The weights live in a read-only file mapping (a checkpoint): give their pages back (MADV_DONTNEED) as
     * they are converted, so a large matrix (the 257k-row LM head) is never resident twice. Never set this
     * for anonymous memory: its contents would be lost. */
    bool release_source;
} pf_linear_desc;

int pf_linear_create(const pf_mm_engine *e, const pf_linear_desc *d, pf_linear **out, pf_err *err);
/* Convenience for one part. bias may be NULL. */
int pf_linear_create1(const pf_mm_engine *e, const char *name, int64_t n, int64_t k, pf_dtype dtype, const void *w,
                      const void *bias, pf_dtype bias_dtype, pf_linear **out, pf_err *err);
void pf_linear_destroy(pf_linear *l);
int64_t pf_linear_n(const pf_linear *l);
int64_t pf_linear_k(const pf_linear *l);
/* Bytes read per forward: weights as stored plus scales/sums/bias (the decode bandwidth cost). */
size_t pf_linear_bytes(const pf_linear *l);
/* "row-major" or oneDNN's blocked layout, e.g. "packed 16a64b2a". */
const char *pf_linear_layout(const pf_linear *l);

int pf_mm_ctx_create(const pf_mm_engine *e, pf_mm_ctx **out, pf_err *err);
void pf_mm_ctx_destroy(pf_mm_ctx *c);
/* Primitives currently cached and created so far (for logs and tests). */
void pf_mm_ctx_stats(const pf_mm_ctx *c, int *cached, int *created);

enum {
    PF_LINEAR_ACCUMULATE = 1u << 0,   /* y += x W^T (+ bias) */
    /* Path overrides, for benchmarks and tests: */
    PF_LINEAR_FORCE_ONEDNN = 1u << 8,
    PF_LINEAR_FORCE_KERNEL = 1u << 9, /* needs row-major weights; int8: the engine's M rule picks the mode */
    PF_LINEAR_FORCE_INT8_WO = 1u << 10,  /* int8 kernel path, weight-only */
    PF_LINEAR_FORCE_INT8_DYN = 1u << 11, /* int8 kernel path, dynamic */
};

/* y[i*ldy + j] (= or +=) sum_k x[i*ldx + kk] W[j][kk] + bias[j], for i < m, j < N. x and y must not
 * overlap. m may be 0. */
int pf_linear_forward(pf_mm_ctx *c, const pf_linear *l, int64_t m, const float *x, int64_t ldx, float *y,
                      int64_t ldy, unsigned flags, pf_err *err);

/* The implementation pf_linear_forward uses at this m and flags: "kernel:avx512/bf16",
 * "kernel:avx512-vnni/int8-dynamic", "onednn:brg:avx512_core_bf16", ... (creates and caches the primitive).
 * Fails like pf_linear_forward would (e.g. a ref: implementation when not allowed). */
int pf_linear_impl(pf_mm_ctx *c, const pf_linear *l, int64_t m, unsigned flags, char *buf, size_t len, pf_err *err);

/* Same answer as pf_linear_impl for a linear of N x K weights (with or without bias) that this engine would
 * create, without creating or converting any weights: for checking hot shapes (e.g. the 257k-row LM head)
 * cheaply. Fails on `ref:` implementations unless the engine allows them. */
int pf_mm_shape_impl(const pf_mm_engine *e, int64_t m, int64_t k, int64_t n, bool bias, char *buf, size_t len,
                     pf_err *err);

#endif
