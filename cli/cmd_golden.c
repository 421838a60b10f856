/* paliflow golden CASE_DIR... [--dump OUT.safetensors]: run golden model cases and compare. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "cli/commands.h"
#include "model/golden.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: paliflow golden [--dump OUT.safetensors] [--verbose] CASE_DIR...\n\n"
                 "Run golden model case directories (checkpoint/, inputs.safetensors, case.json) with the fp32\n"
                 "reference forward, compare with expected.safetensors under the case's tolerances and masking\n"
                 "rules, print the worst error per tensor. Exit 0 only if every case passes, 1 if a case fails,\n"
                 "2 on usage or setup errors.\n\n"
                 "  --dump FILE   (one case) write every computed output, same names/shapes/dtypes as expected\n"
                 "  --verbose     also print debug/* tensors that pass\n");
}

int cmd_golden(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"dump", required_argument, NULL, 'd'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    pf_golden_opts opts = {0};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:vh", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': opts.dump_path = optarg; break;
        case 'v': opts.verbose_debug = 1; break;
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
