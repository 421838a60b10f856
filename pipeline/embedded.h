/* embedded.h - the whole pipeline in one process: producer, sink, a preprocess worker with N compute
 * threads and one inference worker, as threads talking over inproc sockets (the same code and protocol
 * as the multi-process setup). */
#ifndef PF_PIPELINE_EMBEDDED_H
#define PF_PIPELINE_EMBEDDED_H

#include <signal.h>

#include "base/err.h"
#include "pipeline/producer.h"
#include "pipeline/sink.h"
#include "workers/stage.h"

typedef struct pf_embedded_params {
    pf_producer_params producer;     /* bind is set by the runner; image_size 0 = ask the inference stage */
    pf_sink_params sink;             /* out (and optional publish) from the caller; bind/producer set here */
    const pf_stage_ops *pre_ops;
    const void *pre_cfg;
    int pre_threads;
    const pf_stage_ops *inf_ops;
    const void *inf_cfg;
    int max_batch, max_delay_ms;
    volatile sig_atomic_t *stop;
} pf_embedded_params;

/* Runs the job to completion: 0 complete, 1 interrupted, -1 error. */
int pf_embedded_run(pf_embedded_params *o, pf_job_stats *stats, pf_err *err);

#endif
