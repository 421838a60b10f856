/* roofline.c - see roofline.h. */
#include "model/tools/roofline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "base/file.h"
#include "model/math/dtype.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int pf_roofline_triad(size_t total_bytes, int reps, pf_triad_result *out, pf_err *err)
{
    memset(out, 0, sizeof *out);
    if (reps < 1)
        reps = 5;
    if (reps > 100)
        reps = 100;
    size_t n = total_bytes / 3 / sizeof(float);
    if (n < 1024)
        return pf_errf(err, "triad: %zu bytes is too small", total_bytes);
    size_t bytes = n * sizeof(float);
    float *a = mmap(NULL, 3 * bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        return pf_errf(err, "triad: cannot map %zu bytes", 3 * bytes);
    float *b = a + n, *c = b + n;
    const float s = 1.5f;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        a[i] = 0.0f;
        b[i] = 1.0f;
        c[i] = 2.0f;
    }
    double t[100];
    for (int r = -1; r < reps; r++) {
        double t0 = pf_now();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++)
            a[i] = b[i] + s * c[i];
        double dt = pf_now() - t0;
        if (r >= 0)
            t[r] = dt;
    }
    volatile float sink = a[n / 2];
    (void)sink;
    munmap(a, 3 * bytes);
    double best = t[0];
    for (int r = 1; r < reps; r++)
        best = t[r] < best ? t[r] : best;
    double med = median(t, reps);
    out->bytes = 3 * bytes;
    out->reps = reps;
    out->gbs_median = (double)(3 * bytes) / med / 1e9;
    out->gbs_best = (double)(3 * bytes) / best / 1e9;
    return 0;
}

/* Random bf16 weights ~ N(0, 1/K) (sum of 4 uniforms), deterministic in seed. */
static void fill_weights(uint16_t *w, int64_t count, int64_t k, uint64_t seed)
{
    float scale = 1.7320508f / sqrtf((float)k);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; i++) {
        uint64_t x = seed + (uint64_t)i * 0x9e3779b97f4a7c15ull;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
        x ^= x >> 31;
        float u = ((float)(x & 0xffff) + (float)((x >> 16) & 0xffff) + (float)((x >> 32) & 0xffff) +
                   (float)(x >> 48)) / 65536.0f - 2.0f;
        w[i] = pf_f32_to_bf16(u * scale);
    }
}

/* Time reps calls at one M over the rotating copies. */
static int time_one(pf_mm_ctx *c, pf_linear **lins, int copies, int64_t m, const float *x, float *y,
                    const pf_gemm_params *opt, pf_gemm_result *out, pf_err *err)
{
    const int64_t k = pf_linear_k(lins[0]), n = pf_linear_n(lins[0]);
    memset(out, 0, sizeof *out);
    snprintf(out->layout, sizeof out->layout, "%s", pf_linear_layout(lins[0]));
    if (pf_linear_impl(c, lins[0], m, opt->flags, out->impl, sizeof out->impl, err) != 0)
        return -1;
    double t0 = pf_now();
    if (pf_linear_forward(c, lins[0], m, x, k, y, n, opt->flags, err) != 0)
        return -1;
    out->first_call_ms = (pf_now() - t0) * 1e3;
    for (int i = 1; i < copies; i++) /* warm every copy once (page faults, caches) */
        if (pf_linear_forward(c, lins[i], m, x, k, y, n, opt->flags, err) != 0)
            return -1;
    double ts[200];
    for (int r = 0; r < opt->reps; r++) {
        const pf_linear *l = lins[(r + 1) % copies];
        double s = pf_now();
        if (pf_linear_forward(c, l, m, x, k, y, n, opt->flags, err) != 0)
            return -1;
        ts[r] = pf_now() - s;
    }
    double best = ts[0];
    for (int r = 1; r < opt->reps; r++)
        best = ts[r] < best ? ts[r] : best;
    double med = median(ts, opt->reps);
    double flop = 2.0 * (double)m * (double)n * (double)k;
    out->reps = opt->reps;
    out->copies = copies;
    out->weight_bytes = pf_linear_bytes(lins[0]);
    out->ms_median = med * 1e3;
    out->ms_best = best * 1e3;
    out->gflops_median = flop / med / 1e9;
    out->gflops_best = flop / best / 1e9;
    out->weight_gbs_median = (double)out->weight_bytes / med / 1e9;
    return 0;
}

int pf_roofline_gemm_multi(const pf_mm_engine *e, pf_mm_ctx *c, int64_t k, int64_t n, const int64_t *ms, int nm,
                           const pf_gemm_params *o, pf_gemm_result *out, pf_err *err)
{
    pf_gemm_params opt = {0};
    if (o)
        opt = *o;
    if (opt.reps < 1)
        opt.reps = 7;
    if (opt.reps > 200)
        opt.reps = 200;
    if (opt.rotate_bytes == 0)
        opt.rotate_bytes = 768u << 20;
    int64_t mmax = 0;
    for (int i = 0; i < nm; i++) {
        if (ms[i] < 1 || ms[i] > PF_MM_MAX_M)
            return pf_errf(err, "gemm: M=%lld out of range", (long long)ms[i]);
        mmax = ms[i] > mmax ? ms[i] : mmax;
    }
    if (nm < 1 || k < 1 || n < 1 || k > PF_MM_MAX_DIM || n > PF_MM_MAX_DIM)
        return pf_errf(err, "gemm K=%lld N=%lld: shape out of range", (long long)k, (long long)n);
    pf_mm_ctx *own = NULL;
    if (!c) {
        if (pf_mm_ctx_create(e, &own, err) != 0)
            return -1;
        c = own;
    }
    size_t wcount = (size_t)n * (size_t)k;
    uint16_t *w = malloc(wcount * 2);
    float *x = malloc((size_t)mmax * (size_t)k * sizeof(float));
    float *y = malloc((size_t)mmax * (size_t)n * sizeof(float));
    pf_linear *lins[64] = {0};
    int copies = 0, rc = -1;
    if (!w || !x || !y) {
        pf_errf(err, "gemm K=%lld N=%lld: out of memory", (long long)k, (long long)n);
        goto done;
    }
    fill_weights(w, (int64_t)wcount, k, opt.seed + 1);
    for (size_t i = 0; i < (size_t)mmax * (size_t)k; i++)
        x[i] = (float)((int)((i * 2654435761u) >> 7 & 1023) - 512) / 256.0f;
    do {
        if (pf_linear_create1(e, "gemm", n, k, PF_DT_BF16, w, NULL, PF_DT_F32, &lins[copies], err) != 0)
            goto done;
        copies++;
    } while (copies < 64 && (size_t)copies * pf_linear_bytes(lins[0]) < opt.rotate_bytes);
    free(w); /* keep peak memory to the converted copies */
    w = NULL;
    for (int i = 0; i < nm; i++)
        if (time_one(c, lins, copies, ms[i], x, y, &opt, &out[i], err) != 0)
            goto done;
    rc = 0;
done:
    for (int i = 0; i < copies; i++)
        pf_linear_destroy(lins[i]);
    free(w);
    free(x);
    free(y);
    pf_mm_ctx_destroy(own);
    return rc;
}

int pf_roofline_gemm(const pf_mm_engine *e, pf_mm_ctx *c, int64_t m, int64_t k, int64_t n, const pf_gemm_params *o,
                     pf_gemm_result *out, pf_err *err)
{
    return pf_roofline_gemm_multi(e, c, k, n, &m, 1, o, out, err);
}
