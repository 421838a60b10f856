/* bench_gemm - the linear layers' speed per precision against this machine's ceilings, in one run:
 *   triad bandwidth (>= 1 GB), then per precision the GEMM rate on prefill shapes (decoder and vision
 *   tower) and the decode shapes (M = 1..64, incl. the 257k-row LM head) through every path:
 *   oneDNN on its packed layout, oneDNN on row-major weights, our kernels (int8: weight-only and dynamic).
 * Decode rows show the weight bytes streamed per second and the ratio to the triad. Weights rotate over
 * several copies (>= 768 MB) so decode does not run from cache. Timings are medians; the machine may be
 * shared, so compare ratios within one run.
 *
 * usage: bench_gemm [--precision all|fp32|bf16|int8] [--set all|prefill|decode|runtime] [--reps N] [--quick]
 */
#include <dnnl.h>
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/log.h"
#include "model/linear/cpu.h"
#include "model/math/dtype.h"
#include "model/linear/mm.h"
#include "model/tools/roofline.h"

static double g_triad;
static int g_reps = 7;
static bool g_quick;

static void line(void)
{
    printf("-----------------------------------------------------------------------------------------------------"
           "------------\n");
}

static int prefill(pf_precision p)
{
    static const struct {
        const char *what;
        int64_t m, k, n;
    } shapes[] = {
        {"decoder q/o (PG1)", 512, 2048, 2048},   {"decoder q/o (PG1)", 2048, 2048, 2048},
        {"gate/up (PG1)", 512, 2048, 16384},       {"gate/up (PG1)", 1024, 2048, 16384},
        {"gate/up (PG1)", 2048, 2048, 16384},      {"down (PG1)", 1024, 16384, 2048},
        {"vision fc1 x1", 256, 1152, 4304},        {"vision fc1 x4", 1024, 1152, 4304},
        {"vision fc2 x4", 1024, 4304, 1152},       {"vision qkv x4", 1024, 1152, 3456},
    };
    pf_mm_params o = {.precision = p};
    pf_mm_engine *e;
    pf_err err;
    if (pf_mm_engine_create(&o, &e, &err) != 0) {
        fprintf(stderr, "bench_gemm: %s\n", err.msg);
        return -1;
    }
    printf("\n[%s] prefill: oneDNN, weights as loaded\n", pf_precision_name(p));
    printf("%-20s %6s %6s %6s  %-22s %-24s %9s %9s %10s %9s\n", "shape", "M", "K", "N", "layout", "impl", "ms",
           "best ms", "GFLOP/s", "1st ms");
    double flop = 0, time = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        if (g_quick && shapes[i].m > 1024)
            continue;
        pf_gemm_result r;
        pf_gemm_params go = {.reps = g_reps > 5 ? 5 : g_reps, .rotate_bytes = 1};
        if (pf_roofline_gemm(e, NULL, shapes[i].m, shapes[i].k, shapes[i].n, &go, &r, &err) != 0) {
            fprintf(stderr, "bench_gemm: %s\n", err.msg);
            pf_mm_engine_destroy(e);
            return -1;
        }
        printf("%-20s %6lld %6lld %6lld  %-22s %-24s %9.2f %9.2f %10.1f %9.1f\n", shapes[i].what,
               (long long)shapes[i].m, (long long)shapes[i].k, (long long)shapes[i].n, r.layout, r.impl, r.ms_median,
               r.ms_best, r.gflops_median, r.first_call_ms);
        flop += 2.0 * (double)shapes[i].m * (double)shapes[i].k * (double)shapes[i].n;
        time += r.ms_median / 1e3;
        fflush(stdout);
    }
    printf("%-20s all shapes: %.1f GFLOP/s (total flops / total median time)\n", "", flop / time / 1e9);
    pf_mm_engine_destroy(e);
    return 0;
}

typedef struct variant {
    const char *name;
    pf_mm_layout layout;
    unsigned flags;
    pf_mm_engine *e;
    pf_mm_ctx *c;
    pf_linear *lins[32];
    int copies;
    double ts[64];
} variant;

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void variant_free(variant *v)
{
    for (int i = 0; i < v->copies; i++)
        pf_linear_destroy(v->lins[i]);
    v->copies = 0;
    pf_mm_ctx_destroy(v->c);
    pf_mm_engine_destroy(v->e);
    v->c = NULL;
    v->e = NULL;
}

