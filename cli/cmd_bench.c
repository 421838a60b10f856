/* paliflow bench: the engine's speed on a checkpoint against ceilings measured in the same run (GEMM rate
 * on the model's own shapes, memory bandwidth); prints a table and optionally writes JSON. Measurements:
 * cli/bench_run.h. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/optable.h"
#include "cli/bench_run.h"
#include "cli/commands.h"
#include "model/linear/precision_probe.h"

static int parse_batches(const char *s, bench_params *o)
{
    o->n_batches = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 4096 || o->n_batches == BENCH_MAX_BATCHES)
            return -1;
        o->batches[o->n_batches++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return o->n_batches ? 0 : -1;
}

typedef struct bench_cli {
    bench_params b;
    const char *json;
} bench_cli;

static void bench_init(void *obj)
{
    *(bench_cli *)obj = (bench_cli){.b = bench_default_params()};
}

static int precision_opt(const pf_opt *opt, void *field, const char *val, pf_err *err)
{
    (void)opt;
    return pf_precision_parse(val, field, err) ? -1 : 0;
}

static int batches_opt(const pf_opt *opt, void *params, const char *val, pf_err *err)
{
    if (parse_batches(val, params))
        return pf_errf(err, "--%s: want up to %d sizes like 1,4,16,64, got '%s'", opt->name, BENCH_MAX_BATCHES, val);
    return 0;
}

#define T bench_cli
static const pf_opt g_rows[] = {
    PF_OPT_ROW_STR("model", T, b.model_dir, PF_OPT_NONEMPTY | PF_OPT_REQUIRED, "DIR", "checkpoint folder"),
    {"precision", 0, PF_OPT_FUNC, offsetof(T, b.precision), .fn = precision_opt, .arg = "P", .def = "auto",
     .help = "auto (the fastest within its accuracy contract, measured on this CPU: the probe table below), fp32, "
             "bf16, int8"},
    PF_OPT_ROW_INT("images", T, b.images, 1, 4096, 0, "N", "prefill batch and end-to-end images"),
    PF_OPT_ROW_INT("new-tokens", T, b.new_tokens, 1, 4096, 0, "N", "tokens generated per image end to end"),
    {"batches", 0, PF_OPT_FUNC, offsetof(T, b), .fn = batches_opt, .arg = "LIST", .def = "1,4,16,64",
     .help = "decode batch sizes"},
    PF_OPT_ROW_INT("decode-steps", T, b.decode_steps, 1, 4096, 0, "N", "timed decode steps per batch size"),
    {"triad-mb", 0, PF_OPT_SIZE, offsetof(T, b.triad_bytes), 1, 65536, 1048576, .arg = "N",
     .help = "memory for the bandwidth triad (less is for smoke tests: caches then inflate the bandwidth)"},
    {"threads", 0, PF_OPT_INT, offsetof(T, b.threads), 1, 4096, .arg = "N", .def = "all cores",
     .help = "compute threads"},
    PF_OPT_ROW_FLAG("skip-e2e", T, b.skip_e2e, 0, "no end-to-end run"),
    PF_OPT_ROW_FLAG("probe", T, b.probe_only, 0,
                    "only measure the precision probe now (no model), print its table and store it in the cache "
                    "--precision auto reads (replacing one measured while the machine was busy)"),
    PF_OPT_ROW_STR("json", T, json, PF_OPT_NONEMPTY, "FILE", "also write the results as JSON"),
    PF_OPT_END,
};
#undef T

static const pf_optcmd g_cmd = {
    .name = "bench",
    .synopsis = "usage: paliflow bench --model DIR [--precision P] [--images N] [--new-tokens N] [--json FILE] [OPTIONS]\n"
                "       paliflow bench --probe\n"
                "\n"
                "Measure the engine on a checkpoint (a real one, or make-random-checkpoint's: speed does not depend on\n"
                "the values) against ceilings measured in the same run, and print a table:\n"
                "  load time; the GEMM rate of the model's own linear layers at prefill sizes; memory bandwidth (triad);\n"
                "  prefill of N images in one ragged batch (time, GFLOP/s of its linear layers, share of the GEMM rate);\n"
                "  one decode step at each batch size vs the bound weight-bytes-per-step / bandwidth; end to end: N images\n"
                "  through continuous batching, each forced to generate exactly --new-tokens (eos ignored), images/s vs\n"
                "  the bound from the measured rates; peak RSS vs weights + KV cache + 600 MB.\n"
                "The prompt is \"caption en\" after the image tokens. Timings are the best of their repetitions and the\n"
                "ceilings the best of two probes (before and after), so other load on the machine disturbs the ratios\n"
                "less; still, compare ratios rather than absolute figures.\n"
                "\n"
                "\n",
    .opts = g_rows,
    .size = sizeof(bench_cli),
    .init = bench_init,
};

/* 0 parsed, 1 --help printed, 2 usage error (printed). */
static int parse_args(int argc, char **argv, bench_params *o, const char **json_path)
{
    bench_cli c;
    bench_init(&c);
    int pr = pf_opt_parse(&g_cmd, &c, argc, argv, NULL, 0);
    if (pr)
        return pr;
    *o = c.b;
    *json_path = c.json;
    if (o->probe_only)
        return 0;
    if (!o->model_dir) {
        fprintf(stderr, "paliflow bench: --model DIR is required (and no other arguments)\n");
        return 2;
    }
    return 0;
}

