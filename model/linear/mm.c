/* mm.c - linear layers over oneDNN plus our small-M kernels (see mm.h). */
#include "model/linear/mm.h"

#include <dnnl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/log.h"
#include "model/linear/dnnl_util.h"
#include "model/linear/kernels.h"
#include "model/linear/quant.h"

/* Defaults from bench_gemm (AMD EPYC Zen 5, 2 threads; AVX2 measured with PALIFLOW_MAX_ISA=avx2). They
 * only matter where weights are row-major, i.e. where oneDNN prefers plain layouts (AVX2 gemm:jit): on
 * AVX-512 every precision gets oneDNN's packed brgemm layout, at least as fast as our kernels at every M.
 *  - fp32 on AVX2: our kernel beats gemm:jit up to M=16 (M=2: 2.0x, M=4: 1.7x, M=16: 1.13x), loses from
 *    M=32.
 *  - int8 on AVX2: our dynamic kernel beats gemm:jit (u8 x s8 -> s32) at every decode M (M=1: 2.5x,
 *    M=4: 1.9x, M=16: 1.5x, M=64: 1.1x). Weight-only int8 is slower than dynamic at every M (the f32
 *    conversions make it compute-bound even at M=1); it stays available as an option. */
#define DEFAULT_KERNEL_MAX_M 16
#define DEFAULT_INT8_KERNEL_MAX_M 64
#define KERNEL_M_BLOCK 64 /* activation rows per kernel pass (64 x K bytes of int8 rows stay in L2) */
#define DEFAULT_INT8_WO_MAX_M (-1)
#define DEFAULT_LAYOUT_M 1024
#define CACHE_CAP 256

struct pf_mm_engine {
    pf_mm_params opt;
    pf_precision prec;
    const pf_kernels *kt;
    int qmax;
    bool int8_onednn; /* oneDNN's u8 x s8 is exact for full-range weights here (VNNI); else int8 at prefill
                       * sizes runs our kernels in row blocks (AVX2 and up) or sgemm over dequantized codes */
    dnnl_engine_t eng;
};

struct pf_linear {
    char name[128];
    const pf_mm_engine *e;
    int64_t n, k;
    bool rowmajor;
    char layout[64];
    dnnl_memory_desc_t wmd;
    void *w;
    size_t wbytes, alloc_bytes;
    bool w_mapped;
    float *bias, *wscale;
    int32_t *wsum;
    dnnl_memory_t wmem, bmem;
};

typedef struct prim_entry {
    uint64_t hash, last_use;
    int64_t m, k, n, ldx, ldy;
    bool bias, acc, used;
    dnnl_memory_desc_t wmd;
    dnnl_primitive_t prim;
    dnnl_memory_t xmem, ymem, scratch;
    void *scratch_ptr;
    size_t scratch_size;
    char impl[80];
    bool is_ref;
} prim_entry;

struct pf_mm_ctx {
    const pf_mm_engine *e;
    dnnl_stream_t stream;
    prim_entry cache[CACHE_CAP];
    uint64_t clock;
    int created;
    void *scratch;
    size_t scratch_cap;
    void *xbuf; /* bf16 or int8 activations */
    size_t xbuf_cap;
    float *xscale;
    size_t xscale_cap;
    float *ybuf; /* dense output when the caller's y has a row stride */
    size_t ybuf_cap;
    float *deq; /* int8 weight block dequantized to f32 (PATH_INT8_DEQ) */
    size_t deq_cap;
    float *xf; /* activations quantized and dequantized (PATH_INT8_DEQ) */
    size_t xf_cap;
};

/* ---------------------------------------------------------------- engine */

int pf_mm_engine_create(const pf_mm_params *opt, pf_mm_engine **out, pf_err *err)
{
    *out = NULL;
    pf_mm_params o = {0};
    if (opt)
        o = *opt;
    dnnl_engine_t eng = pf_dnnl_engine(err);
    if (!eng)
        return -1;
    pf_precision prec;
    if (pf_precision_resolve(o.precision, &prec, err) != 0)
        return -1;
    if (o.kernel_max_m == 0)
        o.kernel_max_m = DEFAULT_KERNEL_MAX_M;
    if (o.int8_kernel_max_m == 0)
        o.int8_kernel_max_m = DEFAULT_INT8_KERNEL_MAX_M;
    if (o.int8_wo_max_m == 0)
        o.int8_wo_max_m = DEFAULT_INT8_WO_MAX_M;
    if (o.layout_m <= 0)
        o.layout_m = DEFAULT_LAYOUT_M;
    if (o.layout_m > PF_MM_MAX_M)
        return pf_errf(err, "mm options: layout_m %lld exceeds %d", (long long)o.layout_m, PF_MM_MAX_M);
    o.precision = prec;
    pf_mm_engine *e = calloc(1, sizeof *e);
    if (!e)
        return pf_errf(err, "mm engine: out of memory");
    e->opt = o;
    e->prec = prec;
    e->kt = pf_kernels_get();
    e->eng = eng;
    /* Full-range s8 weights everywhere: our kernels are exact for them (VNNI, or |q| x signed weights
     * without it), and where oneDNN's u8 x s8 is not (vpmaddubsw saturates 16-bit pair sums without VNNI),
     * prefill-sized products dequantize weight blocks and run sgemm instead: +-63 weights were measured to
     * cost int8 its accuracy (logits cosine 0.984 vs fp32 on golden cases, 0.994 at +-127). */
    e->qmax = 127;
    e->int8_onednn = pf_cpu_dnnl_int8_full_range();
    char d[256];
    pf_mm_engine_describe(e, d, sizeof d);
    pf_info("mm", "%s", d);
    *out = e;
    return 0;
}

void pf_mm_engine_destroy(pf_mm_engine *e)
{
    free(e);
}

pf_precision pf_mm_engine_precision(const pf_mm_engine *e)
{
    return e->prec;
}

const pf_mm_params *pf_mm_engine_params(const pf_mm_engine *e)
{
    return &e->opt;
}

void pf_mm_engine_describe(const pf_mm_engine *e, char *buf, size_t len)
{
    char cpu[200];
    pf_cpu_describe(cpu, sizeof cpu);
    const pf_precision_support *ps = pf_precision_probe();
    int n = snprintf(buf, len, "precision %s (oneDNN %s), kernels %s for M <= %d on row-major weights",
                     pf_precision_name(e->prec), ps->impl[e->prec], e->kt->name,
                     e->prec == PF_PREC_INT8 ? e->opt.int8_kernel_max_m : e->opt.kernel_max_m);
    if (e->prec == PF_PREC_INT8 && n > 0 && (size_t)n < len)
        n += snprintf(buf + n, len - (size_t)n, " (int8 dynamic; weight-only for M <= %d; weights +-%d; larger M: %s)",
                      e->opt.int8_wo_max_m, e->qmax,
                      e->int8_onednn ? "oneDNN u8s8" : "weights dequantized to f32 blocks for sgemm");
    if (n > 0 && (size_t)n < len)
        snprintf(buf + n, len - (size_t)n, "; %s", cpu);
}

/* ---------------------------------------------------------------- weights */

