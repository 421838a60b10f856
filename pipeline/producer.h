/* producer.h - the job's owner: scans the inputs into the job store, hands raw items to preprocess
 * workers and preprocessed items to inference workers under credit, leases with deadlines, retries,
 * and marks items done or failed when the sink acknowledges their records. Binds one ROUTER socket that
 * preprocess workers, inference workers and the sink all connect to (proto/PROTOCOL.md).
 */
#ifndef PF_PIPELINE_PRODUCER_H
#define PF_PIPELINE_PRODUCER_H

#include <stdint.h>

#include "base/control.h"
#include "base/err.h"
#include "pipeline/scan.h"
#include "proto/proto.h"
#include "proto/security.h"

typedef struct pf_producer_params {
    const char *bind;                 /* endpoint */
    const char *db;                   /* job store file */
    int db_lock_fd;                   /* its lock, already held by the caller (pf_dblock_acquire), or -1 (the
                                       * default): taken at start. `run` takes its locks before its roles start */
    int have_task;                    /* task/image_size given (else taken from an existing job store) */
    pf_task task;
    int image_size;
    pf_scan_params scan;                /* no roots and no list: rescan the inputs stored in the job */
    const char *manifest;             /* JSONL/CSV/TSV with per-item path, prompt, settings, id, extra columns */
    const char *const *more_tasks;    /* further --task prompts: each file gets one item per task */
    size_t n_more_tasks;
    int retry_failed;                 /* queue the job's failed items again (attempts reset) */
    int path_only;                    /* send paths, not bytes (workers share the storage) */
    int max_attempts;                 /* lost leases / retries before an item becomes an error record */
    double retry_backoff_s;           /* wait before a retry: this x 2^(attempt-1), jitter 0.5-1.5x; 0 none */
    double preprocess_lease_s, inference_lease_s, ack_timeout_s;
    double hb_interval, hb_timeout;
    int max_ready;                    /* preprocessed items kept in memory waiting for inference */
    size_t max_file_bytes;
    pf_proto_limits lim;
    int progress;                     /* -1 auto (bar on a terminal, lines otherwise), 0 off, 1 lines, 2 bar */
    double progress_interval;         /* seconds between plain progress lines */
    void *zctx;                       /* optional shared ZeroMQ context (embedded mode) */
    const pf_security *sec;           /* CURVE keys / --insecure (NULL: plain sockets, library use) */
    const char *report;               /* write the job report (JSON) here when the run ends (optional) */
    int stay;                         /* after completion keep serving (finished heartbeats, metrics) until stopped */
    /* Stop and reload. A reload may change the reloadable fields of this struct: max_attempts, leases,
     * ack/heartbeat timeouts, max_ready, retry_backoff_s, progress_interval (the rows cli/cmd_producer.c marks
     * PF_OPT_RELOAD); the CURVE allow-list is re-read after it. */
    pf_control ctl;
} pf_producer_params;

typedef struct pf_job_stats {
    int64_t total, done, failed;
    double seconds;
    int64_t hidden_skipped;   /* by this run's scan (pipeline/scan.h) */
} pf_job_stats;

/* The job report (--report): img2dataset-style statistics of the job and this run, as JSON:
 *   {"status": "complete"|"interrupted", "job": {db, task, image_size, instance}, "started_at",
 *    "finished_at", "seconds", "items": {total, done, failed, remaining, done_this_run, failed_this_run},
 *    "throughput": {items_per_second, done_per_second}, "retries": {requeued, leases_expired, handed_back,
 *    by_stage}, "workers": {preprocess|inference|sink: {joined, lost}},
 *    "errors": {"count", "by_stage": {stage: n}, "by_reason": [{"reason", "count"}] (largest first, top 50)}}
 * Written atomically (write + fsync + rename). */

/* Every field at its default (the numbers `producer --help` shows); endpoints, paths and controls unset. */
pf_producer_params pf_producer_default_params(void);

/* PaliGemma's input sizes. Another --image-size is refused unless asked for (a typo such as 300 would make
 * every item's tensor the wrong size for every worker). */
static inline int pf_image_size_is_paligemma(int s) { return s == 224 || s == 448 || s == 896; }

/* Run the job. Returns 0 when every item is done or failed, 1 when stopped before that, -1 on a setup or
 * fatal error (err says why). STATS (may be NULL) gets the final counts. */
int pf_producer_run(const pf_producer_params *o, pf_job_stats *stats, pf_err *err);

#endif
