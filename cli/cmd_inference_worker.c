/* paliflow inference-worker: run the model on preprocessed images (connects to producer and sink). */
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
    fprintf(out, "usage: paliflow inference-worker --producer ENDPOINT --sink ENDPOINT --model DIR --tokenizer FILE "
                 "[OPTIONS]\n"
                 "\n"
                 "Load the model once, pull preprocessed images from the producer and generate with continuous\n"
                 "batching: up to --max-batch sequences decode together and new items join between steps. Results\n"
                 "go to the sink. An item made for another image size than the model's becomes an error record.\n"
                 "\n"
                 "  --model DIR              checkpoint folder (config.json + *.safetensors) (required)\n"
                 "  --tokenizer FILE         tokenizer.json (required)\n"
                 "  --max-batch N            sequences generated together (8)\n"
                 "  --max-delay-ms N         when idle, wait this long for more items before starting (20)\n"
                 PF_WORKER_OPTIONS_HELP);
}

int cmd_inference_worker(int argc0, char **argv0)
{
    int argc;
    char **argv;
    pf_err err = {{0}};
    if (pf_config_expand_argv(argc0, argv0, &argc, &argv, &err)) {
        fprintf(stderr, "paliflow inference-worker: %s\n", err.msg);
        return 2;
    }
    pf_worker_opts o;
    pf_worker_opts_defaults(&o);
    const char *model = NULL, *tokenizer = NULL;
    static const struct option opts[] = {
        {"producer", required_argument, 0, 0},  {"sink", required_argument, 0, 0},
        {"model", required_argument, 0, 0},     {"tokenizer", required_argument, 0, 0},
        {"name", required_argument, 0, 0},      {"max-batch", required_argument, 0, 0},
        {"max-delay-ms", required_argument, 0, 0}, {"credit", required_argument, 0, 0},
        {"heartbeat", required_argument, 0, 0}, {"heartbeat-timeout", required_argument, 0, 0},
        {"drain-timeout", required_argument, 0, 0}, {"exit-when-done", no_argument, 0, 0},
        {"max-message-mb", required_argument, 0, 0}, {"log-level", required_argument, 0, 0},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
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
        const char *name = opts[idx].name;
        if (!strcmp(name, "log-level")) {
            if (pf_log_level_option(optarg))
                goto out;
        } else if (!strcmp(name, "model")) {
            model = optarg;
        } else if (!strcmp(name, "tokenizer")) {
            tokenizer = optarg;
        } else if (pf_worker_option(name, optarg, &o, &err) < 0) {
            fprintf(stderr, "paliflow inference-worker: %s\n", err.msg);
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "paliflow inference-worker: unexpected argument '%s'\n", argv[optind]);
        goto bad;
    }
    if (!o.producer || !o.sink || !model || !tokenizer) {
        fprintf(stderr, "paliflow inference-worker: --producer, --sink, --model and --tokenizer are required\n");
        goto bad;
    }
#ifdef PALIFLOW_HAVE_MODEL
    static volatile sig_atomic_t stop;
    pf_install_stop_signals(&stop);
    o.stop = &stop;
    pf_inference_cfg cfg = {model, tokenizer};
    o.ops = &pf_stage_inference_ops;
    o.stage_cfg = &cfg;
    if (pf_worker_run(&o, &err)) {
        fprintf(stderr, "paliflow inference-worker: %s\n", err.msg);
        rc = 1;
    } else {
        rc = 0;
    }
#else
    fprintf(stderr, "paliflow inference-worker: this build has no model engine (model/generate.h is not merged "
                    "yet)\n");
    rc = 2;
#endif
    goto out;
bad:
    fprintf(stderr, "Run 'paliflow inference-worker --help' for the options.\n");
    rc = 2;
out:
    pf_config_free_argv(argc, argv);
    return rc;
}
