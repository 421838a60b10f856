/* bench_run.h - what `paliflow bench` measures, in one run, so every figure is a ratio to ceilings measured
 * on the same machine at the same time (model/roofline.h):
 *   - load time and the converted weights' bytes;
 *   - the GEMM rate of the model's own linear layers at prefill sizes and this precision, and the memory
 *     bandwidth (triad over >= 1 GB);
 *   - prefill of N images in one ragged batch (vision tower + decoder): time and achieved GFLOP/s of its
 *     linear layers (attention, norms, etc. count as time, not as FLOPs);
 *   - one decode step at each batch size (sequences with real prompt caches), against the bound
 *     decode_bound_ms = weight bytes read per step / bandwidth;
 *   - end to end: N images through the generator (continuous batching), every one forced to generate
 *     exactly new_tokens tokens (eos ignored: random weights could stop early), images/s against the bound
 *     from the measured rates;
 *   - peak RSS of the serving part (the peak is reset after the bandwidth and GEMM probes) and of loading.
 * The machine may be shared: every timing is the best of its repetitions (the least disturbed), and the
 * ceilings are measured before and after the prefill and decode measurements, the best counting.
 */
#ifndef PF_CLI_BENCH_RUN_H
#define PF_CLI_BENCH_RUN_H

#include <stddef.h>

#include "base/err.h"
#include "model/linear/cpu.h"

#define BENCH_MAX_BATCHES 8

typedef struct bench_params {
    const char *model_dir;
    pf_precision precision;
    int threads;
    int images;     /* prefill batch and end-to-end images */
    int new_tokens;
    int batches[BENCH_MAX_BATCHES];
    int n_batches;
    int decode_steps; /* timed steps per batch size */
    size_t triad_bytes;
    int skip_e2e;
    int probe_only; /* --probe: print the precision probe table and exit */
} bench_params;

typedef struct bench_result {
    char precision[16], isa[64], cpu[200];
    int threads;
    double load_s, load_peak_rss;
    double weight_bytes, decode_weight_bytes;
    double gemm_gflops, bandwidth_gbs;
    int prompt_tokens;
    double prefill_s, prefill_gflops, prefill_tflop;
    double decode_ms[BENCH_MAX_BATCHES];
    double decode_bound_ms;
    double e2e_s, images_per_s, e2e_bound_images_per_s;
    double peak_rss, kv_bytes, rss_budget;
    size_t image_cache_hits;
} bench_result;

/* precision auto, 4 images, 20 new tokens, batches 1,4,16,64, 5 decode steps, a 1 GiB triad, all cores */
bench_params bench_default_params(void);

int bench_run(const bench_params *o, bench_result *r, pf_err *err);

#endif
