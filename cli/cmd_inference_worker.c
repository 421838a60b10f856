/* paliflow inference-worker: run the model on preprocessed images (connects to producer and sink). */
#include <stdio.h>

#include "cli/cli_engine.h"
#include "cli/cli_worker.h"
#include "cli/commands.h"
#include "model/seg/decoder.h"
#include "workers/stages.h"
#include "workers/worker.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: paliflow inference-worker --producer ENDPOINT --sink ENDPOINT --model DIR --tokenizer FILE "
                 "[OPTIONS]\n"
                 "\n"
                 "Load the model once, pull preprocessed images from the producer and generate with continuous\n"
                 "batching: up to --max-batch sequences decode together and new items join between steps. Results\n"
                 "go to the sink. The hello announces the model's image size: a producer whose job is for another\n"
                 "size quarantines the worker (no work; an older producer's items of another size go back).\n"
                 "SIGTERM/SIGINT finishes the batch in progress (up to --drain-timeout), hands the rest back and\n"
                 "exits 0. SIGHUP re-reads --config.\n"
                 "\n"
                 "  --model DIR              checkpoint folder (config.json + *.safetensors) (required)\n"
                 "  --tokenizer FILE         tokenizer.json (required)\n"
                 "  --max-batch N            sequences generated together (8)\n"
                 "  --max-delay-ms N         when idle, wait this long for more items before starting (20)\n"
                 "  --seg-decoder FILE       big_vision's vae-oid.npz: results of 'segment' prompts get their\n"
                 "                           objects with masks (COCO RLE); without it, label and box only\n"
                 CLI_ENGINE_OPTIONS_HELP
                 PF_WORKER_OPTIONS_HELP
                 "security (tcp endpoints need CURVE keys or --insecure):\n" PF_SECURITY_CLIENT_HELP
                 PF_METRICS_HELP);
}

static int setup(cli_worker *c)
{
    static pf_inference_params cfg;
    if (!c->o.producer || !c->o.sink || !c->model || !c->tokenizer) {
        fprintf(stderr, "paliflow inference-worker: --producer, --sink, --model and --tokenizer are required\n");
        return -1;
    }
    /* Loaded before connecting: a missing or malformed file is a setup error, named, not a worker that
     * starts and writes mask-less records. Lives until the process exits. */
    static pf_seg_decoder *seg;
    if (c->seg_decoder && !seg) {
        pf_err err;
        if (pf_seg_decoder_load(c->seg_decoder, &seg, &err)) {
            fprintf(stderr, "paliflow inference-worker: --seg-decoder: %s\n", err.msg);
            return -1;
        }
    }
    cfg = (pf_inference_params){.model_dir = c->model, .tokenizer = c->tokenizer, .session = c->so,
                             .max_batch = c->o.max_batch, .seg_decoder = seg};
    c->o.ops = &pf_stage_inference_ops;
    c->o.stage_cfg = &cfg;
    return 0;
}

int cmd_inference_worker(int argc0, char **argv0)
{
    return cli_worker_main("inference-worker", 1, argc0, argv0, usage, setup);
}