/* Engine + enough weight copies (>= 512 MB, at most 32) that calls stream from memory, not cache. */
static int variant_make(variant *v, pf_precision p, int64_t k, int64_t n, const uint16_t *w, pf_err *err)
{
    pf_mm_params o = {.precision = p, .layout = v->layout};
    if (pf_mm_engine_create(&o, &v->e, err) || pf_mm_ctx_create(v->e, &v->c, err))
        return -1;
    do {
        if (pf_linear_create1(v->e, v->name, n, k, PF_DT_BF16, w, NULL, PF_DT_F32, &v->lins[v->copies], err))
            return -1;
        v->copies++;
    } while (v->copies < 32 && (size_t)v->copies * pf_linear_bytes(v->lins[0]) < ((size_t)512 << 20));
    return 0;
}

static int time_variant(variant *v, int64_t m, const float *x, float *y, int rep, pf_err *err)
{
    const pf_linear *l = v->lins[rep % v->copies];
    double t0 = pf_now();
    if (pf_linear_forward(v->c, l, m, x, pf_linear_k(l), y, pf_linear_n(l), v->flags, err))
        return -1;
    v->ts[rep] = pf_now() - t0;
    return 0;
}

/* Decode shapes: all paths of one shape are timed interleaved (A B C A B C ...), so a neighbour's burst
 * of load hits them alike and the ratios stay meaningful on a shared machine. */
static int decode(pf_precision p)
{
    static const struct {
        const char *what;
        int64_t k, n;
    } shapes[] = {{"gate/up (PG1)", 2048, 16384}, {"down (PG1)", 16384, 2048}, {"LM head", 2048, 257216}};
    const int64_t ms[] = {1, 2, 4, 8, 16, 32, 64};
    variant fv[3] = {{.name = "onednn/packed", .layout = PF_LAYOUT_AUTO, .flags = PF_LINEAR_FORCE_ONEDNN},
                     {.name = "onednn/row-major", .layout = PF_LAYOUT_ROWMAJOR, .flags = PF_LINEAR_FORCE_ONEDNN},
                     {.name = "kernel/row-major", .layout = PF_LAYOUT_ROWMAJOR, .flags = PF_LINEAR_FORCE_KERNEL}};
    variant iv[4] = {{.name = "onednn/packed", .layout = PF_LAYOUT_AUTO, .flags = PF_LINEAR_FORCE_ONEDNN},
                     {.name = "onednn/row-major", .layout = PF_LAYOUT_ROWMAJOR, .flags = PF_LINEAR_FORCE_ONEDNN},
                     {.name = "kernel/row-major", .layout = PF_LAYOUT_ROWMAJOR, .flags = PF_LINEAR_FORCE_INT8_DYN},
                     {.name = "kernel-wo/row-major", .layout = PF_LAYOUT_ROWMAJOR, .flags = PF_LINEAR_FORCE_INT8_WO}};
    variant *vs = p == PF_PREC_INT8 ? iv : fv;
    const int nv = p == PF_PREC_INT8 ? 4 : 3;
    const int reps = g_reps > 64 ? 64 : g_reps;
    printf("\n[%s] decode: weights streamed per call vs triad %.1f GB/s (bound = weight bytes / triad);\n"
           "paths timed interleaved, %d reps each\n", pf_precision_name(p), g_triad, reps);
    printf("%-14s %4s %6s %7s  %-19s %-38s %8s %8s %7s %7s %8s %6s\n", "shape", "M", "K", "N", "path", "impl", "ms",
           "best ms", "GB/s", "x bound", "GFLOP/s", "MB");
    pf_err err;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        if (g_quick && s == 1)
            continue;
        const int64_t k = shapes[s].k, n = shapes[s].n;
        int nm = n > 100000 ? 5 : 7; /* LM head: M <= 16 (only the last token of each sequence) */
        uint16_t *w = malloc((size_t)n * (size_t)k * 2);
        float *x = malloc(sizeof(float) * 64 * (size_t)k), *y = malloc(sizeof(float) * 64 * (size_t)n);
        if (!w || !x || !y) {
            fprintf(stderr, "bench_gemm: out of memory\n");
            return -1;
        }
        for (size_t i = 0; i < (size_t)n * (size_t)k; i++) {
            uint64_t h = (i + 1) * 0x9e3779b97f4a7c15ull;
            h ^= h >> 29;
            w[i] = pf_f32_to_bf16(((float)(h & 0xffff) / 32768.0f - 1.0f) * 1.7f / 45.0f);
        }
        for (size_t i = 0; i < 64 * (size_t)k; i++)
            x[i] = (float)((int)((i * 2654435761u) >> 7 & 1023) - 512) / 256.0f;
        /* f32 LM heads are 2.1 GB each: run those paths one after the other to stay within memory */
        bool one_at_a_time = (double)n * (double)k * (p == PF_PREC_FP32 ? 4 : p == PF_PREC_BF16 ? 2 : 1) * nv > 4e9;
        for (int g = 0; g < (one_at_a_time ? nv : 1); g++) {
            int v0 = one_at_a_time ? g : 0, v1 = one_at_a_time ? g + 1 : nv;
            for (int v = v0; v < v1; v++)
                if (variant_make(&vs[v], p, k, n, w, &err)) {
                    fprintf(stderr, "bench_gemm: %s\n", err.msg);
                    return -1;
                }
            for (int i = 0; i < nm; i++) {
                char impl[4][128];
                for (int v = v0; v < v1; v++) {
                    if (pf_linear_impl(vs[v].c, vs[v].lins[0], ms[i], vs[v].flags, impl[v], sizeof impl[v], &err))
                        snprintf(impl[v], sizeof impl[v], "%.100s", err.msg);
                    for (int c = 0; c < vs[v].copies; c++) /* warm: primitives, page faults */
                        if (time_variant(&vs[v], ms[i], x, y, c % 64, &err))
                            return fprintf(stderr, "bench_gemm: %s\n", err.msg), -1;
                }
                for (int r = 0; r < reps; r++)
                    for (int v = v0; v < v1; v++)
                        if (time_variant(&vs[v], ms[i], x, y, r, &err))
                            return fprintf(stderr, "bench_gemm: %s\n", err.msg), -1;
                for (int v = v0; v < v1; v++) {
                    qsort(vs[v].ts, (size_t)reps, sizeof(double), cmp_d);
                    double med = vs[v].ts[reps / 2], best = vs[v].ts[0];
                    size_t bytes = pf_linear_bytes(vs[v].lins[0]);
                    double bound = (double)bytes / (g_triad * 1e9);
                    printf("%-14s %4lld %6lld %7lld  %-19s %-38s %8.3f %8.3f %7.1f %7.2f %8.1f %6.0f\n",
                           shapes[s].what, (long long)ms[i], (long long)k, (long long)n, vs[v].name, impl[v],
                           med * 1e3, best * 1e3, (double)bytes / med / 1e9, med / bound,
                           2.0 * (double)ms[i] * (double)k * (double)n / med / 1e9, (double)bytes / 1e6);
                }
                fflush(stdout);
            }
            for (int v = v0; v < v1; v++)
                variant_free(&vs[v]);
        }
        free(w), free(x), free(y);
    }
    return 0;
}