static void print_table(const bench_params *o, const bench_result *r)
{
    printf("paliflow bench: %s, precision %s, oneDNN ISA %s, %d threads\n", o->model_dir, r->precision, r->isa,
           r->threads);
    printf("  cpu                     %s\n", r->cpu);
    printf("  load                    %.1f s (weights %.2f GB, peak RSS while loading %.2f GB)\n", r->load_s,
           r->weight_bytes / 1e9, r->load_peak_rss / 1e9);
    printf("  GEMM rate (model shapes) %.0f GFLOP/s\n", r->gemm_gflops);
    printf("  bandwidth (triad)       %.1f GB/s\n", r->bandwidth_gbs);
    printf("  prefill                 %d images x %d tokens: %.2f s, %.3f TFLOP, %.0f GFLOP/s = %.0f%% of the GEMM "
           "rate (target >= 70%%)\n",
           o->images, r->prompt_tokens, r->prefill_s, r->prefill_tflop, r->prefill_gflops,
           100 * r->prefill_gflops / r->gemm_gflops);
    printf("  decode bound            %.1f ms per step (%.2f GB of weights / bandwidth)\n", r->decode_bound_ms,
           r->decode_weight_bytes / 1e9);
    double b1 = 0;
    for (int i = 0; i < o->n_batches; i++) {
        int B = o->batches[i];
        if (B == 1)
            b1 = r->decode_ms[i];
        printf("  decode batch %-4d       %.1f ms per step, %.2f ms per sequence", B, r->decode_ms[i],
               r->decode_ms[i] / B);
        if (B == 1)
            printf(" = %.2fx the bound (target <= 1.3x)", r->decode_ms[i] / r->decode_bound_ms);
        else if (b1 > 0)
            printf(" = 1/%.1f of batch 1%s", b1 / (r->decode_ms[i] / B), B == 16 ? " (target >= 1/6)" : "");
        printf("\n");
    }
    if (!o->skip_e2e)
        printf("  end to end              %d images x %d tokens: %.2f s, %.4f images/s = %.0f%% of the bound %.4f "
               "(target >= 80%%)\n",
               o->images, o->new_tokens, r->e2e_s, r->images_per_s, 100 * r->images_per_s / r->e2e_bound_images_per_s,
               r->e2e_bound_images_per_s);
    printf("  peak RSS                %.2f GB (budget weights + KV %.2f GB + 600 MB = %.2f GB)\n", r->peak_rss / 1e9,
           r->kv_bytes / 1e9, r->rss_budget / 1e9);
}

/* The precision probe's table as JSON: {"key", "cached", "auto", "fp32": {"supported", "gflops", "rel_err",
 * "tolerance", "impl"}, ...}. */
static json_t *probe_json(const pf_probe_table *t)
{
    json_t *j = json_object();
    json_object_set_new(j, "key", json_string(t->key));
    json_object_set_new(j, "cached", json_boolean(t->from_cache));
    pf_precision choice;
    pf_err err;
    json_object_set_new(j, "auto", pf_probe_choose(t, &choice, NULL, 0, &err) == 0
                                       ? json_string(pf_precision_name(choice))
                                       : json_null());
    for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++) {
        json_t *row = json_object();
        json_object_set_new(row, "supported", json_boolean(t->row[p].supported));
        json_object_set_new(row, "gflops", json_real(t->row[p].gflops));
        json_object_set_new(row, "rel_err", json_real(t->row[p].rel_err));
        json_object_set_new(row, "tolerance", json_real(pf_probe_tolerance((pf_precision)p)));
        json_object_set_new(row, "impl", json_string(t->row[p].impl));
        json_object_set_new(j, pf_precision_name((pf_precision)p), row);
    }
    return j;
}

