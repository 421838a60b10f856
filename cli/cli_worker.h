/* cli_worker.h - what the preprocess-worker and inference-worker commands share: their options (the
 * worker runtime's, the stage's --model/--tokenizer/--backend/--precision, security, --metrics), the security checks, the
 * metrics server, and SIGHUP reloads (--log-level, --drain-timeout, --heartbeat-timeout). */
#ifndef PF_CLI_WORKER_H
#define PF_CLI_WORKER_H

#include <signal.h>
#include <stdio.h>

#include "cli/cli_util.h"
#include "model/session.h"
#include "pipeline/service.h"
#include "workers/worker.h"

typedef struct cli_worker {
    pf_worker_opts o;
    pf_service svc;
    const char *model, *tokenizer;   /* inference-worker */
    const char *seg_decoder;         /* inference-worker: --seg-decoder FILE */
    pf_session_opts so;              /* inference-worker: --backend, --precision, --threads */
    const char *cmd;
    int inference;
    cli_reloader reload;             /* SIGHUP */
} cli_worker;

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