static void *big_alloc(size_t bytes, bool *mapped)
{
    /* Large weight buffers: anonymous mapping with transparent huge pages (fewer TLB misses when a
     * decode step streams them), zero-filled by the kernel. */
    if (bytes >= (4u << 20)) {
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
        madvise(p, bytes, MADV_HUGEPAGE);
        *mapped = true;
        return p;
    }
    *mapped = false;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (p)
        memset(p, 0, rounded);
    return p;
}

static void big_free(void *p, size_t bytes, bool mapped)
{
    if (!p)
        return;
    if (mapped)
        munmap(p, bytes);
    else
        free(p);
}

/* Row r (0 <= r < total n) of the stacked parts. */
static const pf_linear_part *part_of(const pf_linear_desc *d, int64_t r, int64_t *row)
{
    for (int i = 0; i < d->nparts; i++) {
        if (r < d->parts[i].n) {
            *row = r;
            return &d->parts[i];
        }
        r -= d->parts[i].n;
    }
    return NULL;
}

static void read_row_f32(const pf_linear_desc *d, int64_t r, float *dst)
{
    int64_t row;
    const pf_linear_part *p = part_of(d, r, &row);
    int64_t ld = p->ld ? p->ld : d->k;
    const uint8_t *src = (const uint8_t *)p->w + (size_t)row * (size_t)ld * pf_dtype_size(p->dtype);
    if (p->dtype == PF_DT_BF16) { /* the common case (checkpoints are bf16): inline, so it vectorizes */
        for (int64_t i = 0; i < d->k; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            uint32_t u = (uint32_t)h << 16;
            memcpy(&dst[i], &u, 4);
        }
        return;
    }
    pf_convert_to_f32(p->dtype, src, (size_t)d->k, dst);
}

static int check_desc(const pf_linear_desc *d, int64_t *n_total, bool *has_bias, pf_err *err)
{
    const char *name = d->name ? d->name : "linear";
    if (d->nparts < 1 || d->nparts > PF_LINEAR_MAX_PARTS)
        return pf_errf(err, "%s: %d weight parts (need 1..%d)", name, d->nparts, PF_LINEAR_MAX_PARTS);
    if (d->k < 1 || d->k > PF_MM_MAX_DIM)
        return pf_errf(err, "%s: in_features %lld out of range 1..%d", name, (long long)d->k, PF_MM_MAX_DIM);
    int64_t n = 0;
    *has_bias = false;
    for (int i = 0; i < d->nparts; i++) {
        const pf_linear_part *p = &d->parts[i];
        if (!p->w)
            return pf_errf(err, "%s: part %d: no weights", name, i);
        if (p->n < 1 || p->n > PF_MM_MAX_DIM)
            return pf_errf(err, "%s: part %d: out_features %lld out of range 1..%d", name, i, (long long)p->n,
                           PF_MM_MAX_DIM);
        if (p->dtype != PF_DT_F32 && p->dtype != PF_DT_BF16 && p->dtype != PF_DT_F16)
            return pf_errf(err, "%s: part %d: weights dtype %s (need F32, BF16 or F16)", name, i,
                           pf_dtype_name(p->dtype));
        if (p->ld != 0 && p->ld < d->k)
            return pf_errf(err, "%s: part %d: row stride %lld < in_features %lld", name, i, (long long)p->ld,
                           (long long)d->k);
        if (p->bias) {
            *has_bias = true;
            if (p->bias_dtype != PF_DT_F32 && p->bias_dtype != PF_DT_BF16 && p->bias_dtype != PF_DT_F16)
                return pf_errf(err, "%s: part %d: bias dtype %s (need F32, BF16 or F16)", name, i,
                               pf_dtype_name(p->bias_dtype));
        }
        n += p->n;
    }
    if (n > PF_MM_MAX_DIM)
        return pf_errf(err, "%s: out_features %lld exceeds %d", name, (long long)n, PF_MM_MAX_DIM);
    *n_total = n;
    return 0;
}

static dnnl_data_type_t wdt_of(pf_precision p)
{
    return p == PF_PREC_BF16 ? dnnl_bf16 : p == PF_PREC_INT8 ? dnnl_s8 : dnnl_f32;
}

static void blocking_string(const dnnl_memory_desc_t *md, char *buf, size_t len)
{
    const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
    int n = snprintf(buf, len, "packed ");
    for (int i = 0; i < b->inner_nblks && n > 0 && (size_t)n < len; i++)
        n += snprintf(buf + n, len - (size_t)n, "%lld%c", (long long)b->inner_blks[i], 'a' + (int)b->inner_idxs[i]);
}

/* Choose the weights layout: returns 0 and sets l->wmd / l->rowmajor. */
static int choose_layout(pf_linear *l, pf_err *err)
{
    const pf_mm_engine *e = l->e;
    dnnl_dims_t wd = {l->k, l->n};
    /* int8 without oneDNN's exact u8 x s8: our kernels and the dequantizing path read row-major weights */
    bool rowmajor = e->opt.layout == PF_LAYOUT_ROWMAJOR || (e->prec == PF_PREC_INT8 && !e->int8_onednn);
    if (!rowmajor) {
        pf_dnnl_mm mm = {.prec = e->prec, .m = e->opt.layout_m, .k = l->k, .n = l->n, .ldx = l->k, .ldy = l->n};
        dnnl_primitive_desc_t pd;
        dnnl_status_t s = pf_dnnl_matmul_pd(&mm, &pd);
        if (s != dnnl_success)
            return pf_errf(err, "%s: oneDNN has no %s matmul for K=%lld N=%lld: %s", l->name,
                           pf_precision_name(e->prec), (long long)l->k, (long long)l->n, pf_dnnl_status_name(s));
        const dnnl_memory_desc_t *q = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        l->wmd = *q;
        dnnl_primitive_desc_destroy(pd);
        rowmajor = pf_dnnl_md_is_plain(&l->wmd) && e->opt.layout != PF_LAYOUT_PACKED;
    }
    l->rowmajor = rowmajor;
    if (rowmajor) {
        dnnl_status_t s = dnnl_memory_desc_init_by_tag(&l->wmd, 2, wd, wdt_of(e->prec), dnnl_ba);
        if (s != dnnl_success)
            return pf_errf(err, "%s: weights descriptor: %s", l->name, pf_dnnl_status_name(s));
        snprintf(l->layout, sizeof l->layout, "row-major");
    } else {
        blocking_string(&l->wmd, l->layout, sizeof l->layout);
    }
    return 0;
}

/* Size of the N block of a blocked layout (product of inner blocks over dim 1). */
static int64_t n_block(const dnnl_memory_desc_t *md)
{
    int64_t b = 1;
    const dnnl_blocking_desc_t *bd = &md->format_desc.blocking;
    for (int i = 0; i < bd->inner_nblks; i++)
        if (bd->inner_idxs[i] == 1)
            b *= bd->inner_blks[i];
    return b;
}

/* Drop the source pages of rows [r0, r0+rows) (only whole pages inside the range; desc.release_source). */
static void release_rows(const pf_linear_desc *d, int64_t r0, int64_t rows)
{
    if (!d->release_source)
        return;
    long pg = sysconf(_SC_PAGESIZE);
    int64_t base = 0;
    for (int i = 0; i < d->nparts; i++) {
        const pf_linear_part *p = &d->parts[i];
        int64_t a = r0 > base ? r0 - base : 0, b = r0 + rows - base < p->n ? r0 + rows - base : p->n;
        base += p->n;
        if (b <= a)
            continue;
        size_t row = (size_t)(p->ld ? p->ld : d->k) * pf_dtype_size(p->dtype);
        uintptr_t lo = (uintptr_t)p->w + (size_t)a * row, hi = (uintptr_t)p->w + (size_t)b * row;
        lo = (lo + (uintptr_t)pg - 1) & ~(uintptr_t)(pg - 1);
        hi &= ~(uintptr_t)(pg - 1);
        if (hi > lo)
            madvise((void *)lo, hi - lo, MADV_DONTNEED);
    }
}