static int write_json(const char *path, const bench_params *o, const bench_result *r)
{
    json_t *j = json_object(), *dec = json_object();
    for (int i = 0; i < o->n_batches; i++) {
        char k[16];
        snprintf(k, sizeof k, "%d", o->batches[i]);
        json_object_set_new(dec, k, json_real(r->decode_ms[i]));
    }
    json_object_set_new(j, "model", json_string(o->model_dir));
    json_object_set_new(j, "precision", json_string(r->precision));
    json_object_set_new(j, "isa", json_string(r->isa));
    json_object_set_new(j, "cpu", json_string(r->cpu));
    json_object_set_new(j, "threads", json_integer(r->threads));
    json_object_set_new(j, "images", json_integer(o->images));
    json_object_set_new(j, "new_tokens", json_integer(o->new_tokens));
    json_object_set_new(j, "prompt_tokens", json_integer(r->prompt_tokens));
    json_object_set_new(j, "load_s", json_real(r->load_s));
    json_object_set_new(j, "load_peak_rss_bytes", json_real(r->load_peak_rss));
    json_object_set_new(j, "weight_bytes", json_real(r->weight_bytes));
    json_object_set_new(j, "decode_weight_bytes", json_real(r->decode_weight_bytes));
    json_object_set_new(j, "gemm_peak_gflops", json_real(r->gemm_gflops));
    json_object_set_new(j, "bandwidth_gbs", json_real(r->bandwidth_gbs));
    json_object_set_new(j, "prefill_s", json_real(r->prefill_s));
    json_object_set_new(j, "prefill_gflops", json_real(r->prefill_gflops));
    json_object_set_new(j, "decode_ms_per_step", dec);
    json_object_set_new(j, "decode_bound_ms", json_real(r->decode_bound_ms));
    if (!o->skip_e2e) {
        json_object_set_new(j, "e2e_s", json_real(r->e2e_s));
        json_object_set_new(j, "images_per_s", json_real(r->images_per_s));
        json_object_set_new(j, "images_per_s_bound", json_real(r->e2e_bound_images_per_s));
    }
    json_object_set_new(j, "peak_rss_bytes", json_real(r->peak_rss));
    json_object_set_new(j, "kv_cache_bytes", json_real(r->kv_bytes));
    json_object_set_new(j, "rss_budget_bytes", json_real(r->rss_budget));
    pf_err perr;
    const pf_probe_table *pt = pf_probe_table_get(&perr);
    if (pt)
        json_object_set_new(j, "precision_probe", probe_json(pt));
    int rc = json_dump_file(j, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    bench_params o;
    const char *json_path = NULL;
    int pr = parse_args(argc, argv, &o, &json_path);
    if (pr)
        return pr == 1 ? 0 : 2;
    bench_result r;
    pf_err err;
    if (o.probe_only) {
        pf_probe_table t;
        if (pf_probe_measure(&t, &err) != 0) {
            fprintf(stderr, "paliflow bench: %s\n", err.msg);
            return 1;
        }
        pf_probe_print(&t, stdout);
        /* Refresh the cache too: the way to replace a table measured while the machine was busy. */
        char path[4096];
        if (!pf_probe_cache_enabled())
            return 0;
        if (pf_probe_cache_path(path, sizeof path, &err) != 0 || pf_probe_cache_store(path, &t, &err) != 0)
            pf_warn("bench", "precision probe: not cached: %s", err.msg);
        else
            printf("  cached in %s\n", path);
        return 0;
    }
    if (o.triad_bytes < ((size_t)1 << 30))
        pf_warn("bench", "--triad-mb %zu: below 1 GB the triad partly runs from cache, the bandwidth is overstated",
                o.triad_bytes >> 20);
    if (bench_run(&o, &r, &err) != 0) {
        fprintf(stderr, "paliflow bench: %s\n", err.msg);
        return 1;
    }
    print_table(&o, &r);
    /* The table --precision auto decides from (measured or cached when auto was asked for; else now). */
    const pf_probe_table *pt = pf_probe_table_get(&err);
    if (pt)
        pf_probe_print(pt, stdout);
    else
        printf("precision probe: %s\n", err.msg);
    if (json_path && write_json(json_path, &o, &r) != 0) {
        fprintf(stderr, "paliflow bench: cannot write %s\n", json_path);
        return 1;
    }
    return 0;
}
