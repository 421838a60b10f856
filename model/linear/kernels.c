/* kernels.c - pick the kernel tier for this CPU and run a kernel over N with OpenMP. */
#include "model/linear/kernels.h"

#include <omp.h>
#include <pthread.h>

static pf_kernels g_avx2, g_avx512;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_tiers(void)
{
    const pf_cpu_features *f = pf_cpu();
    if (f->tier >= PF_TIER_AVX2)
        pf_kernels_avx2_init(&g_avx2, f->use_avx_vnni);
    if (f->tier >= PF_TIER_AVX512)
        pf_kernels_avx512_init(&g_avx512, f->use_vnni512);
}

const pf_kernels *pf_kernels_for_tier(pf_cpu_tier tier)
{
    pthread_once(&g_once, init_tiers);
    if (tier > pf_cpu()->tier)
        return NULL;
    switch (tier) {
    case PF_TIER_AVX512: return &g_avx512;
    case PF_TIER_AVX2: return &g_avx2;
    default: return &pf_kernels_generic;
    }
}

const pf_kernels *pf_kernels_get(void)
{
    return pf_kernels_for_tier(pf_cpu()->tier);
}

pf_gemv_fn pf_kernels_gemv_fn(const pf_kernels *kt, pf_wtype wt, bool dynamic)
{
    switch (wt) {
    case PF_W_F32: return kt->f32;
    case PF_W_BF16: return kt->bf16;
    default: return dynamic ? kt->u8s8 : kt->s8;
    }
}

/* Row groups of 4 (the kernels' tile height); each thread gets one contiguous range so it streams its
 * share of the weights sequentially (what the hardware prefetcher likes). */
void pf_gemv_run(pf_gemv_fn fn, const pf_gemv *g)
{
    if (g->m <= 0 || g->n <= 0)
        return;
    int64_t groups = (g->n + 3) / 4;
    /* Below ~64 KB of weights a second thread costs more than it saves. */
    int64_t bytes_hint = g->n * g->k;
    int nt = bytes_hint < (1 << 16) ? 1 : omp_get_max_threads();
    if (nt > groups)
        nt = (int)groups;
    if (nt <= 1) {
        fn(g, 0, g->n);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int64_t g0 = groups * t / T, g1 = groups * (t + 1) / T;
        int64_t n0 = g0 * 4, n1 = g1 * 4 < g->n ? g1 * 4 : g->n;
        if (n0 < n1)
            fn(g, n0, n1);
    }
}
