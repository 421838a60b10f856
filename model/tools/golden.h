/* golden.h - run a golden model case directory (the ../shared/golden/model/CASE/ format) and compare with its
 * expected.safetensors under the case's tolerances and masking rules (README "Tolerance rule and checker
 * masking"). Used by `paliflow golden`. */
#ifndef PF_MODEL_GOLDEN_H
#define PF_MODEL_GOLDEN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/err.h"
#include "model/linear/cpu.h"

typedef struct pf_golden_params {
    const char *dump_path; /* NULL, or write every computed output (required + debug) here */
    FILE *report;          /* per-tensor lines; NULL = stdout */
    int verbose_debug;     /* also print debug tensors that pass */
    bool engine;           /* run the fast engine (model/engine/engine.h) instead of the fp32 reference */
    pf_precision precision; /* engine precision (AUTO resolves per CPU) */
    const char *adapter;    /* PEFT LoRA adapter merged into the case's checkpoint at load (model/io/lora.h), or NULL */
} pf_golden_params;

/* Run the case. *passed = 1 iff every required output matches. Returns -1 if the case could not be run
 * (missing files, model load failure...).
 * Engine at fp32: the same comparison as the reference (the case's tolerances). Engine at bf16 / int8:
 * accuracy mode, because reduced precision cannot meet fp32 tolerances: the logits (and score_logits) at
 * real positions are compared with the fp32 expected values by cosine and max |difference|, overall and at
 * each row's last position. bf16 passes iff it is at least as close as transformers' own bf16 run
 * (case.json bf16_reference): overall cosine >= overall_cosine, overall max-abs <= overall_max_abs, worst
 * last-position cosine >= worst_cosine_last_position and worst last-position max-abs <=
 * worst_max_abs_last_position. int8 passes iff the cosine over all real positions is >= 0.99 (the
 * last-position figures are printed: per-channel int8 weights alone cost a tiny golden model up to ~0.98 there).
 * Greedy tokens (generate cases) are compared and reported, not required, in accuracy mode. */
int pf_golden_run_case(const char *case_dir, const pf_golden_params *opts, int *passed, pf_err *err);

/* Closeness of logits `got` to `expected` ([B][T][V]) at real positions (mask[b][t] != 0), in double:
 * cosine and max |difference| over all of them, and the worst of each row's last real position. */
typedef struct pf_golden_closeness {
    double cosine, max_abs;
    double worst_last_cosine, worst_last_max_abs;
} pf_golden_closeness;
void pf_golden_closeness_of(const float *got, const float *expected, const int64_t *mask, int64_t B, int64_t T,
                            int64_t V, pf_golden_closeness *out);

#endif
