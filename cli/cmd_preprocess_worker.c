/* paliflow preprocess-worker: decode and resize images for the model (connects to producer and sink). */
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "cli/cli_worker.h"
#include "cli/commands.h"
#include "pipeline/config.h"
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
                 "  --threads N              images decoded in parallel (default 1)\n" PF_WORKER_OPTIONS_HELP
                 "security (tcp endpoints need CURVE keys or --insecure):\n" PF_SECURITY_CLIENT_HELP
                 PF_METRICS_HELP);
}

int cmd_preprocess_worker(int argc0, char **argv0)
{
    int argc;
    char **argv;
    pf_err err = {{0}};
    if (pf_config_expand_argv(argc0, argv0, &argc, &argv, &err)) {
        fprintf(stderr, "paliflow preprocess-worker: %s\n", err.msg);
        return 2;
    }
    static cli_worker c;
    cli_worker_init(&c, "preprocess-worker", 0, argc0, argv0);
    int rc = cli_worker_parse(&c, argc, argv, usage);
    if (rc == 1) {
        rc = 0;
        goto out;
    }
    if (rc)
        goto bad;
    static volatile sig_atomic_t stop;
    if ((rc = cli_worker_start(&c, &stop)))
        goto bad;
    pf_preprocess_cfg cfg = {0};
    c.o.ops = &pf_stage_preprocess_ops;
    c.o.stage_cfg = &cfg;
    if (pf_worker_run(&c.o, &err)) {
        fprintf(stderr, "paliflow preprocess-worker: %s\n", err.msg);
        rc = 1;
    } else {
        rc = 0;
    }
    cli_worker_stop(&c);
    goto out;
bad:
    fprintf(stderr, "Run 'paliflow preprocess-worker --help' for the options.\n");
    rc = 2;
out:
    pf_config_free_argv(argc, argv);
    return rc;
}
