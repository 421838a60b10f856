/* bench_engine - one part of the engine at a time, for profiling (perf record -e cpu-clock -g):
 *
 *   bench_engine CKPT_DIR [--precision P] [--prefill N] [--decode B] [--steps S] [--reps R]
 *
 * Loads the checkpoint (timed), prefills N images (R times) and runs S decode steps at batch B over copies
 * of the prefilled caches, printing the time of each. `paliflow bench` is the complete measurement; this
 * isolates a phase so a profile shows only it. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "model/engine/engine.h"

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"precision", required_argument, NULL, 'p'},
                                         {"prefill", required_argument, NULL, 'n'},
                                         {"decode", required_argument, NULL, 'b'},
                                         {"steps", required_argument, NULL, 's'},
                                         {"reps", required_argument, NULL, 'r'},
                                         {NULL, 0, NULL, 0}};
    pf_engine_params eo = {.precision = PF_PREC_AUTO};
    int N = 1, B = 0, S = 10, R = 1, c;
    pf_err err;
    while ((c = getopt_long(argc, argv, "p:n:b:s:r:", opts, NULL)) != -1) {
        if (c == 'p' && pf_precision_parse(optarg, &eo.precision, &err) == 0)
            continue;
        if (c == 'n')
            N = atoi(optarg);
        else if (c == 'b')
            B = atoi(optarg);
        else if (c == 's')
            S = atoi(optarg);
        else if (c == 'r')
            R = atoi(optarg);
        else
            return 2;
    }
    if (optind != argc - 1 || N < 1 || B < 0 || S < 1 || R < 0) {
        fprintf(stderr, "usage: bench_engine CKPT_DIR [--precision P] [--prefill N] [--decode B] [--steps S] "
                        "[--reps R]\n");
        return 2;
    }
    double t0 = pf_now();
    pf_model *m;
    pf_engine *e;
    pf_engine_ctx *ctx;
    if (pf_model_load_flags(argv[optind], PF_MODEL_STORED_ONLY, &m, &err) || pf_engine_create(m, &eo, &e, &err) ||
        pf_engine_ctx_create(e, &ctx, &err)) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return 1;
    }
    printf("load: %.2f s\n", pf_now() - t0);
    const pf_config *cfg = &m->cfg;
    size_t P = (size_t)cfg->num_image_tokens, L = P + 4, V = (size_t)cfg->text.vocab_size;
    size_t img = 3 * (size_t)cfg->vision.image_size * (size_t)cfg->vision.image_size;
    int32_t *ids = malloc(L * sizeof *ids);
    float *px = malloc((size_t)N * img * sizeof(float));
    float *logits = malloc((size_t)(N > B ? N : B) * V * sizeof(float));
    pf_engine_seq **seqs = calloc((size_t)N, sizeof *seqs);
    pf_engine_row *rows = calloc((size_t)N, sizeof *rows);
    for (size_t i = 0; i < P; i++)
        ids[i] = cfg->image_token_index;
    ids[P] = 2, ids[P + 1] = 21209 % cfg->text.vocab_size, ids[P + 2] = 659 % cfg->text.vocab_size, ids[P + 3] = 108;
    for (size_t i = 0; i < (size_t)N * img; i++)
        px[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    pf_engine_ctx_set_image_cache(ctx, 0);
    for (int r = 0; r < (R > 0 ? R : 1); r++) {
        for (int i = 0; i < N; i++) {
            pf_engine_seq_free(ctx, seqs[i]);
            seqs[i] = pf_engine_seq_create(ctx, L + 1, &err);
            rows[i] = (pf_engine_row){.pixels = px + (size_t)i * img, .num_images = 1, .ids = ids, .n = L,
                                      .seq = seqs[i], .logits = logits + (size_t)i * V};
        }
        t0 = pf_now();
        if (pf_engine_prefill(ctx, rows, (size_t)N, &err)) {
            fprintf(stderr, "bench_engine: %s\n", err.msg);
            return 1;
        }
        if (R > 0)
            printf("prefill %d images: %.2f s\n", N, pf_now() - t0);
        pf_engine_ctx_profile_report(ctx);
    }
    pf_engine_ctx_profile_report(ctx);
    if (B > 0) {
        pf_engine_seq **bs = calloc((size_t)B, sizeof *bs);
        int32_t *tok = malloc((size_t)B * sizeof *tok);
        for (int b = 0; b < B; b++) {
            bs[b] = pf_engine_seq_create(ctx, L + (size_t)S + 2, &err);
            pf_engine_seq_copy(ctx, bs[b], seqs[b % N], &err);
            tok[b] = 1000 + b;
        }
        for (int s = 0; s <= S; s++) {
            t0 = pf_now();
            if (pf_engine_decode(ctx, bs, tok, (size_t)B, logits, &err)) {
                fprintf(stderr, "bench_engine: %s\n", err.msg);
                return 1;
            }
            printf("decode batch %d step %d: %.1f ms\n", B, s, 1e3 * (pf_now() - t0));
        }
        for (int b = 0; b < B; b++)
            pf_engine_seq_free(ctx, bs[b]);
        free(bs);
        free(tok);
    }
    for (int i = 0; i < N; i++)
        pf_engine_seq_free(ctx, seqs[i]);
    free(seqs);
    free(rows);
    free(ids);
    free(px);
    free(logits);
    pf_engine_ctx_free(ctx);
    pf_engine_free(e);
    pf_model_free(m);
    return 0;
}
