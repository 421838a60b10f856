/* cli_worker.h - what the preprocess-worker and inference-worker commands share: their options (the
 * worker runtime's, the stage's --model/--tokenizer/--backend/--precision, security, --metrics), the security checks, the
 * metrics server, and SIGHUP reloads (--log-level, --drain-timeout, --heartbeat-timeout). */
#ifndef PF_CLI_WORKER_H
#define PF_CLI_WORKER_H

#include <signal.h>
#include <stdio.h>

#include "cli/cli_util.h"
#include "model/generate/session.h"
#include "pipeline/service.h"
#include "workers/worker.h"

typedef struct cli_worker {
    pf_worker_opts o;
    pf_service svc;
    const char *model, *tokenizer;   /* inference-worker */
    const char *seg_decoder;         /* inference-worker: --seg-decoder FILE */
    pf_session_opts so;              /* inference-worker: --backend, --precision, --threads */
    uint64_t max_pixels;             /* preprocess-worker: --max-pixels (0: Pillow's limit) */
    double decode_memory_mb;         /* preprocess-worker: --decode-memory-mb (0: PF_DECODE_MEMORY_MB_DEFAULT) */
    const char *cmd;
    int inference;
    cli_reloader reload;             /* SIGHUP */
} cli_worker;

/* The preprocess worker's (and `run`'s) decode memory budget by default: the shipped units run 4 decode
 * threads under MemoryMax=2G (deploy/), and the process needs room besides decoding for the items it holds
 * (--credit x the file sizes) and libvips itself. */
#define PF_DECODE_MEMORY_MB_DEFAULT 1024
#define PF_DECODE_OPTIONS_HELP                                                                                    \
    "  --max-pixels N           refuse images with more than N pixels, read from the header before decoding\n"    \
    "                           (default 178956970, Pillow's limit)\n"                                            \
    "  --decode-memory-mb N     memory all decode threads together may use (default 1024): each image\n"         \
    "                           reserves what decoding it takes, estimated from its header, before its pixels\n"   \
    "                           are decoded; an image that needs more than N is an error record, one that\n"       \
    "                           fits waits for room\n"

void cli_worker_init(cli_worker *c, const char *cmd, int inference, int argc0, char **argv0);
/* Parse ARGV (the config-expanded command line). 0 parsed, 1 --help printed by USAGE, 2 usage error (message
 * printed). */
int cli_worker_parse(cli_worker *c, int argc, char **argv, void (*usage)(FILE *));
/* A worker command's own part: check its required options and point c->o.ops / c->o.stage_cfg at its stage
 * (the configuration must outlive the run). 0 ok, else a usage error (message printed). */
typedef int (*cli_worker_setup_fn)(cli_worker *c);

/* The whole life of a worker command: expand --config, parse, SETUP, check the endpoints against the
 * security settings, start the metrics server and the stop/reload signals, run the stage until stopped or
 * done, stop. Returns the exit status: 0 done, 1 failed while running, 2 usage or setup error. */
int cli_worker_main(const char *cmd, int inference, int argc0, char **argv0, void (*usage)(FILE *),
                    cli_worker_setup_fn setup);

#endif