/* f32 rows [r0, r0+rows) of the stacked parts into tmp [rows][k]; refuses non-finite weights. */
static int gather_rows(const pf_linear *l, const pf_linear_desc *d, int64_t r0, int64_t rows, float *tmp, pf_err *err)
{
    int bad = 0;
    int64_t bad_row = 0;
#pragma omp parallel for schedule(static) if (rows * d->k > (1 << 16))
    for (int64_t i = 0; i < rows; i++) {
        float *dst = tmp + i * d->k;
        read_row_f32(d, r0 + i, dst);
        for (int64_t j = 0; j < d->k; j++)
            if (!isfinite(dst[j])) {
#pragma omp critical(pf_mm_bad)
                {
                    bad = 1;
                    bad_row = r0 + i;
                }
                break;
            }
    }
    if (bad)
        return pf_errf(err, "%s: weight row %lld holds a non-finite value", l->name, (long long)bad_row);
    return 0;
}

/* pf_quant_row_s8, vectorized by the kernels' tier (same numbers: round half to even, symmetric). */
static float quant_weight_row(const pf_linear *l, const float *w, int8_t *q, int32_t *sum)
{
    float scale;
    l->e->kt->quant_rows(w, l->k, 1, l->k, (uint8_t *)q, &scale, 0, l->e->qmax);
    int32_t s = 0;
    for (int64_t i = 0; i < l->k; i++)
        s += q[i];
    *sum = s;
    return scale;
}

static int fill_rowmajor(pf_linear *l, const pf_linear_desc *d, pf_err *err)
{
    const int64_t k = l->k, chunk = 256;
    float *tmp = malloc((size_t)chunk * (size_t)k * sizeof(float));
    if (!tmp)
        return pf_errf(err, "%s: out of memory converting weights", l->name);
    int rc = 0;
    for (int64_t r0 = 0; r0 < l->n && rc == 0; r0 += chunk) {
        int64_t rows = l->n - r0 < chunk ? l->n - r0 : chunk;
        if ((rc = gather_rows(l, d, r0, rows, tmp, err)) != 0)
            break;
        release_rows(d, r0, rows);
#pragma omp parallel for schedule(static) if (rows * k > (1 << 16))
        for (int64_t i = 0; i < rows; i++) {
            const float *src = tmp + i * k;
            size_t r = (size_t)(r0 + i);
            if (l->e->prec == PF_PREC_FP32) {
                memcpy((float *)l->w + r * (size_t)k, src, (size_t)k * sizeof(float));
            } else if (l->e->prec == PF_PREC_BF16) {
                uint16_t *dst = (uint16_t *)l->w + r * (size_t)k;
                for (int64_t j = 0; j < k; j++)
                    dst[j] = pf_f32_to_bf16(src[j]);
            } else {
                l->wscale[r] = quant_weight_row(l, src, (int8_t *)l->w + r * (size_t)k, &l->wsum[r]);
            }
        }
    }
    free(tmp);
    return rc;
}

/* A reorder from row-major rows (f32, or s8 for int8) into `rows` rows of the packed layout, built once per
 * chunk size and pointed at each chunk in turn: a submemory descriptor at each chunk's own offset would be
 * a new primitive (a JIT compile) per chunk. */
typedef struct chunk_reorder {
    dnnl_primitive_t prim;
    dnnl_memory_t src, dst;
    int64_t rows;
    bool at_offset; /* the descriptor holds the chunk's offset: point it at the start of the weights */
} chunk_reorder;

static void chunk_reorder_free(chunk_reorder *r)
{
    if (r->prim)
        dnnl_primitive_destroy(r->prim);
    if (r->src)
        dnnl_memory_destroy(r->src);
    if (r->dst)
        dnnl_memory_destroy(r->dst);
    memset(r, 0, sizeof *r);
}

/* first_row < 0: a reorder for any chunk of `rows` rows starting on a block boundary (pointed at it by
 * reorder_chunk); first_row >= 0: for exactly the rows from first_row to the end (the last chunk, which may
 * end inside a block: oneDNN handles that only as a submemory that reaches the end of the tensor). */
static dnnl_status_t chunk_reorder_make(const pf_linear *l, dnnl_data_type_t dt, int64_t rows, int64_t first_row,
                                        chunk_reorder *r)
{
    dnnl_memory_desc_t smd, dmd;
    dnnl_dims_t dims = {l->k, rows}, strides = {1, l->k}, offs = {0, first_row < 0 ? 0 : first_row};
    dnnl_primitive_desc_t pd = NULL;
    r->rows = rows;
    r->at_offset = first_row >= 0;
    dnnl_status_t s = dnnl_memory_desc_init_by_strides(&smd, 2, dims, dt, strides);
    if (s == dnnl_success)
        s = dnnl_memory_desc_init_submemory(&dmd, &l->wmd, dims, offs);
    if (s == dnnl_success)
        s = dnnl_reorder_primitive_desc_create(&pd, &smd, l->e->eng, &dmd, l->e->eng, NULL);
    if (s == dnnl_success)
        s = dnnl_primitive_create(&r->prim, pd);
    if (s == dnnl_success)
        s = dnnl_memory_create(&r->src, &smd, l->e->eng, DNNL_MEMORY_NONE);
    if (s == dnnl_success)
        s = dnnl_memory_create(&r->dst, &dmd, l->e->eng, DNNL_MEMORY_NONE);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    return s;
}

/* Rows [r0, r0+rows) into their place: N blocks are the outer dimension of the layouts oneDNN picks for
 * matmul weights (BA...), so a chunk starting on a block boundary starts at (r0 / block) * stride[N]. */
static int reorder_chunk(pf_linear *l, chunk_reorder *r, const void *tmp, int64_t r0, dnnl_stream_t st, pf_err *err)
{
    const dnnl_blocking_desc_t *b = &l->wmd.format_desc.blocking;
    int64_t blk = 1;
    for (int i = 0; i < b->inner_nblks; i++)
        if (b->inner_idxs[i] == 1)
            blk *= b->inner_blks[i];
    size_t esz = l->e->prec == PF_PREC_FP32 ? 4 : l->e->prec == PF_PREC_BF16 ? 2 : 1;
    size_t off = r->at_offset ? 0 : (size_t)(r0 / blk) * (size_t)b->strides[1] * esz;
    dnnl_memory_set_data_handle(r->src, (void *)tmp);
    dnnl_memory_set_data_handle(r->dst, (uint8_t *)l->w + off);
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, r->src}, {DNNL_ARG_TO, r->dst}};
    dnnl_status_t s = dnnl_primitive_execute(r->prim, st, 2, args);
    if (s == dnnl_success)
        s = dnnl_stream_wait(st);
    if (s != dnnl_success)
        return pf_errf(err, "%s: reorder of weight rows %lld..%lld into %s: %s", l->name, (long long)r0,
                       (long long)(r0 + r->rows), l->layout, pf_dnnl_status_name(s));
    return 0;
}

