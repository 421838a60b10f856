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
    pf_session_opts so;              /* inference-worker: --backend, --precision, --threads */
    const char *cmd;
    int inference;
    cli_reloader reload;             /* SIGHUP */
} cli_worker;

void cli_worker_init(cli_worker *c, const char *cmd, int inference, int argc0, char **argv0);
/* Parse ARGV (the config-expanded command line). 0 parsed, 1 --help printed by USAGE, 2 usage error (message
 * printed). */
int cli_worker_parse(cli_worker *c, int argc, char **argv, void (*usage)(FILE *));
/* Check the endpoints against the security settings, start the metrics server, install the stop and reload
 * signals. 0 ok, 2 usage/setup error (message printed). */
int cli_worker_start(cli_worker *c, volatile sig_atomic_t *stop);
void cli_worker_stop(cli_worker *c);

#endif
