/* bench_linears - every linear layer of a real-shaped checkpoint through the engine, at one precision:
 * load time and memory, one decode step's linears (all decoder layers + LM head) at batch 1/4/16 against
 * the bandwidth bound (weight bytes / triad), and one image's prefill linears (vision tower + decoder) in
 * GFLOP/s. A preview of what `paliflow bench` measures for the whole model (phase 2), without attention,
 * norms or the loader (this reads the safetensors index itself; F32/BF16/F16 tensors).
 *
 * usage: bench_linears CKPT_DIR [--precision P] [--text-layers N] [--vision-layers N] [--reps N]
 * Memory: the converted weights (e.g. 5.3 GB for a 3B model in bf16); source pages are released after
 * each conversion (MADV_DONTNEED), so the checkpoint does not count twice.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/log.h"
#include "model/linear/mm.h"
#include "model/tools/roofline.h"
#include "model/io/safetensors.h"

#define MAX_FILES 64

static pf_st_file g_files[MAX_FILES];
static int g_nfiles;
static json_t *g_wmap;

static const pf_st_tensor *tensor(const char *name)
{
    const char *file = g_wmap ? json_string_value(json_object_get(g_wmap, name)) : NULL;
    for (int i = 0; i < g_nfiles; i++) {
        if (file && !strstr(g_files[i].path, file))
            continue;
        const pf_st_tensor *t = pf_st_find(&g_files[i], name);
        if (t)
            return t;
    }
    fprintf(stderr, "bench_linears: tensor %s not found\n", name);
    exit(1);
}

static pf_linear *make(const pf_mm_engine *e, const char *name, const char **parts, int np, const char *bias_fmt,
                       int layer)
{
    pf_linear_desc d = {.name = name, .nparts = np, .release_source = true};
    const pf_st_tensor *ts[4], *bs[4] = {0};
    for (int i = 0; i < np; i++) {
        char nm[256];
        snprintf(nm, sizeof nm, parts[i], layer);
        ts[i] = tensor(nm);
        if (bias_fmt) {
            char bn[256];
            snprintf(bn, sizeof bn, "%.*s.bias", (int)(strlen(nm) - 7), nm);
            bs[i] = tensor(bn);
        }
        d.k = ts[i]->shape[1];
        d.parts[i] = (pf_linear_part){.w = ts[i]->data, .dtype = ts[i]->dtype, .n = ts[i]->shape[0],
                                      .bias = bs[i] ? bs[i]->data : NULL, .bias_dtype = bs[i] ? bs[i]->dtype : 0};
    }
    pf_linear *l;
    pf_err err;
    if (pf_linear_create(e, &d, &l, &err) != 0) {
        fprintf(stderr, "bench_linears: %s\n", err.msg);
        exit(1);
    }
    return l;
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            v = atol(line + 6);
    if (f)
        fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"precision", required_argument, NULL, 'p'},
                                         {"text-layers", required_argument, NULL, 't'},
                                         {"vision-layers", required_argument, NULL, 'v'},
                                         {"reps", required_argument, NULL, 'r'},
                                         {NULL, 0, NULL, 0}};
    const char *prec_s = "auto";
    int tl = -1, vl = -1, reps = 5, c;
    while ((c = getopt_long(argc, argv, "p:t:v:r:", opts, NULL)) != -1) {
        if (c == 'p')
            prec_s = optarg;
        else if (c == 't')
            tl = atoi(optarg);
        else if (c == 'v')
            vl = atoi(optarg);
        else if (c == 'r')
            reps = atoi(optarg) > 0 && atoi(optarg) < 64 ? atoi(optarg) : 5;
        else
            return 2;
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: bench_linears CKPT_DIR [--precision P] [--text-layers N] [--vision-layers N]\n");
        return 2;
    }
    pf_log_init_from_env();
    const char *dir = argv[optind];
    pf_err err;
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    json_error_t je;
    json_t *index = json_load_file(path, 0, &je);
    if (index) {
        g_wmap = json_object_get(index, "weight_map");
        const char *k;
        json_t *v;
        json_object_foreach(g_wmap, k, v)
        {
            bool have = false;
            for (int i = 0; i < g_nfiles; i++)
                have |= strstr(g_files[i].path, json_string_value(v)) != NULL;
            if (have || g_nfiles == MAX_FILES)
                continue;
            snprintf(path, sizeof path, "%s/%s", dir, json_string_value(v));
            if (pf_st_open(path, &g_files[g_nfiles], &err) != 0)
                return fprintf(stderr, "bench_linears: %s\n", err.msg), 1;
            g_nfiles++;
        }
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (pf_st_open(path, &g_files[0], &err) != 0)
            return fprintf(stderr, "bench_linears: %s\n", err.msg), 1;
        g_nfiles = 1;
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *cfg = json_load_file(path, 0, &je);
    if (!cfg)
        return fprintf(stderr, "bench_linears: %s: %s\n", path, je.text), 1;
    int layers = (int)json_integer_value(json_object_get(json_object_get(cfg, "text_config"), "num_hidden_layers"));
    int vlayers = (int)json_integer_value(json_object_get(json_object_get(cfg, "vision_config"), "num_hidden_layers"));
    if (tl >= 0 && tl < layers)
        layers = tl;
    if (vl >= 0 && vl < vlayers)
        vlayers = vl;

    pf_precision prec;
    if (pf_precision_parse(prec_s, &prec, &err) != 0)
        return fprintf(stderr, "bench_linears: %s\n", err.msg), 2;
    pf_mm_params o = {.precision = prec};
    pf_mm_engine *e;
    pf_mm_ctx *ctx;
    if (pf_mm_engine_create(&o, &e, &err) || pf_mm_ctx_create(e, &ctx, &err))
        return fprintf(stderr, "bench_linears: %s\n", err.msg), 1;
    char desc[400];
    pf_mm_engine_describe(e, desc, sizeof desc);
    printf("bench_linears %s: %s\n", dir, desc);

    long rss0 = rss_kb();
    double t0 = pf_now();
    const char *qkv[] = {"language_model.model.layers.%d.self_attn.q_proj.weight",
                         "language_model.model.layers.%d.self_attn.k_proj.weight",
                         "language_model.model.layers.%d.self_attn.v_proj.weight"};
    const char *o_[] = {"language_model.model.layers.%d.self_attn.o_proj.weight"};
    const char *gu[] = {"language_model.model.layers.%d.mlp.gate_proj.weight",
                        "language_model.model.layers.%d.mlp.up_proj.weight"};
    const char *dn[] = {"language_model.model.layers.%d.mlp.down_proj.weight"};
    const char *vqkv[] = {"vision_tower.vision_model.encoder.layers.%d.self_attn.q_proj.weight",
                          "vision_tower.vision_model.encoder.layers.%d.self_attn.k_proj.weight",
                          "vision_tower.vision_model.encoder.layers.%d.self_attn.v_proj.weight"};
    const char *vo[] = {"vision_tower.vision_model.encoder.layers.%d.self_attn.out_proj.weight"};
    const char *f1[] = {"vision_tower.vision_model.encoder.layers.%d.mlp.fc1.weight"};
    const char *f2[] = {"vision_tower.vision_model.encoder.layers.%d.mlp.fc2.weight"};
    const char *emb[] = {"language_model.model.embed_tokens.weight"};
    const char *proj[] = {"multi_modal_projector.linear.weight"};
    int nl = 4 * layers + 1, nv = 4 * vlayers + 1;
    pf_linear **dec = calloc((size_t)nl, sizeof *dec), **vis = calloc((size_t)nv, sizeof *vis);
    for (int i = 0; i < layers; i++) {
        dec[4 * i] = make(e, "qkv", qkv, 3, NULL, i);
        dec[4 * i + 1] = make(e, "o_proj", o_, 1, NULL, i);
        dec[4 * i + 2] = make(e, "gate_up", gu, 2, NULL, i);
        dec[4 * i + 3] = make(e, "down", dn, 1, NULL, i);
    }
    dec[nl - 1] = make(e, "lm_head", emb, 1, NULL, 0);
    for (int i = 0; i < vlayers; i++) {
        vis[4 * i] = make(e, "vision qkv", vqkv, 3, "b", i);
        vis[4 * i + 1] = make(e, "vision out", vo, 1, "b", i);
        vis[4 * i + 2] = make(e, "vision fc1", f1, 1, "b", i);
        vis[4 * i + 3] = make(e, "vision fc2", f2, 1, "b", i);
    }
    vis[nv - 1] = make(e, "projector", proj, 1, "b", 0);
    double load_s = pf_now() - t0;
    size_t dec_bytes = 0, vis_bytes = 0;
    for (int i = 0; i < nl; i++)
        dec_bytes += pf_linear_bytes(dec[i]);
    for (int i = 0; i < nv; i++)
        vis_bytes += pf_linear_bytes(vis[i]);
    printf("loaded %d decoder layers + LM head (%.2f GB) and %d vision layers + projector (%.2f GB) in %.1f s; "
           "RSS %.2f GB (%.2f before)\n", layers, (double)dec_bytes / 1e9, vlayers, (double)vis_bytes / 1e9, load_s,
           (double)rss_kb() / 1e6, (double)rss0 / 1e6);
    printf("layouts: qkv %s, lm_head %s, vision fc1 %s\n", pf_linear_layout(dec[0]), pf_linear_layout(dec[nl - 1]),
           vlayers ? pf_linear_layout(vis[2]) : "-");

    pf_triad_result tr;
    if (pf_roofline_triad((size_t)1200 << 20, 5, &tr, &err) != 0)
        return fprintf(stderr, "bench_linears: %s\n", err.msg), 1;
    size_t kmax = 0, nmax = 0;
    for (int i = 0; i < nl; i++) {
        kmax = (size_t)pf_linear_k(dec[i]) > kmax ? (size_t)pf_linear_k(dec[i]) : kmax;
        nmax = (size_t)pf_linear_n(dec[i]) > nmax ? (size_t)pf_linear_n(dec[i]) : nmax;
    }
    for (int i = 0; i < nv; i++) {
        kmax = (size_t)pf_linear_k(vis[i]) > kmax ? (size_t)pf_linear_k(vis[i]) : kmax;
        nmax = (size_t)pf_linear_n(vis[i]) > nmax ? (size_t)pf_linear_n(vis[i]) : nmax;
    }
    const int64_t mmax = 1024;
    float *x = malloc(sizeof(float) * (size_t)mmax * kmax), *y = malloc(sizeof(float) * (size_t)mmax * nmax);
    for (size_t i = 0; i < (size_t)mmax * kmax; i++)
        x[i] = (float)((int)((i * 2654435761u) >> 9 & 255) - 128) / 128.0f;
    double bound_ms = (double)dec_bytes / (tr.gbs_median * 1e9) * 1e3;
    printf("triad %.1f GB/s -> decode bound (decoder + LM head weights / triad) %.1f ms per step\n", tr.gbs_median,
           bound_ms);
    const int64_t batches[] = {1, 4, 16, 64};
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
        int64_t m = batches[b];
        double ts[64], best = 1e9;
        for (int r = -1; r < reps; r++) {
            double s = pf_now();
            for (int i = 0; i < nl; i++)
                if (pf_linear_forward(ctx, dec[i], m, x, pf_linear_k(dec[i]), y, pf_linear_n(dec[i]), 0, &err))
                    return fprintf(stderr, "bench_linears: %s\n", err.msg), 1;
            if (r >= 0) {
                ts[r] = pf_now() - s;
                best = ts[r] < best ? ts[r] : best;
            }
        }
        for (int a = 0; a < reps; a++)
            for (int z = a + 1; z < reps; z++)
                if (ts[z] < ts[a]) {
                    double t = ts[a];
                    ts[a] = ts[z];
                    ts[z] = t;
                }
        double med = ts[reps / 2] * 1e3;
        char impl[128];
        pf_linear_impl(ctx, dec[2], m, 0, impl, sizeof impl, &err);
        printf("decode linears, batch %3lld: %8.1f ms/step median (%.1f best) = %.2fx bound, %.2f ms per sequence "
               "[gate_up: %s]\n", (long long)m, med, best * 1e3, med / bound_ms, med / (double)m, impl);
    }
    /* prefill of one 224px image + a short prompt: vision tower M=256, decoder M=266 (no LM head: only the
     * last position's logits are needed, that is a decode-shaped call) */
    for (int img = 1; img <= 4; img *= 4) {
        int64_t mv = 256 * img, md = 266 * img;
        double flop = 0, best = 1e9;
        for (int i = 0; i < nv; i++)
            flop += 2.0 * (double)mv * (double)pf_linear_k(vis[i]) * (double)pf_linear_n(vis[i]);
        for (int i = 0; i < nl - 1; i++)
            flop += 2.0 * (double)md * (double)pf_linear_k(dec[i]) * (double)pf_linear_n(dec[i]);
        for (int r = -1; r < (reps < 3 ? reps : 3); r++) {
            double s = pf_now();
            for (int i = 0; i < nv; i++)
                if (pf_linear_forward(ctx, vis[i], mv, x, pf_linear_k(vis[i]), y, pf_linear_n(vis[i]), 0, &err))
                    return fprintf(stderr, "bench_linears: %s\n", err.msg), 1;
            for (int i = 0; i < nl - 1; i++)
                if (pf_linear_forward(ctx, dec[i], md, x, pf_linear_k(dec[i]), y, pf_linear_n(dec[i]), 0, &err))
                    return fprintf(stderr, "bench_linears: %s\n", err.msg), 1;
            double dt = pf_now() - s;
            if (r >= 0 && dt < best)
                best = dt;
        }
        printf("prefill linears, %d image(s) (vision M=%lld, decoder M=%lld): %.1f GFLOP in %.2f s best = %.1f "
               "GFLOP/s\n", img, (long long)mv, (long long)md, flop / 1e9, best, flop / best / 1e9);
    }
    int cached, created;
    pf_mm_ctx_stats(ctx, &cached, &created);
    printf("oneDNN primitives: %d created, %d cached; peak-ish RSS now %.2f GB\n", created, cached,
           (double)rss_kb() / 1e6);
    for (int i = 0; i < nl; i++)
        pf_linear_destroy(dec[i]);
    for (int i = 0; i < nv; i++)
        pf_linear_destroy(vis[i]);
    pf_mm_ctx_destroy(ctx);
    pf_mm_engine_destroy(e);
    for (int i = 0; i < g_nfiles; i++)
        pf_st_close(&g_files[i]);
    json_decref(index);
    json_decref(cfg);
    free(dec), free(vis), free(x), free(y);
    return 0;
}