/* The packed layouts we accept: plain strides over (K, N) blocks with N blocks outermost. */
static bool n_blocks_outermost(const dnnl_memory_desc_t *md)
{
    const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
    return md->format_kind == dnnl_blocked && md->ndims == 2 && md->offset0 == 0 &&
           b->strides[1] >= b->strides[0] && md->extra.flags == 0;
}

static int fill_packed(pf_linear *l, const pf_linear_desc *d, pf_err *err)
{
    /* Chunks of whole N blocks of about 8 MB of f32, so a 257k-row LM head never needs a full f32 copy. */
    int64_t blk = n_block(&l->wmd);
    int64_t chunk = ((8 << 20) / (int64_t)sizeof(float) / l->k + blk - 1) / blk * blk;
    if (chunk < blk)
        chunk = blk;
    if (chunk > l->n)
        chunk = l->n;
    if (!n_blocks_outermost(&l->wmd))
        return pf_errf(err, "%s: oneDNN chose a weights layout (%s) whose N blocks are not outermost", l->name,
                       l->layout);
    bool int8 = l->e->prec == PF_PREC_INT8;
    dnnl_data_type_t dt = int8 ? dnnl_s8 : dnnl_f32;
    float *tmp = malloc((size_t)chunk * (size_t)l->k * sizeof(float));
    int8_t *q = int8 ? malloc((size_t)chunk * (size_t)l->k) : NULL;
    chunk_reorder full = {0}, last = {0};
    dnnl_stream_t st = NULL;
    int rc = 0;
    if (!tmp || (int8 && !q))
        rc = pf_errf(err, "%s: out of memory converting weights", l->name);
    dnnl_status_t s = dnnl_success;
    if (rc == 0)
        s = dnnl_stream_create(&st, l->e->eng, dnnl_stream_default_flags);
    if (rc == 0 && s == dnnl_success)
        s = chunk_reorder_make(l, dt, chunk, -1, &full);
    if (rc == 0 && s == dnnl_success && l->n % chunk)
        s = chunk_reorder_make(l, dt, l->n % chunk, l->n - l->n % chunk, &last);
    if (rc == 0 && s != dnnl_success)
        rc = pf_errf(err, "%s: reorder into %s: %s", l->name, l->layout, pf_dnnl_status_name(s));
    for (int64_t r0 = 0; r0 < l->n && rc == 0; r0 += chunk) {
        int64_t rows = l->n - r0 < chunk ? l->n - r0 : chunk;
        rc = gather_rows(l, d, r0, rows, tmp, err);
        release_rows(d, r0, rows);
        if (rc == 0 && int8) {
#pragma omp parallel for schedule(static) if (rows * l->k > (1 << 16))
            for (int64_t i = 0; i < rows; i++)
                l->wscale[r0 + i] = quant_weight_row(l, tmp + i * l->k, q + i * l->k, &l->wsum[r0 + i]);
        }
        if (rc == 0)
            rc = reorder_chunk(l, rows == chunk ? &full : &last, int8 ? (const void *)q : tmp, r0, st, err);
    }
    chunk_reorder_free(&full);
    chunk_reorder_free(&last);
    if (st)
        dnnl_stream_destroy(st);
    free(tmp);
    free(q);
    return rc;
}

/* The oneDNN primitive the prefill path will use must exist (and not be ref:) before we accept the weights. */
static int check_prefill_impl(const pf_linear *l, pf_err *err)
{
    pf_dnnl_mm mm = {.prec = l->e->prec, .m = l->e->opt.layout_m, .k = l->k, .n = l->n, .ldx = l->k, .ldy = l->n,
                     .bias = l->bias != NULL, .wmd = &l->wmd};
    dnnl_primitive_desc_t pd;
    dnnl_status_t s = pf_dnnl_matmul_pd(&mm, &pd);
    if (s != dnnl_success)
        return pf_errf(err, "%s: oneDNN %s matmul on %s weights (K=%lld N=%lld): %s", l->name,
                       pf_precision_name(l->e->prec), l->layout, (long long)l->k, (long long)l->n,
                       pf_dnnl_status_name(s));
    const char *impl = pf_dnnl_impl(pd);
    bool ref = pf_dnnl_impl_is_ref(impl);
    pf_debug("mm", "%s: N=%lld K=%lld %s weights %s, oneDNN M=%lld: %s", l->name, (long long)l->n, (long long)l->k,
             pf_precision_name(l->e->prec), l->layout, (long long)l->e->opt.layout_m, impl);
    if (ref && !l->e->opt.allow_ref) {
        pf_errf(err, "%s: oneDNN picked its reference implementation (%s) for %s matmul K=%lld N=%lld", l->name,
                impl, pf_precision_name(l->e->prec), (long long)l->k, (long long)l->n);
        dnnl_primitive_desc_destroy(pd);
        return -1;
    }
    dnnl_primitive_desc_destroy(pd);
    return 0;
}

int pf_linear_create(const pf_mm_engine *e, const pf_linear_desc *d, pf_linear **out, pf_err *err)
{
    *out = NULL;
    int64_t n = 0;
    bool has_bias = false;
    if (check_desc(d, &n, &has_bias, err) != 0)
        return -1;
    pf_linear *l = calloc(1, sizeof *l);
    if (!l)
        return pf_errf(err, "%s: out of memory", d->name ? d->name : "linear");
    snprintf(l->name, sizeof l->name, "%s", d->name ? d->name : "linear");
    l->e = e;
    l->n = n;
    l->k = d->k;
    int rc = choose_layout(l, err);
    if (rc == 0) {
        l->wbytes = dnnl_memory_desc_get_size(&l->wmd);
        l->alloc_bytes = l->wbytes;
        l->w = big_alloc(l->wbytes, &l->w_mapped);
        if (has_bias)
            l->bias = calloc((size_t)n, sizeof(float));
        if (e->prec == PF_PREC_INT8) {
            l->wscale = malloc((size_t)n * sizeof(float));
            l->wsum = malloc((size_t)n * sizeof(int32_t));
        }
        if (!l->w || (has_bias && !l->bias) || (e->prec == PF_PREC_INT8 && (!l->wscale || !l->wsum)))
            rc = pf_errf(err, "%s: out of memory for %zu bytes of weights", l->name, l->wbytes);
    }
    if (rc == 0 && has_bias) {
        int64_t off = 0;
        for (int i = 0; i < d->nparts; i++) {
            if (d->parts[i].bias)
                pf_convert_to_f32(d->parts[i].bias_dtype, d->parts[i].bias, (size_t)d->parts[i].n, l->bias + off);
            off += d->parts[i].n;
        }
    }
    if (rc == 0)
        rc = l->rowmajor ? fill_rowmajor(l, d, err) : fill_packed(l, d, err);
    if (rc == 0) /* the pages that straddled two conversion chunks */
        release_rows(d, 0, n);
    dnnl_status_t s = dnnl_success;
    if (rc == 0) {
        s = dnnl_memory_create(&l->wmem, &l->wmd, e->eng, l->w);
        if (s == dnnl_success && l->bias) {
            dnnl_memory_desc_t bmd;
            dnnl_dims_t bd = {1, n};
            s = dnnl_memory_desc_init_by_tag(&bmd, 2, bd, dnnl_f32, dnnl_ab);
            if (s == dnnl_success)
                s = dnnl_memory_create(&l->bmem, &bmd, e->eng, l->bias);
        }
        if (s != dnnl_success)
            rc = pf_errf(err, "%s: oneDNN memory: %s", l->name, pf_dnnl_status_name(s));
    }
    if (rc == 0 && (e->prec != PF_PREC_INT8 || e->int8_onednn))
        rc = check_prefill_impl(l, err);
    if (rc != 0) {
        pf_linear_destroy(l);
        return -1;
    }
    *out = l;
    return 0;
}

