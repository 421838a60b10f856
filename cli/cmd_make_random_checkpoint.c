/* paliflow make-random-checkpoint: a random checkpoint with the real shapes and config of a PaliGemma
 * model, in the Hugging Face layout, to benchmark and test without the real weights. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/log.h"
#include "base/optable.h"
#include "cli/commands.h"
#include "model/tools/random_ckpt.h"

/* "5GB", "500MB", "2GiB", "1234": decimal units like transformers' max_shard_size. */
static int parse_size(const char *s, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || v <= 0)
        return -1;
    static const struct {
        const char *suffix;
        double mul;
    } units[] = {{"", 1},       {"B", 1},          {"KB", 1e3},         {"MB", 1e6},        {"GB", 1e9},
                 {"KIB", 1024}, {"MIB", 1048576.0}, {"GIB", 1073741824.0}};
    char suf[8];
    size_t n = strlen(end);
    if (n >= sizeof suf)
        return -1;
    for (size_t i = 0; i < n && i < sizeof suf - 1; i++)
        suf[i] = (char)toupper((unsigned char)end[i]);
    suf[n] = '\0';
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(suf, units[i].suffix) == 0) {
            double b = v * units[i].mul;
            if (b < 1 || b > 1e18)
                return -1;
            *out = (uint64_t)b;
            return 0;
        }
    return -1;
}

typedef struct rc_cli {
    const char *like;
    int tiny, list, f32, progress, hidden, tlayers, vlayers;
    uint64_t seed, max_shard_bytes;
} rc_cli;

static void rc_init(void *obj)
{
    /* 0 for the sizes: the model's own (--hidden-size: pf_rc_spec_tiny's 8; --max-shard-size: 5 GB) */
    *(rc_cli *)obj = (rc_cli){.progress = 1};
}

static int shard_size_opt(const pf_opt *opt, void *field, const char *val, pf_err *err)
{
    if (parse_size(val, field))
        return pf_errf(err, "--%s: want a size like 5GB, 500MB or a byte count, got '%s'", opt->name, val);
    return 0;
}

#define T rc_cli
static const pf_opt g_rows[] = {
    {"like", 'l', PF_OPT_STR, offsetof(T, like), .flags = PF_OPT_NONEMPTY | PF_OPT_REQUIRED, .arg = "NAME",
     .help = "model to imitate (see --list)"},
    PF_OPT_ROW_FLAG("tiny", T, tiny, 0,
                    "few-MB demo model: real vocabulary (257216), image size and patch size, text width "
                    "--hidden-size, 2 layers of each tower"),
    {"hidden-size", 0, PF_OPT_INT, offsetof(T, hidden), 1, 65536, .arg = "N", .def = "8",
     .help = "text width with --tiny"},
    {"text-layers", 0, PF_OPT_INT, offsetof(T, tlayers), 1, 1024, .arg = "N", .def = "the model's",
     .help = "number of decoder layers"},
    {"vision-layers", 0, PF_OPT_INT, offsetof(T, vlayers), 1, 1024, .arg = "N", .def = "the model's",
     .help = "number of SigLIP layers"},
    PF_OPT_ROW_U64("seed", T, seed, 0, INT64_MAX, 0, "N", "random seed; same seed, same bytes"),
    {"max-shard-size", 0, PF_OPT_FUNC, offsetof(T, max_shard_bytes), .fn = shard_size_opt, .arg = "SIZE",
     .def = "5GB", .help = "e.g. 5GB, 500MB, 123456 (bytes); 1 GB = 1e9 bytes"},
    PF_OPT_ROW_FLAG("f32", T, f32, 0, "store F32 instead of BF16"),
    PF_OPT_ROW_FLAG("list", T, list, 0, "print the known models with their sizes and exit"),
    PF_OPT_ROW_FLAG("quiet", T, progress, PF_OPT_CLEAR, "no progress lines"),
    PF_OPT_END,
};
#undef T

