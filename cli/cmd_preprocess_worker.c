/* paliflow preprocess-worker: decode and resize images for the model (connects to producer and sink). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"
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
                 "at any time; SIGTERM/SIGINT hands unfinished items back.\n"
                 "\n"
                 "  --threads N              images decoded in parallel (default 1)\n" PF_WORKER_OPTIONS_HELP);
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
    pf_worker_opts o;
    pf_worker_opts_defaults(&o);
    static const struct option opts[] = {
        {"producer", required_argument, 0, 0}, {"sink", required_argument, 0, 0},
        {"name", required_argument, 0, 0},     {"threads", required_argument, 0, 0},
        {"credit", required_argument, 0, 0},   {"heartbeat", required_argument, 0, 0},
        {"heartbeat-timeout", required_argument, 0, 0}, {"drain-timeout", required_argument, 0, 0},
        {"exit-when-done", no_argument, 0, 0}, {"max-message-mb", required_argument, 0, 0},
        {"log-level", required_argument, 0, 0}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int rc = 2, idx, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
        if (c == 'h') {
            usage(stdout);
            rc = 0;
            goto out;
        }
        if (c != 0)
            goto bad;
        if (!strcmp(opts[idx].name, "log-level")) {
            if (pf_log_level_option(optarg))
                goto out;
            continue;
        }
        if (pf_worker_option(opts[idx].name, optarg, &o, &err) < 0) {
            fprintf(stderr, "paliflow preprocess-worker: %s\n", err.msg);
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "paliflow preprocess-worker: unexpected argument '%s'\n", argv[optind]);
        goto bad;
    }
    if (!o.producer || !o.sink) {
        fprintf(stderr, "paliflow preprocess-worker: --producer and --sink are required\n");
        goto bad;
    }
#ifdef PALIFLOW_HAVE_IMAGE
    static volatile sig_atomic_t stop;
    pf_install_stop_signals(&stop);
    o.stop = &stop;
    pf_preprocess_cfg cfg = {0};
    o.ops = &pf_stage_preprocess_ops;
    o.stage_cfg = &cfg;
    if (pf_worker_run(&o, &err)) {
        fprintf(stderr, "paliflow preprocess-worker: %s\n", err.msg);
        rc = 1;
    } else {
        rc = 0;
    }
#else
    fprintf(stderr, "paliflow preprocess-worker: this build has no image library (workers/image.h is not merged "
                    "yet)\n");
    rc = 2;
#endif
    goto out;
bad:
    fprintf(stderr, "Run 'paliflow preprocess-worker --help' for the options.\n");
    rc = 2;
out:
    pf_config_free_argv(argc, argv);
    return rc;
}
