/* paliflow golden CASE_DIR... [--dump OUT.safetensors]: run golden model cases and compare. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "model/linear/cpu.h"

#include "base/log.h"
#include "cli/commands.h"
#include "model/tools/golden.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: paliflow golden [--backend reference|engine] [--precision P] [--dump OUT.safetensors]\n"
                 "                       [--verbose] CASE_DIR...\n\n"
                 "Run golden model case directories (checkpoint/, inputs.safetensors, case.json), compare with\n"
                 "expected.safetensors under the case's tolerances and masking rules, print the worst error per\n"
                 "tensor. Exit 0 only if every case passes, 1 if a case fails, 2 on usage or setup errors, 77 if\n"
                 "the requested precision is not supported on this CPU (nothing run).\n\n"
                 "  --backend B     reference (default: the fp32 oracle) or engine (the fast engine; all rows of a\n"
                 "                  case in one ragged batch)\n"
                 "  --precision P   engine precision: fp32 (default), bf16, int8 or auto. bf16/int8 run in accuracy\n"
                 "                  mode: logits vs the fp32 expected values by cosine and max |difference|; bf16\n"
                 "                  must be at least as close as transformers' own bf16 run (case.json\n"
                 "                  bf16_reference), int8 must reach cosine >= 0.99 over all real positions; greedy\n"
                 "                  agreement with the fp32 tokens is reported\n"
                 "  --dump FILE     (one case) write every computed output, same names/shapes/dtypes as expected\n"
                 "  --verbose       also print debug/* tensors that pass (reference only)\n"
                 "  --adapter DIR   merge this PEFT LoRA adapter into each case's checkpoint at load (compare with\n"
                 "                  a case whose expected outputs came from the offline-merged checkpoint)\n"
                 "  --config FILE   options from FILE, 'name = value' lines (the command line wins)\n"
                 "  -h, --help      this help\n");
}

int cmd_golden(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"dump", required_argument, NULL, 'd'},
        {"backend", required_argument, NULL, 'b'},
        {"precision", required_argument, NULL, 'p'},
        {"verbose", no_argument, NULL, 'v'},
        {"adapter", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    pf_golden_opts opts = {.precision = PF_PREC_FP32};
    int c, prec_given = 0;
    pf_err perr = {{0}};
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:vh", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': opts.dump_path = optarg; break;
        case 'v': opts.verbose_debug = 1; break;
        case 'a': opts.adapter = optarg; break;
        case 'b':
            if (strcmp(optarg, "engine") && strcmp(optarg, "reference")) {
                fprintf(stderr, "paliflow golden: --backend: want reference or engine, got '%s'\n", optarg);
                return 2;
            }
            opts.engine = strcmp(optarg, "engine") == 0;
            break;
        case 'p':
            if (pf_precision_parse(optarg, &opts.precision, &perr) != 0) {
                fprintf(stderr, "paliflow golden: --precision: %s\n", perr.msg);
                return 2;
            }
            prec_given = 1;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    int n = argc - optind;
    if (n < 1) {
        usage(stderr);
        return 2;
    }
    if (opts.dump_path && n != 1) {
        fprintf(stderr, "paliflow golden: --dump takes exactly one CASE_DIR\n");
        return 2;
    }
    if (prec_given && !opts.engine && opts.precision != PF_PREC_FP32) {
        fprintf(stderr, "paliflow golden: --precision %s needs --backend engine (the reference is fp32)\n",
                pf_precision_name(opts.precision));
        return 2;
    }
    pf_precision resolved;
    if (opts.engine && pf_precision_resolve(opts.precision, &resolved, &perr) != 0) {
        printf("golden: SKIP: %s\n", perr.msg);
        return 77;
    }
    int failed = 0, broken = 0;
    for (int i = optind; i < argc; i++) {
        pf_err err = {{0}};
        int passed = 0;
        if (pf_golden_run_case(argv[i], &opts, &passed, &err) != 0) {
            fprintf(stderr, "paliflow golden: %s: %s\n", argv[i], err.msg);
            broken++;
        } else if (!passed) {
            failed++;
        }
        fflush(stdout);
    }
    printf("golden: %d passed, %d failed\n", n - failed - broken, failed + broken);
    return broken ? 2 : failed ? 1 : 0;
}
