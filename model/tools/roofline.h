/* roofline.h - the two ceilings every run is judged against, measured on this machine, now:
 *   memory bandwidth (a multi-threaded triad over >= 1 GB, so no cache level holds it), which bounds
 *   decode (each step streams all weights once), and the GEMM rate of the linear layers at a precision
 *   and shape, which bounds prefill.
 * Timings on shared machines are noisy: results carry the median and the best of several repetitions. */
#ifndef PF_MODEL_ROOFLINE_H
#define PF_MODEL_ROOFLINE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/linear/mm.h"

typedef struct pf_triad_result {
    double gbs_median, gbs_best; /* GB/s (1e9), STREAM convention: 3 arrays x 4 bytes per element */
    size_t bytes;                /* total bytes of the three arrays */
    int reps;
} pf_triad_result;

/* a[i] = b[i] + s * c[i] over three float arrays of total_bytes / 3 each (total_bytes >= 1 GB is what
 * `bench` uses; smaller is allowed for tests), OpenMP static over all threads, after one warm-up pass
 * that also faults the pages in. */
int pf_roofline_triad(size_t total_bytes, int reps, pf_triad_result *out, pf_err *err);

typedef struct pf_gemm_result {
    double ms_median, ms_best;
    double gflops_median, gflops_best; /* 2*M*N*K / time (GOP/s for int8) */
    double weight_gbs_median;          /* bytes of weights read per call / time (decode's figure of merit) */
    size_t weight_bytes;               /* one copy, as stored */
    int copies;                        /* weight copies rotated through so they stream from memory */
    int reps;
    double first_call_ms;              /* includes oneDNN primitive creation */
    char impl[112];
    char layout[64];
} pf_gemm_result;

typedef struct pf_gemm_params {
    int reps;                 /* timed calls (default 7) */
    unsigned flags;           /* PF_LINEAR_* path overrides */
    size_t rotate_bytes;      /* create enough weight copies that they total at least this (default 768 MB) */
    uint64_t seed;
} pf_gemm_params;

/* Time y = x W^T for random bf16-sourced weights of N x K at engine e's precision and layout.
 * Weight copies rotate so small matrices are not served from cache (what a decode step over 18+ layers
 * sees). c may be NULL (a context is made and destroyed). */
int pf_roofline_gemm(const pf_mm_engine *e, pf_mm_ctx *c, int64_t m, int64_t k, int64_t n, const pf_gemm_params *o,
                     pf_gemm_result *out, pf_err *err);
/* The same for several M on one set of weights (converted once): out[i] for ms[i]. */
int pf_roofline_gemm_multi(const pf_mm_engine *e, pf_mm_ctx *c, int64_t k, int64_t n, const int64_t *ms, int nm,
                           const pf_gemm_params *o, pf_gemm_result *out, pf_err *err);

#endif