int pf_linear_create1(const pf_mm_engine *e, const char *name, int64_t n, int64_t k, pf_dtype dtype, const void *w,
                      const void *bias, pf_dtype bias_dtype, pf_linear **out, pf_err *err)
{
    pf_linear_desc d = {.name = name, .k = k, .nparts = 1};
    d.parts[0] = (pf_linear_part){.w = w, .dtype = dtype, .n = n, .bias = bias, .bias_dtype = bias_dtype};
    return pf_linear_create(e, &d, out, err);
}

void pf_linear_destroy(pf_linear *l)
{
    if (!l)
        return;
    if (l->wmem)
        dnnl_memory_destroy(l->wmem);
    if (l->bmem)
        dnnl_memory_destroy(l->bmem);
    big_free(l->w, l->alloc_bytes, l->w_mapped);
    free(l->bias);
    free(l->wscale);
    free(l->wsum);
    free(l);
}

int64_t pf_linear_n(const pf_linear *l)
{
    return l->n;
}

int64_t pf_linear_k(const pf_linear *l)
{
    return l->k;
}

size_t pf_linear_bytes(const pf_linear *l)
{
    size_t b = l->wbytes;
    if (l->bias)
        b += (size_t)l->n * sizeof(float);
    if (l->wscale)
        b += (size_t)l->n * (sizeof(float) + sizeof(int32_t));
    return b;
}

const char *pf_linear_layout(const pf_linear *l)
{
    return l->layout;
}

/* ---------------------------------------------------------------- per-thread context */

int pf_mm_ctx_create(const pf_mm_engine *e, pf_mm_ctx **out, pf_err *err)
{
    *out = NULL;
    pf_mm_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return pf_errf(err, "mm context: out of memory");
    c->e = e;
    dnnl_status_t s = dnnl_stream_create(&c->stream, e->eng, dnnl_stream_default_flags);
    if (s != dnnl_success) {
        free(c);
        return pf_errf(err, "mm context: oneDNN stream: %s", pf_dnnl_status_name(s));
    }
    *out = c;
    return 0;
}

static void entry_clear(prim_entry *p)
{
    if (p->prim)
        dnnl_primitive_destroy(p->prim);
    dnnl_memory_t mems[] = {p->xmem, p->ymem, p->scratch};
    for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++)
        if (mems[i])
            dnnl_memory_destroy(mems[i]);
    memset(p, 0, sizeof *p);
}

void pf_mm_ctx_destroy(pf_mm_ctx *c)
{
    if (!c)
        return;
    for (int i = 0; i < CACHE_CAP; i++)
        if (c->cache[i].used)
            entry_clear(&c->cache[i]);
    dnnl_stream_destroy(c->stream);
    free(c->scratch);
    free(c->xbuf);
    free(c->xscale);
    free(c->ybuf);
    free(c->deq);
    free(c->xf);
    free(c);
}

void pf_mm_ctx_stats(const pf_mm_ctx *c, int *cached, int *created)
{
    int n = 0;
    for (int i = 0; i < CACHE_CAP; i++)
        n += c->cache[i].used;
    *cached = n;
    *created = c->created;
}

static int grow(void **buf, size_t *cap, size_t need, pf_err *err)
{
    if (need <= *cap)
        return 0;
    size_t want = need + need / 4;
    void *p = aligned_alloc(64, (want + 63) & ~(size_t)63);
    if (!p)
        return pf_errf(err, "mm context: out of memory for %zu bytes of scratch", need);
    free(*buf);
    *buf = p;
    *cap = want;
    return 0;
}

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h;
}

static uint64_t key_hash(const pf_dnnl_mm *mm)
{
    uint64_t h = 1469598103934665603ull;
    h = mix(h, (uint64_t)mm->m);
    h = mix(h, (uint64_t)mm->k);
    h = mix(h, (uint64_t)mm->n);
    h = mix(h, (uint64_t)mm->ldx);
    h = mix(h, (uint64_t)mm->ldy);
    h = mix(h, (uint64_t)mm->bias * 2 + mm->accumulate);
    const dnnl_blocking_desc_t *b = &mm->wmd->format_desc.blocking;
    for (int i = 0; i < b->inner_nblks; i++)
        h = mix(h, (uint64_t)b->inner_blks[i] * 16 + (uint64_t)b->inner_idxs[i]);
    h = mix(h, (uint64_t)b->strides[0]);
    return h;
}

/* Each distinct (precision, implementation) is logged once per process at info level, so a run shows
 * which oneDNN kernels it got without debug logging; every primitive is logged at debug level. */
static void log_first_use(pf_precision prec, const char *impl, const char *name, const pf_dnnl_mm *mm)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static char seen[32][96];
    static int nseen;
    char key[96];
    snprintf(key, sizeof key, "%s %s", pf_precision_name(prec), impl);
    pthread_mutex_lock(&lock);
    bool found = false;
    for (int i = 0; i < nseen && !found; i++)
        found = strcmp(seen[i], key) == 0;
    if (!found && nseen < 32)
        memcpy(seen[nseen++], key, sizeof key);
    pthread_mutex_unlock(&lock);
    if (!found)
        pf_info("mm", "oneDNN %s matmul: %s (first used by %s, M=%lld K=%lld N=%lld)", pf_precision_name(prec), impl,
                name, (long long)mm->m, (long long)mm->k, (long long)mm->n);
}