static const pf_optcmd g_cmd = {
    .name = "make-random-checkpoint",
    .synopsis = "usage: paliflow make-random-checkpoint --like NAME [OPTIONS] OUT_DIR\n"
                "\n"
                "Write a random checkpoint with the real shapes and config of NAME into OUT_DIR, laid out as\n"
                "transformers 4.47 save_pretrained writes it (config.json, generation_config.json, safetensors\n"
                "shards of at most --max-shard-size plus model.safetensors.index.json, or one model.safetensors).\n"
                "Weights are seeded and scaled so activations stay finite through all layers.\n"
                "\n"
                "options:\n",
    .epilog = "\n"
              "example:\n"
              "  paliflow make-random-checkpoint --like paligemma-3b-pt-224 --tiny demo-ckpt\n",
    .opts = g_rows,
    .size = sizeof(rc_cli),
    .init = rc_init,
    .operands = 1,
};

static uint64_t params_of(const pf_rc_spec *s)
{
    pf_rc_tensor *ts;
    size_t n;
    if (pf_rc_tensors(s, &ts, &n, NULL) != 0)
        return 0;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t e = 1;
        for (int d = 0; d < ts[i].ndim; d++)
            e *= (uint64_t)ts[i].shape[d];
        total += e;
    }
    free(ts);
    return total;
}

static void list_models(void)
{
    printf("%-24s %-7s %8s %10s %12s\n", "model", "text", "image", "params", "BF16 size");
    for (const char *const *n = pf_rc_spec_names(); *n; n++) {
        pf_rc_spec s;
        if (pf_rc_spec_lookup(*n, &s, NULL) != 0)
            continue;
        uint64_t p = params_of(&s);
        printf("%-24s %-7s %5lld px %8.3f B %9.2f GB\n", s.name, s.gemma2 ? "gemma2" : "gemma", (long long)s.image_size,
               (double)p / 1e9, (double)p * 2 / 1e9);
    }
}

int cmd_make_random_checkpoint(int argc, char **argv)
{
    rc_cli c;
    rc_init(&c);
    int first;
    int pr = pf_opt_parse(&g_cmd, &c, argc, argv, &first, 0);
    if (pr)
        return pr == 1 ? 0 : 2;
    const char *like = c.like;
    bool tiny = c.tiny, list = c.list;
    uint64_t hidden = (uint64_t)c.hidden, tlayers = (uint64_t)c.tlayers, vlayers = (uint64_t)c.vlayers;
    pf_rc_params o = {.seed = c.seed, .max_shard_bytes = c.max_shard_bytes, .f32 = c.f32, .progress = c.progress};
    if (list) {
        list_models();
        return 0;
    }
    if (!like || first != argc - 1) {
        fprintf(stderr, "paliflow make-random-checkpoint: %s\n", !like ? "--like NAME is required" : "need exactly one OUT_DIR");
        fprintf(stderr, "Run 'paliflow make-random-checkpoint --help' for the options.\n");
        return 2;
    }
    if (hidden && !tiny) {
        fprintf(stderr, "make-random-checkpoint: --hidden-size only applies with --tiny\n");
        return 2;
    }
    const char *out_dir = argv[first];
    pf_err err;
    pf_rc_spec s;
    if (pf_rc_spec_lookup(like, &s, &err) != 0) {
        fprintf(stderr, "make-random-checkpoint: %s\n", err.msg);
        return 2;
    }
    if (tiny)
        pf_rc_spec_tiny(&s, (int64_t)hidden);
    if (tlayers)
        s.layers = (int64_t)tlayers;
    if (vlayers)
        s.v_layers = (int64_t)vlayers;
    if (pf_rc_spec_check(&s, &err) != 0) {
        fprintf(stderr, "make-random-checkpoint: %s\n", err.msg);
        return 2;
    }
    uint64_t params = params_of(&s);
    if (o.progress)
        fprintf(stderr, "make-random-checkpoint: %s: %.3f B parameters, %.2f GB as %s, seed %llu -> %s\n", s.name,
                (double)params / 1e9, (double)params * (o.f32 ? 4 : 2) / 1e9, o.f32 ? "F32" : "BF16",
                (unsigned long long)o.seed, out_dir);
    double t0 = pf_now();
    if (pf_rc_write(&s, out_dir, &o, &err) != 0) {
        fprintf(stderr, "make-random-checkpoint: %s\n", err.msg);
        return 1;
    }
    if (o.progress)
        fprintf(stderr, "make-random-checkpoint: wrote %s in %.1f s\n", out_dir, pf_now() - t0);
    return 0;
}
