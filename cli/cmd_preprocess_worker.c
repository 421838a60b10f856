/* paliflow preprocess-worker: decode and resize images for the model (connects to producer and sink). */
#include <stdio.h>

#include "cli/cli_options.h"
#include "cli/cli_worker.h"
#include "cli/commands.h"
#include "workers/stages.h"
#include "workers/worker.h"

#define T cli_worker
static const pf_opt g_rows[] = {
    PF_OPT_ROW_INT("threads", T, o.threads, 1, 1024, 0, "N", "images decoded in parallel"),
    CLI_DECODE_ROWS(T, max_pixels, decode_memory_mb),
    PF_WORKER_OPT_ROWS(T, o),
    PF_OPT_ROW_HEADING("security (tcp endpoints need CURVE keys or --insecure):"),
    PF_SERVICE_OPT_ROWS(T, svc, PF_OPT_HIDDEN, 0),
    CLI_WORKER_WRONG_ROLE("model", "DIR", "inference workers"),
    CLI_WORKER_WRONG_ROLE("tokenizer", "FILE", "inference workers"),
    CLI_WORKER_WRONG_ROLE("seg-decoder", "FILE", "inference workers"),
    CLI_WORKER_WRONG_ROLE("max-batch", "N", "inference workers"),
    CLI_WORKER_WRONG_ROLE("max-delay-ms", "N", "inference workers"),
    CLI_WORKER_WRONG_ROLE("backend", "B", "inference workers"),
    CLI_WORKER_WRONG_ROLE("precision", "P", "inference workers"),
    CLI_WORKER_WRONG_ROLE("no-memory-check", NULL, "inference workers"),
    CLI_WORKER_WRONG_ROLE("adapter", "DIR", "inference workers"),
    PF_OPT_END,
};
#undef T

static const pf_optcmd g_cmd = {
    .name = "preprocess-worker",
    .synopsis = "usage: paliflow preprocess-worker --producer ENDPOINT --sink ENDPOINT [OPTIONS]\n"
                "\n"
                "Pull raw images from the producer (credit-based: never more than --credit at once), decode and\n"
                "resize them to the job's image size (uint8 RGB, exact to Pillow), and send them back to the\n"
                "producer for the inference workers. Bad images become error records at the sink. Join and leave\n"
                "at any time; SIGTERM/SIGINT finishes the images in progress (up to --drain-timeout), hands the\n"
                "rest back and exits 0. SIGHUP re-reads --config and applies the options marked 'reloads'.\n"
                "\n",
    .opts = g_rows,
    .size = sizeof(cli_worker),
    .init = cli_worker_defaults,
};

static int setup(cli_worker *c)
{
    static pf_preprocess_params cfg;
    cfg.max_pixels = c->max_pixels;
    /* one budget for the whole process, shared by the --threads decoders; lives as long as the process */
    if (!cfg.budget && !(cfg.budget = pf_img_budget_new((uint64_t)(c->decode_memory_mb * 1048576.0)))) {
        fprintf(stderr, "paliflow %s: out of memory\n", c->cmd->name);
        return -1;
    }
    c->o.ops = &pf_stage_preprocess_ops;
    c->o.stage_cfg = &cfg;
    return 0;
}

int cmd_preprocess_worker(int argc0, char **argv0)
{
    return cli_worker_main(&g_cmd, argc0, argv0, setup);
}
