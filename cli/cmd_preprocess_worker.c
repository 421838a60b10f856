/* paliflow preprocess-worker: decode and resize images for the model (connects to producer and sink). */
#include <stdio.h>

#include "cli/cli_worker.h"
#include "cli/commands.h"
#include "workers/stages.h"
#include "workers/worker.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: paliflow preprocess-worker --producer ENDPOINT --sink ENDPOINT [OPTIONS]\n"
                 "\n"
                 "Pull raw images from the producer (credit-based: never more than --credit at once), decode and\n"
                 "resize them to the job's image size (uint8 RGB, exact to Pillow), and send them back to the\n"
                 "producer for the inference workers. Bad images become error records at the sink. Join and leave\n"
                 "at any time; SIGTERM/SIGINT finishes the images in progress (up to --drain-timeout), hands the\n"
                 "rest back and exits 0. SIGHUP re-reads --config.\n"
                 "\n"
                 "  --threads N              images decoded in parallel (default 1)\n" PF_DECODE_OPTIONS_HELP
                 PF_WORKER_OPTIONS_HELP
                 "security (tcp endpoints need CURVE keys or --insecure):\n" PF_SECURITY_CLIENT_HELP
                 PF_METRICS_HELP);
}

static int setup(cli_worker *c)
{
    static pf_preprocess_params cfg;
    cfg.max_pixels = c->max_pixels;
    double mb = c->decode_memory_mb > 0 ? c->decode_memory_mb : PF_DECODE_MEMORY_MB_DEFAULT;
    /* one budget for the whole process, shared by the --threads decoders; lives as long as the process */
    if (!cfg.budget && !(cfg.budget = pf_img_budget_new((uint64_t)(mb * 1048576.0)))) {
        fprintf(stderr, "paliflow %s: out of memory\n", c->cmd);
        return -1;
    }
    c->o.ops = &pf_stage_preprocess_ops;
    c->o.stage_cfg = &cfg;
    return 0;
}

int cmd_preprocess_worker(int argc0, char **argv0)
{
    return cli_worker_main("preprocess-worker", 0, argc0, argv0, usage, setup);
}
