/* bench_run.c - the measurements of `paliflow bench` (see bench_run.h). */
#include "cli/bench_run.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/log.h"
#include "model/engine/engine.h"
#include "model/generate/generate.h"
#include "model/tools/roofline.h"

/* "caption en" as PaliGemmaProcessor builds it after the image tokens: <bos>, "caption", " en", "\n". */
static const int32_t PROMPT_IDS[] = {2, 21209, 659, 108};
#define PROMPT_LEN 4

static double status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double v = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0)
            v = atof(line + n);
    if (f)
        fclose(f);
    return v;
}

static double peak_rss(void) { return status_kb("VmHWM:") * 1024.0; }

/* Start a new peak (Linux: clear_refs 5 resets VmHWM); returns 0 if it could. */
static int reset_peak(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f)
        return -1;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void random_pixels(float *px, size_t n, uint64_t seed)
{
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        px[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
}

typedef struct bench_state {
    pf_model *m;
    pf_engine *e;
    pf_engine_ctx *c;
    pf_engine_stats st;
    int32_t *ids;
    size_t L, img;
    float *pixels;
    pf_engine_seq **seqs;
    size_t nseqs;
    float *logits;
} bench_state;

static void state_free(bench_state *s)
{
    for (size_t i = 0; s->seqs && i < s->nseqs; i++)
        pf_engine_seq_free(s->c, s->seqs[i]);
    free(s->seqs);
    pf_engine_ctx_free(s->c);
    pf_engine_free(s->e);
    pf_model_free(s->m);
    free(s->ids);
    free(s->pixels);
    free(s->logits);
}

/* N images in one ragged batch, twice (the first creates the primitives for these sizes); the faster counts.
 * The first N sequences keep their caches for the decode measurements. */
static int bench_prefill(bench_state *s, const bench_params *o, bench_result *r, pf_err *err)
{
    size_t N = (size_t)o->images, V = (size_t)s->m->cfg.text.vocab_size;
    pf_engine_row *rows = calloc(N, sizeof *rows);
    if (!rows)
        return pf_errf(err, "out of memory");
    double best = INFINITY;
    int rc = 0;
    for (int rep = 0; rep < 2 && rc == 0; rep++) {
        for (size_t i = 0; i < N; i++) {
            if (s->seqs[i]) {
                pf_engine_seq_free(s->c, s->seqs[i]);
                s->seqs[i] = NULL;
            }
            if (!(s->seqs[i] = pf_engine_seq_create(s->c, s->L + 1, err))) {
                rc = -1;
                break;
            }
            rows[i] = (pf_engine_row){.pixels = s->pixels + i * s->img, .num_images = 1, .ids = s->ids, .n = s->L,
                                      .seq = s->seqs[i], .logits = s->logits + i * V};
        }
        double t0 = pf_now();
        if (rc == 0)
            rc = pf_engine_prefill(s->c, rows, N, err);
        double dt = pf_now() - t0;
        best = dt < best ? dt : best;
        pf_info("bench", "prefill of %zu images (%zu tokens): %.2f s", N, N * s->L, dt);
    }
    free(rows);
    if (rc != 0)
        return -1;
    double flops = (double)N * (s->st.vision_flops_per_image + s->st.lm_head_flops_per_row) +
                   (double)(N * s->L) * s->st.text_flops_per_token;
    r->prefill_s = best;
    r->prefill_tflop = flops / 1e12;
    r->prefill_gflops = flops / best / 1e9;
    return 0;
}

/* Decode steps at batch B over copies of the prefilled caches: median step time. */
static int bench_decode(bench_state *s, const bench_params *o, int B, double *ms, pf_err *err)
{
    size_t N = (size_t)o->images, steps = (size_t)o->decode_steps;
    pf_engine_seq **bs = calloc((size_t)B, sizeof *bs);
    int32_t *tok = malloc((size_t)B * sizeof *tok);
    double *t = malloc((steps + 1) * sizeof *t);
    int rc = -1;
    if (!bs || !tok || !t) {
        pf_errf(err, "out of memory");
        goto done;
    }
    for (int b = 0; b < B; b++) {
        if (!(bs[b] = pf_engine_seq_create(s->c, s->L + steps + 2, err)) ||
            pf_engine_seq_copy(s->c, bs[b], s->seqs[(size_t)b % N], err) != 0)
            goto done;
        tok[b] = 1000 + b;
    }
    for (size_t k = 0; k <= steps; k++) { /* step 0 warms up (primitives for this M) */
        double t0 = pf_now();
        if (pf_engine_decode(s->c, bs, tok, (size_t)B, s->logits, err) != 0)
            goto done;
        t[k] = pf_now() - t0;
    }
    qsort(t + 1, steps, sizeof *t, cmp_double);
    *ms = 1e3 * t[1]; /* best step: the least disturbed on a shared machine */
    pf_info("bench", "decode batch %d: %.1f ms per step", B, *ms);
    rc = 0;
done:
    for (int b = 0; bs && b < B; b++)
        pf_engine_seq_free(s->c, bs[b]);
    free(bs);
    free(tok);
    free(t);
    return rc;
}

/* N requests through the generator (its own engine context), eos ignored: images/s. */
static int bench_e2e(bench_state *s, const bench_params *o, bench_result *r, pf_err *err)
{
    size_t N = (size_t)o->images;
    pf_gen_request *reqs = calloc(N, sizeof *reqs);
    pf_gen_result *res = calloc(N, sizeof *res);
    float *px = malloc(N * s->img * sizeof(float));
    pf_generator *g = NULL;
    int rc = -1;
    if (!reqs || !res || !px) {
        pf_errf(err, "out of memory");
        goto done;
    }
    random_pixels(px, N * s->img, 777); /* images not seen by the prefill measurement */
    for (size_t i = 0; i < N; i++) {
        reqs[i] = (pf_gen_request){.pixels = px + i * s->img, .num_images = 1, .ids = s->ids, .n_ids = s->L,
                                   .params = pf_sample_default_params(), .tag = i};
        reqs[i].params.max_new_tokens = o->new_tokens;
        reqs[i].params.ignore_eos = 1;
    }
    pf_generator_params go = {.backend = &pf_gen_backend_engine, .backend_arg = s->e, .max_active = N};
    if (pf_generator_create_params(s->m, &go, &g, err) != 0)
        goto done;
    /* Warm up the generator's context as a long-running worker's is (oneDNN primitives for these sizes,
     * scratch and KV pages faulted in): N requests of 2 tokens, other pixels. */
    for (size_t i = 0; i < N; i++)
        reqs[i].params.max_new_tokens = 2;
    random_pixels(px, N * s->img, 555);
    if (pf_generate(g, reqs, N, res, err) != 0)
        goto done;
    for (size_t i = 0; i < N; i++) {
        pf_gen_result_free(&res[i]);
        reqs[i].params.max_new_tokens = o->new_tokens;
    }
    /* Best of two timed runs, like every other figure here (a shared machine only ever slows a run); each
     * run gets pixels the image cache has not seen. */
    r->e2e_s = 0;
    for (int rep = 0; rep < 2; rep++) {
        random_pixels(px, N * s->img, 777 + (uint64_t)rep);
        double t0 = pf_now();
        if (pf_generate(g, reqs, N, res, err) != 0)
            goto done;
        double t = pf_now() - t0;
        pf_info("bench", "end to end, run %d: %zu images x %d tokens in %.2f s", rep + 1, N, o->new_tokens, t);
        r->e2e_s = rep == 0 || t < r->e2e_s ? t : r->e2e_s;
        for (size_t i = 0; i < N; i++) {
            if (res[i].error) {
                pf_errf(err, "end-to-end request %zu: %s", i, res[i].error);
                goto done;
            }
            if (res[i].n_ids != (size_t)o->new_tokens) {
                pf_errf(err, "end-to-end request %zu: %zu tokens instead of %d", i, res[i].n_ids, o->new_tokens);
                goto done;
            }
            pf_gen_result_free(&res[i]);
        }
    }
    r->images_per_s = (double)N / r->e2e_s;
    pf_info("bench", "end to end: %zu images x %d tokens in %.2f s", N, o->new_tokens, r->e2e_s);
    rc = 0;
done:
    for (size_t i = 0; res && i < N; i++)
        pf_gen_result_free(&res[i]);
    pf_generator_free(g);
    free(reqs);
    free(res);
    free(px);
    return rc;
}

/* GEMM rate and bandwidth, best of this and any earlier call (a shared machine only ever slows them). */
static int ceilings(bench_state *s, const bench_params *o, bench_result *r, pf_err *err)
{
    size_t N = (size_t)o->images, P = (size_t)s->m->cfg.num_image_tokens;
    double g;
    if (pf_engine_gemm_rate(s->c, (int64_t)(N * P), (int64_t)(N * s->L), 5, &g, err) != 0)
        return -1;
    pf_triad_result tr;
    if (pf_roofline_triad(o->triad_bytes, 5, &tr, err) != 0)
        return -1;
    pf_info("bench", "GEMM rate on the model's shapes: %.0f GFLOP/s; triad over %.1f GB: %.1f GB/s", g,
            (double)tr.bytes / 1e9, tr.gbs_best);
    r->gemm_gflops = g > r->gemm_gflops ? g : r->gemm_gflops;
    r->bandwidth_gbs = tr.gbs_best > r->bandwidth_gbs ? tr.gbs_best : r->bandwidth_gbs;
    return 0;
}

static int setup(bench_state *s, const bench_params *o, bench_result *r, pf_err *err)
{
    double t0 = pf_now();
    pf_engine_params eo = {.precision = o->precision, .threads = o->threads};
    if (pf_model_load_flags(o->model_dir, PF_MODEL_STORED_ONLY, &s->m, err) != 0 ||
        pf_engine_create(s->m, &eo, &s->e, err) != 0)
        return -1;
    r->load_s = pf_now() - t0;
    r->load_peak_rss = peak_rss();
    pf_engine_get_stats(s->e, &s->st);
    if (pf_engine_ctx_create(s->e, &s->c, err) != 0)
        return -1;
    pf_engine_ctx_set_image_cache(s->c, 0); /* every prefill computes its images */
    const pf_config *cfg = &s->m->cfg;
    size_t N = (size_t)o->images, P = (size_t)cfg->num_image_tokens, V = (size_t)cfg->text.vocab_size;
    size_t Bmax = N;
    for (int i = 0; i < o->n_batches; i++)
        Bmax = (size_t)o->batches[i] > Bmax ? (size_t)o->batches[i] : Bmax;
    s->L = P + PROMPT_LEN;
    s->img = (size_t)cfg->vision.channels * (size_t)cfg->vision.image_size * (size_t)cfg->vision.image_size;
    s->ids = malloc(s->L * sizeof *s->ids);
    s->pixels = malloc(N * s->img * sizeof(float));
    s->seqs = calloc(N, sizeof *s->seqs);
    s->nseqs = N;
    s->logits = malloc(Bmax * V * sizeof(float));
    if (!s->ids || !s->pixels || !s->seqs || !s->logits)
        return pf_errf(err, "out of memory");
    for (size_t i = 0; i < P; i++)
        s->ids[i] = cfg->image_token_index;
    memcpy(s->ids + P, PROMPT_IDS, sizeof PROMPT_IDS);
    for (size_t i = P; i < s->L; i++)
        if (s->ids[i] >= cfg->text.vocab_size)
            s->ids[i] = cfg->bos_id; /* tiny test vocabularies */
    random_pixels(s->pixels, N * s->img, 1);
    snprintf(r->precision, sizeof r->precision, "%s", pf_precision_name(pf_engine_precision(s->e)));
    snprintf(r->isa, sizeof r->isa, "%s", pf_cpu_dnnl_isa_name());
    pf_cpu_describe(r->cpu, sizeof r->cpu);
    r->threads = omp_get_max_threads();
    r->weight_bytes = (double)s->st.weight_bytes;
    r->decode_weight_bytes = (double)s->st.decode_weight_bytes;
    r->prompt_tokens = (int)s->L;
    return 0;
}

bench_params bench_default_params(void)
{
    return (bench_params){.precision = PF_PREC_AUTO, .images = 4, .new_tokens = 20, .batches = {1, 4, 16, 64},
                          .n_batches = 4, .decode_steps = 5, .triad_bytes = (size_t)1 << 30};
}

int bench_run(const bench_params *o, bench_result *r, pf_err *err)
{
    memset(r, 0, sizeof *r);
    bench_state s = {0};
    int rc = -1;
    if (setup(&s, o, r, err) != 0)
        goto done;
    size_t N = (size_t)o->images;

    /* ceilings: GEMM rate on this model's shapes at prefill sizes, memory bandwidth */
    if (ceilings(&s, o, r, err) != 0)
        goto done;
    if (reset_peak() != 0)
        pf_warn("bench", "cannot reset the peak RSS (/proc/self/clear_refs): it includes the triad's buffers");

    if (bench_prefill(&s, o, r, err) != 0)
        goto done;
    for (int i = 0; i < o->n_batches; i++)
        if (bench_decode(&s, o, o->batches[i], &r->decode_ms[i], err) != 0)
            goto done;
    double kv_decode = (double)pf_engine_ctx_kv_bytes(s.c), peak_decode = peak_rss();
    if (ceilings(&s, o, r, err) != 0) /* again: the best of both is the ceiling */
        goto done;
    r->decode_bound_ms = r->decode_weight_bytes / (r->bandwidth_gbs * 1e9) * 1e3;
    r->kv_bytes = kv_decode;
    r->peak_rss = peak_decode;
    size_t hits = 0, computed = 0;
    pf_engine_ctx_image_stats(s.c, &hits, &computed);
    r->image_cache_hits = hits;
    /* the decode measurements' context goes before the end-to-end run, which has its own */
    for (size_t i = 0; i < s.nseqs; i++)
        pf_engine_seq_free(s.c, s.seqs[i]);
    free(s.seqs);
    s.seqs = NULL;
    pf_engine_ctx_free(s.c);
    s.c = NULL;

    /* bound from the measured rates: prefill at the GEMM rate; each decode token costs the larger of its
     * share of the weight stream (all N sequences decode together) and its FLOPs at the GEMM rate */
    double F = r->gemm_gflops * 1e9, BW = r->bandwidth_gbs * 1e9;
    double tok = s.st.text_flops_per_token + s.st.lm_head_flops_per_row;
    double t_pre = (s.st.vision_flops_per_image + (double)s.L * s.st.text_flops_per_token +
                    s.st.lm_head_flops_per_row) / F;
    double t_dec = fmax(r->decode_weight_bytes / (BW * (double)N), tok / F);
    r->e2e_bound_images_per_s = 1.0 / (t_pre + (double)o->new_tokens * t_dec);
    if (!o->skip_e2e) {
        reset_peak();
        if (bench_e2e(&s, o, r, err) != 0)
            goto done;
        double pe = peak_rss();
        /* KV of the end-to-end run: N sequences of prompt + new tokens */
        const pf_text_config *t = &s.m->cfg.text;
        double page = (double)PF_ENGINE_PAGE * 2.0 * t->layers * t->kv_heads * t->head_dim * sizeof(float);
        double kv_e2e = (double)N * ceil((double)(s.L + (size_t)o->new_tokens) / PF_ENGINE_PAGE) * page;
        if (pe > r->peak_rss) {
            r->peak_rss = pe;
            r->kv_bytes = kv_e2e;
        }
    }
    r->rss_budget = r->weight_bytes + r->kv_bytes + 600e6;
    rc = 0;
done:
    state_free(&s);
    return rc;
}
