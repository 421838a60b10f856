/* paliflow inference-worker: run the model on preprocessed images (connects to producer and sink). */
#include <stdio.h>

#include "cli/cli_options.h"
#include "cli/cli_worker.h"
#include "cli/commands.h"
#include "model/seg/decoder.h"
#include "workers/stages.h"
#include "workers/worker.h"

#define T cli_worker
static const pf_opt g_rows[] = {
    PF_OPT_ROW_STR("model", T, model, PF_OPT_NONEMPTY | PF_OPT_REQUIRED, "DIR",
                   "checkpoint folder (config.json + *.safetensors)"),
    PF_OPT_ROW_STR("tokenizer", T, tokenizer, PF_OPT_NONEMPTY | PF_OPT_REQUIRED, "FILE", "tokenizer.json"),
    PF_OPT_ROW_INT("max-batch", T, o.max_batch, 1, 4096, 0, "N", "sequences generated together"),
    PF_OPT_ROW_INT("max-delay-ms", T, o.max_delay_ms, 0, 600000, 0, "N",
                   "when idle, wait this long for more items before starting"),
    PF_OPT_ROW_STR("seg-decoder", T, seg_decoder, PF_OPT_NONEMPTY, "FILE",
                   "big_vision's vae-oid.npz: results of 'segment' prompts get their objects with masks (COCO "
                   "RLE); without it, label and box only"),
    CLI_ENGINE_ROWS(T, so),
    PF_WORKER_OPT_ROWS(T, o),
    PF_OPT_ROW_HEADING("security (tcp endpoints need CURVE keys or --insecure):"),
    PF_SERVICE_OPT_ROWS(T, svc, PF_OPT_HIDDEN, 0),
    CLI_WORKER_WRONG_ROLE("max-pixels", "N", "preprocess workers"),
    CLI_WORKER_WRONG_ROLE("decode-memory-mb", "N", "preprocess workers"),
    PF_OPT_END,
};
#undef T

static const pf_optcmd g_cmd = {
    .name = "inference-worker",
    .synopsis = "usage: paliflow inference-worker --producer ENDPOINT --sink ENDPOINT --model DIR --tokenizer FILE "
                "[OPTIONS]\n"
                "\n"
                "Load the model once, pull preprocessed images from the producer and generate with continuous\n"
                "batching: up to --max-batch sequences decode together and new items join between steps. Results\n"
                "go to the sink. The hello announces the model's image size: a producer whose job is for another\n"
                "size quarantines the worker (no work; an older producer's items of another size go back).\n"
                "SIGTERM/SIGINT finishes the batch in progress (up to --drain-timeout), hands the rest back and\n"
                "exits 0. SIGHUP re-reads --config and applies the options marked 'reloads'.\n"
                "\n",
    .opts = g_rows,
    .size = sizeof(cli_worker),
    .init = cli_worker_defaults,
};

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
    return cli_worker_main(&g_cmd, argc0, argv0, setup);
}
