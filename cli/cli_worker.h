/* cli_worker.h - what the preprocess-worker and inference-worker commands share: the struct their option
 * tables fill (the worker runtime's params, the service's, each role's own), the security checks, the
 * metrics server, and SIGHUP reloads of the rows their tables mark reloadable. */
#ifndef PF_CLI_WORKER_H
#define PF_CLI_WORKER_H

#include <signal.h>
#include <stdint.h>

#include "base/optable.h"
#include "cli/cli_util.h"
#include "model/generate/session.h"
#include "pipeline/service.h"
#include "workers/worker.h"

typedef struct cli_worker {
    pf_worker_params o;
    pf_service svc;
    const char *model, *tokenizer;   /* inference-worker */
    const char *seg_decoder;         /* inference-worker: --seg-decoder FILE */
    pf_session_params so;            /* inference-worker: --backend, --precision, --threads */
    uint64_t max_pixels;             /* preprocess-worker: --max-pixels */
    double decode_memory_mb;         /* preprocess-worker: --decode-memory-mb */
    const pf_optcmd *cmd;
    cli_reloader reload;             /* SIGHUP */
} cli_worker;

/* The defaults of both roles (the optcmd's init). */
void cli_worker_defaults(void *obj);

/* A row that names an option of the other role: accepted by getopt, refused with "--NAME is for WHO" (one
 * config file may be written for both roles, but each option means something only to one of them). */
int cli_worker_wrong_role(const pf_opt *opt, void *field, const char *val, pf_err *err);
#define CLI_WORKER_WRONG_ROLE(NAME, ARG, WHO)                                                                      \
    {(NAME), 0, PF_OPT_FUNC, 0, .fn = cli_worker_wrong_role, .flags = PF_OPT_HIDDEN, .arg = (ARG), .help = (WHO)}

/* A worker command's own part: check its required options and point c->o.ops / c->o.stage_cfg at its stage
 * (the configuration must outlive the run). 0 ok, else a usage error (message printed). */
typedef int (*cli_worker_setup_fn)(cli_worker *c);

/* The whole life of a worker command: expand --config, parse with CMD's table, SETUP, check the endpoints
 * against the security settings, start the metrics server and the stop/reload signals, run the stage until
 * stopped or done, stop. Returns the exit status: 0 done, 1 failed while running, 2 usage or setup error. */
int cli_worker_main(const pf_optcmd *cmd, int argc0, char **argv0, cli_worker_setup_fn setup);

#endif