/* Why primitives are cached per M: oneDNN 2.6 with a run-time M (DNNL_RUNTIME_DIM_VAL). */
static void runtime_m(void)
{
    dnnl_engine_t eng;
    dnnl_stream_t st;
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) || dnnl_stream_create(&st, eng, dnnl_stream_default_flags))
        return;
    printf("\nrun-time M (one primitive for every M) vs fixed M, oneDNN K=2048 N=2048, weights format any:\n");
    const int64_t K = 2048, N = 2048, Ms[] = {16, 512};
    bool bf16_ok = pf_precision_probe()->ok[PF_PREC_BF16];
    for (int dt = 0; dt < (bf16_ok ? 2 : 1); dt++)
    for (int rt = 0; rt < 2; rt++)
        for (int i = 0; i < 2; i++) {
            dnnl_data_type_t xdt = dt ? dnnl_bf16 : dnnl_f32;
            size_t esz = dt ? 2 : 4;
            int64_t M = Ms[i];
            dnnl_memory_desc_t xmd, wmd, ymd, xc, yc;
            dnnl_dims_t xd = {rt ? DNNL_RUNTIME_DIM_VAL : M, K}, wd = {K, N}, yd = {rt ? DNNL_RUNTIME_DIM_VAL : M, N};
            dnnl_dims_t xs = {K, 1}, ys = {N, 1}, xcd = {M, K}, ycd = {M, N};
            dnnl_memory_desc_init_by_strides(&xmd, 2, xd, xdt, xs);
            dnnl_memory_desc_init_by_strides(&ymd, 2, yd, dnnl_f32, ys);
            dnnl_memory_desc_init_by_strides(&xc, 2, xcd, xdt, xs);
            dnnl_memory_desc_init_by_strides(&yc, 2, ycd, dnnl_f32, ys);
            dnnl_memory_desc_init_by_tag(&wmd, 2, wd, xdt, dnnl_format_tag_any);
            dnnl_matmul_desc_t md;
            dnnl_primitive_desc_t pd;
            dnnl_primitive_t prim;
            if (dnnl_matmul_desc_init(&md, &xmd, &wmd, NULL, &ymd) ||
                dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL)) {
                printf("  %-4s %s M=%lld: unimplemented\n", dt ? "bf16" : "f32", rt ? "run-time" : "fixed", (long long)M);
                continue;
            }
            const char *impl = "?";
            dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
            const dnnl_memory_desc_t *wq = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
            dnnl_memory_t xm, wm, ym;
            dnnl_primitive_create(&prim, pd);
            dnnl_memory_create(&xm, &xc, eng, DNNL_MEMORY_ALLOCATE);
            dnnl_memory_create(&wm, wq, eng, DNNL_MEMORY_ALLOCATE);
            dnnl_memory_create(&ym, &yc, eng, DNNL_MEMORY_ALLOCATE);
            void *ptr;
            dnnl_memory_get_data_handle(xm, &ptr);
            memset(ptr, 0, (size_t)M * (size_t)K * esz);
            dnnl_memory_get_data_handle(wm, &ptr);
            memset(ptr, 0, dnnl_memory_desc_get_size(wq));
            dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, ym}};
            double ts[9];
            for (int r = -1; r < 9; r++) {
                double t0 = pf_now();
                dnnl_primitive_execute(prim, st, 3, args);
                dnnl_stream_wait(st);
                if (r >= 0)
                    ts[r] = pf_now() - t0;
            }
            for (int a = 0; a < 9; a++)
                for (int b = a + 1; b < 9; b++)
                    if (ts[b] < ts[a]) {
                        double t = ts[a];
                        ts[a] = ts[b];
                        ts[b] = t;
                    }
            printf("  %-4s %-9s M=%-4lld %-22s %8.3f ms %8.1f GFLOP/s\n", dt ? "bf16" : "f32", rt ? "run-time" : "fixed",
                   (long long)M, impl, ts[4] * 1e3, 2.0 * (double)M * K * N / ts[4] / 1e9);
            dnnl_memory_destroy(xm), dnnl_memory_destroy(wm), dnnl_memory_destroy(ym);
            dnnl_primitive_destroy(prim);
            dnnl_primitive_desc_destroy(pd);
        }
    dnnl_stream_destroy(st);
    dnnl_engine_destroy(eng);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"precision", required_argument, NULL, 'p'},
                                         {"set", required_argument, NULL, 's'},
                                         {"reps", required_argument, NULL, 'r'},
                                         {"quick", no_argument, NULL, 'q'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *prec = "all", *set = "all";
    int c;
    while ((c = getopt_long(argc, argv, "p:s:r:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'p': prec = optarg; break;
        case 's': set = optarg; break;
        case 'r': g_reps = atoi(optarg) > 0 ? atoi(optarg) : 7; break;
        case 'q': g_quick = true; break;
        case 'h':
            printf("usage: bench_gemm [--precision all|fp32|bf16|int8] [--set all|prefill|decode|runtime] [--reps N] "
                   "[--quick]\n");
            return 0;
        default: return 2;
        }
    }
    pf_log_init_from_env();
    if (pf_log_get_level() == PF_LOG_INFO)
        pf_log_set_level(PF_LOG_WARN);
    char cpu[256];
    pf_cpu_describe(cpu, sizeof cpu);
    printf("bench_gemm: %s; %d OpenMP threads\n", cpu, omp_get_max_threads());
    const pf_precision_support *ps = pf_precision_probe();
    for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++)
        printf("  oneDNN matmul %-5s %-12s %s\n", pf_precision_name((pf_precision)p),
               ps->ok[p] ? "supported" : "unsupported", ps->impl[p]);
    line();
    pf_triad_result tr;
    pf_err err;
    if (pf_roofline_triad((size_t)1200 << 20, 7, &tr, &err) != 0) {
        fprintf(stderr, "bench_gemm: %s\n", err.msg);
        return 1;
    }
    g_triad = tr.gbs_median;
    printf("triad over %.2f GB: %.1f GB/s median, %.1f best (%d reps)\n", (double)tr.bytes / 1e9, tr.gbs_median,
           tr.gbs_best, tr.reps);
    for (int p = PF_PREC_FP32; p < PF_PREC_COUNT && strcmp(set, "runtime") != 0; p++) {
        if (strcmp(prec, "all") != 0 && strcmp(prec, pf_precision_name((pf_precision)p)) != 0)
            continue;
        if (!ps->ok[p]) {
            printf("\n[%s] not supported here (%s)\n", pf_precision_name((pf_precision)p), ps->impl[p]);
            continue;
        }
        line();
        if (strcmp(set, "decode") != 0 && prefill((pf_precision)p) != 0)
            return 1;
        if (strcmp(set, "prefill") != 0 && decode((pf_precision)p) != 0)
            return 1;
    }
    line();
    if (strcmp(set, "all") == 0 || strcmp(set, "runtime") == 0)
        runtime_m();
    /* the machine is shared: a second triad shows how much the bandwidth moved during the run */
    if (pf_roofline_triad((size_t)1200 << 20, 7, &tr, &err) == 0)
        printf("\ntriad again at the end: %.1f GB/s median (start: %.1f)\n", tr.gbs_median, g_triad);
    return 0;
}