/* Find or create the primitive for this shape. */
static prim_entry *get_prim(pf_mm_ctx *c, const pf_linear *l, const pf_dnnl_mm *mm, pf_err *err)
{
    uint64_t h = key_hash(mm);
    prim_entry *free_slot = NULL, *lru = NULL;
    for (int i = 0; i < CACHE_CAP; i++) {
        prim_entry *p = &c->cache[i];
        if (!p->used) {
            if (!free_slot)
                free_slot = p;
            continue;
        }
        if (p->hash == h && p->m == mm->m && p->k == mm->k && p->n == mm->n && p->ldx == mm->ldx &&
            p->ldy == mm->ldy && p->bias == mm->bias && p->acc == mm->accumulate &&
            dnnl_memory_desc_equal(&p->wmd, mm->wmd)) {
            p->last_use = ++c->clock;
            return p;
        }
        if (!lru || p->last_use < lru->last_use)
            lru = p;
    }
    prim_entry *victim = free_slot ? free_slot : lru;
    if (victim->used)
        entry_clear(victim);
    prim_entry *p = victim;
    dnnl_primitive_desc_t pd;
    dnnl_status_t s = pf_dnnl_matmul_pd(mm, &pd);
    if (s != dnnl_success) {
        pf_errf(err, "%s: oneDNN %s matmul M=%lld K=%lld N=%lld: %s", l->name, pf_precision_name(mm->prec),
                (long long)mm->m, (long long)mm->k, (long long)mm->n, pf_dnnl_status_name(s));
        return NULL;
    }
    snprintf(p->impl, sizeof p->impl, "%s", pf_dnnl_impl(pd));
    p->is_ref = pf_dnnl_impl_is_ref(p->impl);
    log_first_use(mm->prec, p->impl, l->name, mm);
    pf_debug("mm", "%s: %s matmul M=%lld K=%lld N=%lld%s%s: %s", l->name, pf_precision_name(mm->prec),
             (long long)mm->m, (long long)mm->k, (long long)mm->n, mm->bias ? " +bias" : "",
             mm->accumulate ? " +sum" : "", p->impl);
    const dnnl_memory_desc_t *xmd = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *ymd = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    p->scratch_size = smd ? dnnl_memory_desc_get_size(smd) : 0;
    s = dnnl_primitive_create(&p->prim, pd);
    if (s == dnnl_success)
        s = dnnl_memory_create(&p->xmem, xmd, c->e->eng, DNNL_MEMORY_NONE);
    if (s == dnnl_success)
        s = dnnl_memory_create(&p->ymem, ymd, c->e->eng, DNNL_MEMORY_NONE);
    if (s == dnnl_success && p->scratch_size)
        s = dnnl_memory_create(&p->scratch, smd, c->e->eng, DNNL_MEMORY_NONE);
    dnnl_primitive_desc_destroy(pd);
    p->used = true; /* so entry_clear frees what was made, on failure too */
    if (s != dnnl_success) {
        entry_clear(p);
        pf_errf(err, "%s: oneDNN primitive M=%lld: %s", l->name, (long long)mm->m, pf_dnnl_status_name(s));
        return NULL;
    }
    p->hash = h;
    p->m = mm->m;
    p->k = mm->k;
    p->n = mm->n;
    p->ldx = mm->ldx;
    p->ldy = mm->ldy;
    p->bias = mm->bias;
    p->acc = mm->accumulate;
    p->wmd = *mm->wmd;
    p->last_use = ++c->clock;
    c->created++;
    return p;
}

/* ---------------------------------------------------------------- forward */

typedef enum { PATH_ONEDNN, PATH_KERNEL, PATH_KERNEL_WO, PATH_KERNEL_DYN, PATH_INT8_DEQ } mm_path;

static mm_path choose_path(const pf_mm_engine *e, const pf_linear *l, int64_t m, unsigned flags)
{
    if (e->prec == PF_PREC_INT8 && !e->int8_onednn) {
        if (flags & PF_LINEAR_FORCE_INT8_WO)
            return PATH_KERNEL_WO;
        if ((flags & (PF_LINEAR_FORCE_KERNEL | PF_LINEAR_FORCE_INT8_DYN)) || m <= e->opt.int8_kernel_max_m)
            return m <= e->opt.int8_wo_max_m ? PATH_KERNEL_WO : PATH_KERNEL_DYN;
        /* Prefill sizes: our SIMD kernels over row blocks of KERNEL_M_BLOCK (about 1.7x the f32 GEMM rate on
         * AVX2, measured with bench_gemm); plain C kernels are slower than sgemm over the integer codes. */
        return e->kt->tier >= PF_TIER_AVX2 ? PATH_KERNEL_DYN : PATH_INT8_DEQ;
    }
    if ((flags & PF_LINEAR_FORCE_ONEDNN) || !l->rowmajor)
        return PATH_ONEDNN;
    bool forced = flags & (PF_LINEAR_FORCE_KERNEL | PF_LINEAR_FORCE_INT8_WO | PF_LINEAR_FORCE_INT8_DYN);
    if (!forced && m > (e->prec == PF_PREC_INT8 ? e->opt.int8_kernel_max_m : e->opt.kernel_max_m))
        return PATH_ONEDNN;
    if (e->prec != PF_PREC_INT8)
        return PATH_KERNEL;
    if (flags & PF_LINEAR_FORCE_INT8_WO)
        return PATH_KERNEL_WO;
    if (flags & PF_LINEAR_FORCE_INT8_DYN)
        return PATH_KERNEL_DYN;
    return m <= e->opt.int8_wo_max_m ? PATH_KERNEL_WO : PATH_KERNEL_DYN;
}

/* oneDNN always sees dense activations and outputs: with a row stride its brgemm kernels give way to
 * gemm:jit, which cannot read packed weights and falls back to ref:any. The forward copies strided rows. */
static void fill_mm(const pf_linear *l, int64_t m, unsigned flags, pf_dnnl_mm *mm)
{
    bool int8 = l->e->prec == PF_PREC_INT8; /* int8: bias and accumulation happen in our epilogue */
    *mm = (pf_dnnl_mm){.prec = l->e->prec, .m = m, .k = l->k, .n = l->n, .ldx = l->k, .ldy = l->n,
                       .bias = l->bias != NULL && !int8,
                       .accumulate = (flags & PF_LINEAR_ACCUMULATE) != 0 && !int8, .wmd = &l->wmd};
}

static int check_args(const pf_linear *l, int64_t m, const float *x, int64_t ldx, const float *y, int64_t ldy,
                      pf_err *err)
{
    if (m < 0 || m > PF_MM_MAX_M)
        return pf_errf(err, "%s: M=%lld out of range 0..%d", l->name, (long long)m, PF_MM_MAX_M);
    if (m > 0 && (!x || !y))
        return pf_errf(err, "%s: NULL activations", l->name);
    if (ldx < l->k || ldy < l->n)
        return pf_errf(err, "%s: row strides ldx=%lld ldy=%lld below K=%lld / N=%lld", l->name, (long long)ldx,
                       (long long)ldy, (long long)l->k, (long long)l->n);
    return 0;
}

static const char *wtype_name(pf_precision p)
{
    return p == PF_PREC_BF16 ? "bf16" : p == PF_PREC_INT8 ? "int8" : "f32";
}

int pf_linear_impl(pf_mm_ctx *c, const pf_linear *l, int64_t m, unsigned flags, char *buf, size_t len, pf_err *err)
{
    if (m < 0 || m > PF_MM_MAX_M)
        return pf_errf(err, "%s: M=%lld out of range 0..%d", l->name, (long long)m, PF_MM_MAX_M);
    mm_path path = choose_path(c->e, l, m, flags);
    const char *kn = c->e->kt->name;
    switch (path) {
    case PATH_KERNEL: snprintf(buf, len, "kernel:%s/%s", kn, wtype_name(c->e->prec)); return 0;
    case PATH_KERNEL_WO: snprintf(buf, len, "kernel:%s/int8-weight-only", kn); return 0;
    case PATH_KERNEL_DYN: snprintf(buf, len, "kernel:%s/int8-dynamic", kn); return 0;
    case PATH_INT8_DEQ: snprintf(buf, len, "dequantize+onednn:sgemm"); return 0;
    default: break;
    }
    pf_dnnl_mm mm;
    fill_mm(l, m < 1 ? 1 : m, flags, &mm);
    prim_entry *p = get_prim(c, l, &mm, err);
    if (!p)
        return -1;
    snprintf(buf, len, "onednn:%s", p->impl);
    if (p->is_ref && !c->e->opt.allow_ref)
        return pf_errf(err, "%s: oneDNN picked its reference implementation (%s) for M=%lld", l->name, p->impl,
                       (long long)m);
    return 0;
}

