/* paliflow golden CASE_DIR... [--dump OUT.safetensors]: run golden model cases and compare. */
#include <stdio.h>
#include <string.h>

#include "model/linear/cpu.h"

#include "base/log.h"
#include "base/optable.h"
#include "cli/commands.h"
#include "model/tools/golden.h"

typedef struct golden_cli {
    pf_golden_params g;
    int engine;   /* --backend (the params' field is a bool) */
    int prec_given;
} golden_cli;

static void golden_init(void *obj)
{
    *(golden_cli *)obj = (golden_cli){.g = {.precision = PF_PREC_FP32}};
}

static const pf_opt_choice g_backends[] = {{"reference", 0}, {"engine", 1}, {NULL, 0}};

/* --precision: remembers that it was given (the reference takes fp32 only). */
static int precision_opt(const pf_opt *opt, void *obj, const char *val, pf_err *err)
{
    (void)opt;
    golden_cli *c = obj;
    if (pf_precision_parse(val, &c->g.precision, err))
        return -1;
    c->prec_given = 1;
    return 0;
}

#define T golden_cli
static const pf_opt g_rows[] = {
    PF_OPT_ROW_ENUM("backend", T, engine, g_backends, 0, "B",
                    "reference (the fp32 oracle) or engine (the fast engine; all rows of a case in one ragged batch)"),
    {"precision", 0, PF_OPT_FUNC, 0, .fn = precision_opt, .arg = "P", .def = "fp32",
     .help = "engine precision: fp32, bf16, int8 or auto. bf16/int8 run in accuracy mode: logits vs the fp32 "
             "expected values by cosine and max |difference|; bf16 must be at least as close as transformers' own "
             "bf16 run (case.json bf16_reference), int8 must reach cosine >= 0.99 over all real positions; greedy "
             "agreement with the fp32 tokens is reported"},
    {"dump", 'd', PF_OPT_STR, offsetof(T, g.dump_path), .flags = PF_OPT_NONEMPTY, .arg = "FILE",
     .help = "(one case) write every computed output, same names/shapes/dtypes as expected"},
    {"verbose", 'v', PF_OPT_FLAG, offsetof(T, g.verbose_debug),
     .help = "also print debug/* tensors that pass (reference only)"},
    PF_OPT_ROW_STR("adapter", T, g.adapter, PF_OPT_NONEMPTY, "DIR",
                   "merge this PEFT LoRA adapter into each case's checkpoint at load (compare with a case whose "
                   "expected outputs came from the offline-merged checkpoint)"),
    PF_OPT_END,
};
#undef T

static const pf_optcmd g_cmd = {
    .name = "golden",
    .synopsis = "usage: paliflow golden [--backend reference|engine] [--precision P] [--dump OUT.safetensors] "
                "[--verbose] CASE_DIR...\n\n"
                "Run golden model case directories (checkpoint/, inputs.safetensors, case.json), compare with\n"
                "expected.safetensors under the case's tolerances and masking rules, print the worst error per\n"
                "tensor. Exit 0 only if every case passes, 1 if a case fails, 2 on usage or setup errors, 77 if\n"
                "the requested precision is not supported on this CPU (nothing run).\n\n",
    .opts = g_rows,
    .size = sizeof(golden_cli),
    .init = golden_init,
    .operands = 1,
};

int cmd_golden(int argc, char **argv)
{
    golden_cli c;
    golden_init(&c);
    int first;
    int pr = pf_opt_parse(&g_cmd, &c, argc, argv, &first, 0);
    if (pr)
        return pr == 1 ? 0 : 2;
    pf_golden_params opts = c.g;
    opts.engine = c.engine;
    int prec_given = c.prec_given;
    pf_err perr = {{0}};
    int n = argc - first;
    if (n < 1) {
        fprintf(stderr, "paliflow golden: give at least one CASE_DIR\n");
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
    for (int i = first; i < argc; i++) {
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
