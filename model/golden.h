/* golden.h - run a golden model case directory (the ../shared/golden/model/CASE/ format) and compare with its
 * expected.safetensors under the case's tolerances and masking rules (README "Tolerance rule and checker
 * masking"). Used by `paliflow golden`. */
#ifndef PF_MODEL_GOLDEN_H
#define PF_MODEL_GOLDEN_H

#include <stdio.h>

#include "base/err.h"

typedef struct pf_golden_opts {
    const char *dump_path; /* NULL, or write every computed output (required + debug) here */
    FILE *report;          /* per-tensor lines; NULL = stdout */
    int verbose_debug;     /* also print debug tensors that pass */
} pf_golden_opts;

/* Run the case. *passed = 1 iff every required output matches. Returns -1 if the case could not be run
 * (missing files, model load failure...). */
int pf_golden_run_case(const char *case_dir, const pf_golden_opts *opts, int *passed, pf_err *err);

#endif