static void convert_bf16(const pf_kernels *kt, int64_t m, int64_t k, const float *x, int64_t ldx, uint16_t *dst)
{
#pragma omp parallel for schedule(static) if (m * k >= (1 << 17))
    for (int64_t i = 0; i < m; i++)
        kt->to_bf16(x + i * ldx, dst + i * k, (size_t)k);
}

static void quantize(const pf_kernels *kt, int64_t m, int64_t k, const float *x, int64_t ldx, uint8_t *dst,
                     float *scale, int offset)
{
#pragma omp parallel for schedule(static) if (m * k >= (1 << 17))
    for (int64_t i = 0; i < m; i++)
        kt->quant_rows(x + i * ldx, ldx, 1, k, dst + i * k, scale + i, offset, 127);
}

static void copy_rows(int64_t m, int64_t n, const float *src, int64_t lds, float *dst, int64_t ldd)
{
#pragma omp parallel for schedule(static) if (m * n >= (1 << 17))
    for (int64_t i = 0; i < m; i++)
        memcpy(dst + i * ldd, src + i * lds, (size_t)n * sizeof(float));
}

/* int8: y[i][j] (=|+=) (acc[i][j] - 128 wsum[j]) xs[i] ws[j] + b[j], from oneDNN's exact s32 sums of
 * (q_x + 128) * q_w, in the same order of float operations as our kernels. acc may alias y (dense). */
static void int8_epilogue(const pf_linear *l, int64_t m, const int32_t *acc, const float *xs, float *y, int64_t ldy,
                          bool accumulate)
{
    const int64_t n = l->n;
    const float *ws = l->wscale, *b = l->bias;
    const int32_t *wsum = l->wsum;
#pragma omp parallel for schedule(static) if (m * n >= (1 << 15))
    for (int64_t i = 0; i < m; i++) {
        const int32_t *a = acc + i * n;
        float *r = y + i * ldy;
        const float x = xs[i];
        for (int64_t j = 0; j < n; j++) {
            float v = (float)(a[j] - 128 * wsum[j]) * x * ws[j];
            if (b)
                v += b[j];
            r[j] = accumulate ? r[j] + v : v;
        }
    }
}

static int run_kernel(pf_mm_ctx *c, const pf_linear *l, mm_path path, int64_t m, const float *x, int64_t ldx,
                      float *y, int64_t ldy, unsigned flags, pf_err *err)
{
    const pf_kernels *kt = c->e->kt;
    pf_gemv g = {.m = m, .n = l->n, .k = l->k, .x = x, .ldx = ldx, .w = l->w, .wscale = l->wscale,
                 .wsum = l->wsum, .bias = l->bias, .y = y, .ldy = ldy,
                 .accumulate = (flags & PF_LINEAR_ACCUMULATE) != 0};
    pf_wtype wt = c->e->prec == PF_PREC_BF16 ? PF_W_BF16 : c->e->prec == PF_PREC_INT8 ? PF_W_S8 : PF_W_F32;
    if (path == PATH_KERNEL_DYN) {
        if (grow(&c->xbuf, &c->xbuf_cap, (size_t)m * (size_t)l->k, err) ||
            grow((void **)&c->xscale, &c->xscale_cap, (size_t)m * sizeof(float), err))
            return -1;
        quantize(kt, m, l->k, x, ldx, c->xbuf, c->xscale, 128);
        g.xq = c->xbuf;
        g.xscale = c->xscale;
    }
    /* The kernels stream all m activation rows past each block of weight rows: in blocks of KERNEL_M_BLOCK
     * rows those stay in L2 (each row's result is the same whatever the blocking). */
    pf_gemv_fn fn = pf_kernels_gemv_fn(kt, wt, path == PATH_KERNEL_DYN);
    for (int64_t m0 = 0; m0 < m; m0 += KERNEL_M_BLOCK) {
        pf_gemv b = g;
        b.m = m - m0 < KERNEL_M_BLOCK ? m - m0 : KERNEL_M_BLOCK;
        b.x = x + m0 * ldx;
        b.xq = g.xq ? g.xq + m0 * l->k : NULL;
        b.xscale = g.xscale ? g.xscale + m0 : NULL;
        b.y = y + m0 * ldy;
        pf_gemv_run(fn, &b);
    }
    return 0;
}

/* int8 where oneDNN's u8 x s8 is not exact (no VNNI), at prefill sizes: the integer products of the dynamic
 * int8 kernels, computed by sgemm. Activations are quantized per row exactly as for those kernels, and
 * activation and weight codes (blocks of weight rows) become f32 integers; an f32 sum of integer products is
 * exact while it stays below 2^24 in magnitude (sums of +-127 * +-127 products over K terms: far below for
 * real activations), so the result, after the same epilogue, is bitwise that of the integer kernels whatever
 * M or the summation order: a row gets the same numbers alone or in any batch. At the f32 GEMM rate. */
static int run_int8_deq(pf_mm_ctx *c, const pf_linear *l, int64_t m, const float *x, int64_t ldx, float *y,
                        int64_t ldy, unsigned flags, pf_err *err)
{
    const int64_t k = l->k;
    int64_t blk = ((int64_t)4 << 20) / k; /* ~16 MB of f32 per block */
    blk = blk < 16 ? 16 : blk > l->n ? l->n : blk;
    bool acc = (flags & PF_LINEAR_ACCUMULATE) != 0;
    if (grow((void **)&c->deq, &c->deq_cap, (size_t)blk * (size_t)k * sizeof(float), err) ||
        grow((void **)&c->xf, &c->xf_cap, (size_t)m * (size_t)k * sizeof(float), err) ||
        grow(&c->xbuf, &c->xbuf_cap, (size_t)m * (size_t)k, err) ||
        grow((void **)&c->xscale, &c->xscale_cap, (size_t)m * sizeof(float), err) ||
        grow((void **)&c->ybuf, &c->ybuf_cap, (size_t)m * (size_t)blk * sizeof(float), err))
        return -1;
    quantize(c->e->kt, m, k, x, ldx, c->xbuf, c->xscale, 128);
    const uint8_t *xq = c->xbuf;
    float *xf = c->xf;
#pragma omp parallel for schedule(static) if (m * k >= (1 << 16))
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < k; j++)
            xf[i * k + j] = (float)((int)xq[i * k + j] - 128);
    const int8_t *q = l->w;
    for (int64_t n0 = 0; n0 < l->n; n0 += blk) {
        int64_t nb = l->n - n0 < blk ? l->n - n0 : blk;
        float *d = c->deq, *t = c->ybuf;
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < nb; r++) {
            const int8_t *qr = q + (size_t)(n0 + r) * (size_t)k;
            float *dr = d + (size_t)r * (size_t)k;
            for (int64_t j = 0; j < k; j++)
                dr[j] = (float)qr[j];
        }
        dnnl_status_t s = dnnl_sgemm('N', 'T', m, nb, k, 1.0f, xf, k, d, k, 0.0f, t, nb);
        if (s != dnnl_success)
            return pf_errf(err, "%s: sgemm M=%lld N=%lld K=%lld: %s", l->name, (long long)m, (long long)nb,
                           (long long)k, pf_dnnl_status_name(s));
        /* the integer kernels' epilogue: (float)(sum) * xscale * wscale (+ bias) */
        const float *ws = l->wscale + n0, *b = l->bias ? l->bias + n0 : NULL;
