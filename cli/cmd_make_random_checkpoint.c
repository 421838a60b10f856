/* paliflow make-random-checkpoint: a random checkpoint with the real shapes and config of a PaliGemma
 * model, in the Hugging Face layout, to benchmark and test without the real weights. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/log.h"
#include "cli/commands.h"
#include "model/tools/random_ckpt.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: paliflow make-random-checkpoint --like NAME [OPTIONS] OUT_DIR\n"
            "\n"
            "Write a random checkpoint with the real shapes and config of NAME into OUT_DIR, laid out as\n"
            "transformers 4.47 save_pretrained writes it (config.json, generation_config.json, safetensors\n"
            "shards of at most --max-shard-size plus model.safetensors.index.json, or one model.safetensors).\n"
            "Weights are seeded and scaled so activations stay finite through all layers.\n"
            "\n"
            "options:\n"
            "  --like NAME            model to imitate (see --list)\n"
            "  --tiny                 few-MB demo model: real vocabulary (257216), image size and patch size,\n"
            "                         text width --hidden-size, 2 layers of each tower\n"
            "  --hidden-size N        text width with --tiny (default 8)\n"
            "  --text-layers N        number of decoder layers (default: the model's)\n"
            "  --vision-layers N      number of SigLIP layers (default: the model's)\n"
            "  --seed N               random seed (default 0); same seed, same bytes\n"
            "  --max-shard-size SIZE  e.g. 5GB (default), 500MB, 123456 (bytes); 1 GB = 1e9 bytes\n"
            "  --f32                  store F32 instead of BF16\n"
            "  --list                 print the known models with their sizes and exit\n"
            "  --quiet                no progress lines\n"
            "  --log-level LEVEL      error|warn|info|debug\n"
            "  --config FILE          options from FILE, 'name = value' lines (the command line wins)\n"
            "  -h, --help             this help\n"
            "\n"
            "example:\n"
            "  paliflow make-random-checkpoint --like paligemma-3b-pt-224 --tiny demo-ckpt\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

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
    enum { OPT_TINY = 256, OPT_HIDDEN, OPT_TLAYERS, OPT_VLAYERS, OPT_SEED, OPT_SHARD, OPT_F32, OPT_LIST, OPT_QUIET,
           OPT_LOG };
    static const struct option opts[] = {
        {"like", required_argument, NULL, 'l'},
        {"tiny", no_argument, NULL, OPT_TINY},
        {"hidden-size", required_argument, NULL, OPT_HIDDEN},
        {"text-layers", required_argument, NULL, OPT_TLAYERS},
        {"vision-layers", required_argument, NULL, OPT_VLAYERS},
        {"seed", required_argument, NULL, OPT_SEED},
        {"max-shard-size", required_argument, NULL, OPT_SHARD},
        {"f32", no_argument, NULL, OPT_F32},
        {"list", no_argument, NULL, OPT_LIST},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *like = NULL;
    bool tiny = false, list = false;
    uint64_t hidden = 0, tlayers = 0, vlayers = 0;
    pf_rc_options o = {.progress = true};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "l:h", opts, NULL)) != -1) {
        switch (c) {
        case 'l': like = optarg; break;
        case OPT_TINY: tiny = true; break;
        case OPT_HIDDEN:
            if (parse_u64(optarg, &hidden) || hidden < 1 || hidden > 65536) {
                fprintf(stderr, "make-random-checkpoint: --hidden-size '%s': need an integer 1..65536\n", optarg);
                return 2;
            }
            break;
        case OPT_TLAYERS:
        case OPT_VLAYERS: {
            uint64_t v;
            if (parse_u64(optarg, &v) || v < 1 || v > 1024) {
                fprintf(stderr, "make-random-checkpoint: --%s '%s': need an integer 1..1024\n",
                        c == OPT_TLAYERS ? "text-layers" : "vision-layers", optarg);
                return 2;
            }
            *(c == OPT_TLAYERS ? &tlayers : &vlayers) = v;
            break;
        }
        case OPT_SEED:
            if (parse_u64(optarg, &o.seed)) {
                fprintf(stderr, "make-random-checkpoint: --seed '%s': need a non-negative integer\n", optarg);
                return 2;
            }
            break;
        case OPT_SHARD:
            if (parse_size(optarg, &o.max_shard_bytes)) {
                fprintf(stderr, "make-random-checkpoint: --max-shard-size '%s': need a size like 5GB, 500MB or "
                                "a byte count\n", optarg);
                return 2;
            }
            break;
        case OPT_F32: o.f32 = true; break;
        case OPT_LIST: list = true; break;
        case OPT_QUIET: o.progress = false; break;
        case OPT_LOG:
            if (pf_log_level_option("make-random-checkpoint", optarg))
                return 2;
            break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "make-random-checkpoint: unknown or incomplete option '%s'\n\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (list) {
        list_models();
        return 0;
    }
    if (!like || optind != argc - 1) {
        fprintf(stderr, "make-random-checkpoint: %s\n\n", !like ? "--like NAME is required" : "need exactly one OUT_DIR");
        usage(stderr);
        return 2;
    }
    if (hidden && !tiny) {
        fprintf(stderr, "make-random-checkpoint: --hidden-size only applies with --tiny\n");
        return 2;
    }
    const char *out_dir = argv[optind];
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
