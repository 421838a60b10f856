/* precision_probe.h - `--precision auto` by measurement: which matmul precision runs fastest on THIS CPU
 * while keeping its accuracy contract.
 *
 * Why measure: the instruction set does not predict the speed. On one AVX512_BF16 Xeon oneDNN 2.6 ran bf16
 * at 0.57x fp32 and 0.16x int8; on an AMD host with the same flags bf16 ran 2x fp32. So at load, for each
 * precision oneDNN implements here, one model-shaped GEMM (M = 256 prompt rows through a 2048 x 2048
 * decoder projection, the 3B text width) goes through the same pf_linear path the engine runs (weights
 * converted as at load, activations rounded / quantized per call) and is timed (best of a few calls after a
 * warm-up) and checked against a float64 product on a sample of rows.
 *
 * The table is cached per machine kind in $XDG_CACHE_HOME/paliflow/precision-probe.tsv (else
 * ~/.cache/paliflow/), keyed by CPU model string + oneDNN ISA + our kernel tier + paliflow version: a
 * different CPU, a PALIFLOW_MAX_ISA cap or a new release measures again. A corrupt file is ignored with a
 * warning and rewritten. PALIFLOW_PROBE_CACHE=off neither reads nor writes it. A table measured while the
 * load average exceeds the CPU count is used for that run only, not cached (PALIFLOW_PROBE_CACHE=always
 * caches it anyway).
 *
 * The choice (pf_probe_choose) is a pure function of the table, so it is tested on made-up tables.
 */
#ifndef PF_MODEL_PRECISION_PROBE_H
#define PF_MODEL_PRECISION_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "base/err.h"
#include "model/linear/cpu.h"

/* The probe's GEMM: y[M,N] = x[M,K] W[N,K]^T. */
#define PF_PROBE_M 256
#define PF_PROBE_K 2048
#define PF_PROBE_N 2048
/* Rows checked against the float64 product. */
#define PF_PROBE_CHECK_ROWS 8
/* A less exact precision is chosen over a more exact one only when it is this much faster: run-to-run noise
 * on a shared machine (10-30%) must not trade accuracy away for nothing. */
#define PF_PROBE_MARGIN 1.15
#define PF_PROBE_KEY_MAX 256
#define PF_PROBE_CACHE_MAX_BYTES (256u << 10)

typedef struct pf_probe_row {
    bool supported;  /* oneDNN implements it without `ref:` code (pf_precision_probe) and the probe ran */
    double gflops;   /* GFLOP/s (GOP/s for int8), best call */
    double rel_err;  /* ||y - y64|| / ||y64|| over the checked rows */
    char impl[96];   /* what ran (pf_linear_impl), or why it did not */
} pf_probe_row;

typedef struct pf_probe_table {
    char key[PF_PROBE_KEY_MAX];
    pf_probe_row row[PF_PREC_COUNT]; /* indexed by pf_precision; row[PF_PREC_AUTO] unused */
    bool from_cache;
} pf_probe_table;

/* Relative-error bound of one GEMM under each precision's contract (model/README "Contracts"): fp32 is
 * transformers' fp32 up to summation order; bf16 rounds both operands to 8 mantissa bits (about 0.4% per
 * product, less after summation); int8 must keep the logits' cosine >= 0.99, which an error of 5% per
 * layer keeps with margin (cosine = 1 - err^2 / 2 per layer = 0.9987). */
double pf_probe_tolerance(pf_precision p);

/* "CPU model|oneDNN ISA|tier|version" for this process (after PALIFLOW_MAX_ISA). */
void pf_probe_key(char *buf, size_t len);

/* The fastest precision that is supported and within its tolerance; a less exact one must beat a more exact
 * one by PF_PROBE_MARGIN. Fails (naming every row's reason) when none qualifies. why (may be NULL): one line
 * saying what was chosen and why. */
int pf_probe_choose(const pf_probe_table *t, pf_precision *out, char *why, size_t why_len, pf_err *err);

/* Measure now (no cache). Rows oneDNN cannot run here are left unsupported with the reason in impl. */
int pf_probe_measure(pf_probe_table *t, pf_err *err);

/* The cache file's path: $XDG_CACHE_HOME/paliflow/precision-probe.tsv, else $HOME/.cache/paliflow/...
 * Fails when neither variable is set. */
int pf_probe_cache_path(char *buf, size_t len, pf_err *err);
/* Parse the cache file's text, looking for `key`: 1 found (t filled), 0 absent, -1 malformed (err names the
 * line and field). Every line is validated, not only the key's. */
int pf_probe_cache_parse(const char *text, size_t len, const char *key, pf_probe_table *t, pf_err *err);
/* Read PATH: as pf_probe_cache_parse; a missing file is 0. */
int pf_probe_cache_load(const char *path, const char *key, pf_probe_table *t, pf_err *err);
/* Write t's rows under t->key into PATH (atomically), keeping other keys' rows if the file parses. Creates
 * the directory. */
int pf_probe_cache_store(const char *path, const pf_probe_table *t, pf_err *err);

/* False when PALIFLOW_PROBE_CACHE=off (no cache read or written). */
bool pf_probe_cache_enabled(void);

/* The process's table: measured once (thread-safe), or read from the cache; NULL with err set if the probe
 * itself failed (then `auto` falls back to the static rule in cpu.c). */
const pf_probe_table *pf_probe_table_get(pf_err *err);

/* The table as aligned text lines (for `paliflow bench` and logs), with the choice marked. */
void pf_probe_print(const pf_probe_table *t, FILE *f);

#endif