#pragma omp parallel for schedule(static) if (m * nb >= (1 << 15))
        for (int64_t i = 0; i < m; i++) {
            const float xs = c->xscale[i];
            float *yr = y + i * ldy + n0;
            const float *tr = t + i * nb;
            for (int64_t j = 0; j < nb; j++) {
                float v = tr[j] * xs * ws[j];
                if (b)
                    v += b[j];
                yr[j] = acc ? yr[j] + v : v;
            }
        }
    }
    return 0;
}

int pf_linear_forward(pf_mm_ctx *c, const pf_linear *l, int64_t m, const float *x, int64_t ldx, float *y,
                      int64_t ldy, unsigned flags, pf_err *err)
{
    if (check_args(l, m, x, ldx, y, ldy, err) != 0)
        return -1;
    if (m == 0)
        return 0;
    mm_path path = choose_path(c->e, l, m, flags);
    if (path == PATH_INT8_DEQ)
        return run_int8_deq(c, l, m, x, ldx, y, ldy, flags, err);
    if (path != PATH_ONEDNN)
        return run_kernel(c, l, path, m, x, ldx, y, ldy, flags, err);

    pf_dnnl_mm mm;
    fill_mm(l, m, flags, &mm);
    prim_entry *p = get_prim(c, l, &mm, err);
    if (!p)
        return -1;
    if (p->is_ref && !c->e->opt.allow_ref)
        return pf_errf(err, "%s: oneDNN picked its reference implementation (%s) for M=%lld", l->name, p->impl,
                       (long long)m);
    const void *src = x;
    const pf_kernels *kt = c->e->kt;
    bool acc = (flags & PF_LINEAR_ACCUMULATE) != 0, int8 = c->e->prec == PF_PREC_INT8;
    /* Dense output: y itself, or scratch when y has a row stride (or, for int8, when the old y must be
     * kept for accumulation: oneDNN writes the integer sums, our epilogue combines). */
    float *yd = y;
    if (ldy != l->n || (int8 && acc)) {
        if (grow((void **)&c->ybuf, &c->ybuf_cap, (size_t)m * (size_t)l->n * sizeof(float), err))
            return -1;
        yd = c->ybuf;
        if (acc && !int8)
            copy_rows(m, l->n, y, ldy, yd, l->n);
    }
    if (c->e->prec == PF_PREC_FP32 && ldx != l->k) {
        if (grow(&c->xbuf, &c->xbuf_cap, (size_t)m * (size_t)l->k * sizeof(float), err))
            return -1;
        copy_rows(m, l->k, x, ldx, c->xbuf, l->k);
        src = c->xbuf;
    } else if (c->e->prec == PF_PREC_BF16) {
        if (grow(&c->xbuf, &c->xbuf_cap, (size_t)m * (size_t)l->k * 2, err))
            return -1;
        convert_bf16(kt, m, l->k, x, ldx, c->xbuf);
        src = c->xbuf;
    } else if (c->e->prec == PF_PREC_INT8) {
        if (grow(&c->xbuf, &c->xbuf_cap, (size_t)m * (size_t)l->k, err) ||
            grow((void **)&c->xscale, &c->xscale_cap, (size_t)m * sizeof(float), err))
            return -1;
        quantize(kt, m, l->k, x, ldx, c->xbuf, c->xscale, 128);
        src = c->xbuf;
    }
    if (p->scratch_size) {
        if (grow(&c->scratch, &c->scratch_cap, p->scratch_size, err))
            return -1;
        if (p->scratch_ptr != c->scratch) {
            dnnl_memory_set_data_handle(p->scratch, c->scratch);
            p->scratch_ptr = c->scratch;
        }
    }
    dnnl_memory_set_data_handle(p->xmem, (void *)src);
    dnnl_memory_set_data_handle(p->ymem, yd);
    dnnl_exec_arg_t args[8];
    int na = 0;
    args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, p->xmem};
    args[na++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, l->wmem};
    args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DST, p->ymem};
    if (p->scratch)
        args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, p->scratch};
    if (!int8 && l->bias)
        args[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, l->bmem};
    dnnl_status_t s = dnnl_primitive_execute(p->prim, c->stream, na, args);
    if (s == dnnl_success)
        s = dnnl_stream_wait(c->stream);
    if (s != dnnl_success)
        return pf_errf(err, "%s: oneDNN matmul M=%lld: %s", l->name, (long long)m, pf_dnnl_status_name(s));
    if (int8)
        int8_epilogue(l, m, (const int32_t *)(const void *)yd, c->xscale, y, ldy, acc);
    else if (yd != y)
        copy_rows(m, l->n, yd, l->n, y, ldy);
    return 0;
}

int pf_mm_shape_impl(const pf_mm_engine *e, int64_t m, int64_t k, int64_t n, bool bias, char *buf, size_t len,
                     pf_err *err)
{
    if (m < 1 || m > PF_MM_MAX_M || k < 1 || k > PF_MM_MAX_DIM || n < 1 || n > PF_MM_MAX_DIM)
        return pf_errf(err, "shape M=%lld K=%lld N=%lld out of range", (long long)m, (long long)k, (long long)n);
    pf_linear *l = calloc(1, sizeof *l);
    if (!l)
        return pf_errf(err, "out of memory");
    snprintf(l->name, sizeof l->name, "shape %lldx%lld", (long long)n, (long long)k);
    l->e = e;
    l->n = n;
    l->k = k;
    l->bias = bias ? (float *)l : NULL; /* only tested for presence, never read */
    int rc = choose_layout(l, err);
    if (rc == 0) {
        mm_path path = choose_path(e, l, m, 0);
        if (path == PATH_KERNEL)
            snprintf(buf, len, "kernel:%s/%s", e->kt->name, wtype_name(e->prec));
        else if (path == PATH_KERNEL_WO)
            snprintf(buf, len, "kernel:%s/int8-weight-only", e->kt->name);
        else if (path == PATH_KERNEL_DYN)
            snprintf(buf, len, "kernel:%s/int8-dynamic", e->kt->name);
        else if (path == PATH_INT8_DEQ)
            snprintf(buf, len, "dequantize+onednn:sgemm");
        else {
            pf_dnnl_mm mm;
            fill_mm(l, m, 0, &mm);
            dnnl_primitive_desc_t pd;
            dnnl_status_t s = pf_dnnl_matmul_pd(&mm, &pd);
            if (s != dnnl_success) {
                rc = pf_errf(err, "%s: oneDNN %s matmul M=%lld: %s", l->name, pf_precision_name(e->prec),
                             (long long)m, pf_dnnl_status_name(s));
            } else {
                const char *impl = pf_dnnl_impl(pd);
                snprintf(buf, len, "onednn:%s", impl);
                if (pf_dnnl_impl_is_ref(impl) && !e->opt.allow_ref)
                    rc = pf_errf(err, "%s: oneDNN picked its reference implementation (%s) for M=%lld", l->name,
                                 impl, (long long)m);
                dnnl_primitive_desc_destroy(pd);
            }
        }
    }
    free(l);
    return rc;
}
