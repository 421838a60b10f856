/* paliflow score: the loss transformers computes for a suffix given an image and a prompt, and the
 * negative log-likelihood of every suffix token (the basis for ranking candidate answers). */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/log.h"
#include "cli/cli_engine.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "model/io/model.h"
#include "model/tokenizer/processor.h"
#include "model/generate/score.h"
#include "model/generate/session.h"
#include "model/tokenizer/tokenizer.h"
#include "image/image.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: paliflow score --model DIR [--tokenizer FILE] --prompt P --suffix S [--autorotate] IMAGE\n"
            "\n"
            "Score SUFFIX as the answer to PROMPT about IMAGE (training-mode forward, prefix-LM mask) and print\n"
            "  {\"image\": PATH, \"loss\": mean NLL over the suffix tokens and <eos>, \"n_tokens\": N,\n"
            "   \"tokens\": [{\"id\": ID, \"token\": TEXT, \"nll\": X}, ...]}\n"
            "The loss equals transformers' PaliGemmaForConditionalGeneration(..., labels=...).loss.\n"
            "\n"
            "options:\n"
            "  --model DIR        Hugging Face PaliGemma checkpoint folder\n"
            "  --tokenizer FILE   tokenizer.json (default: DIR/tokenizer.json)\n"
            "  --prompt P         the prefix, e.g. \"answer en what is in the image?\"\n"
            "  --suffix S         the candidate answer to score\n"
            "  --autorotate       apply EXIF orientation before resizing\n"
            CLI_ENGINE_OPTIONS_HELP
            "  --config FILE      options from FILE, 'name = value' lines (the command line wins)\n"
            "  -h, --help         this help\n");
}

static json_t *token_list(const pf_tokenizer *tok, const pf_proc_row *row, const float *nll)
{
    json_t *arr = json_array();
    for (size_t t = 0; t + 1 < row->input_ids.n; t++) {
        int32_t label = row->labels.v[t + 1];
        if (label == -100)
            continue;
        size_t len = 0;
        const char *piece = pf_tokenizer_id_to_token(tok, label, &len);
        json_array_append_new(arr, json_pack("{s:i, s:s%, s:f}", "id", label, "token", piece ? piece : "",
                                             piece ? len : (size_t)0, "nll", (double)nll[t]));
    }
    return arr;
}

int cmd_score(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'},  {"tokenizer", required_argument, 0, 't'},
        {"prompt", required_argument, 0, 'p'}, {"suffix", required_argument, 0, 's'},
        {"autorotate", no_argument, 0, 'a'},   {"help", no_argument, 0, 'h'},
        {"backend", required_argument, 0, 1001}, {"precision", required_argument, 0, 1001},
        {"threads", required_argument, 0, 1001}, {"no-memory-check", no_argument, 0, 1001},
        {"adapter", required_argument, 0, 1001}, {0, 0, 0, 0},
    };
    const char *model_dir = NULL, *tok_arg = NULL, *prompt = NULL, *suffix = NULL;
    int autorotate = 0, c, idx;
    pf_session_opts so = {.max_active = 1};
    pf_err err;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
        switch (c) {
        case 1001:
            if (cli_engine_option(longopts[idx].name, optarg, &so, &err) < 0) {
                fprintf(stderr, "paliflow score: %s\n", err.msg);
                return 2;
            }
            break;
        case 'm': model_dir = optarg; break;
        case 't': tok_arg = optarg; break;
        case 'p': prompt = optarg; break;
        case 's': suffix = optarg; break;
        case 'a': autorotate = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!model_dir || !prompt || !suffix || argc - optind != 1) {
        fprintf(stderr, "paliflow score: --model, --prompt, --suffix and exactly one IMAGE are required\n");
        usage(stderr);
        return 2;
    }
    const char *path = argv[optind];
    pf_session ses = {0};
    pf_engine_ctx *ectx = NULL;
    pf_model *model = NULL;
    pf_tokenizer *tok = NULL;
    pf_img img = {0};
    pf_proc_row row = {0};
    float *pixels = NULL, *nll = NULL;
    char *tok_path = tok_arg ? strdup(tok_arg) : pf_path_join(model_dir, "tokenizer.json");
    int rc = 2;
    if (pf_img_init(&err) || pf_session_open(model_dir, &so, &ses, &err) || pf_tokenizer_load(tok_path, &tok, &err) ||
        (ses.engine && pf_engine_ctx_create(ses.engine, &ectx, &err)))
        goto fail;
    model = ses.model;
    const pf_config *cfg = pf_model_config(model);
    size_t S = (size_t)cfg->vision.image_size;
    pf_img_opts io = {.size = (int)S, .autorotate = autorotate};
    pf_img_errkind kind;
    if (pf_img_load_file(path, &io, &img, &kind, &err)) {
        rc = 1;
        goto fail;
    }
    pixels = malloc(3 * S * S * sizeof *pixels);
    if (!pixels) {
        pf_errf(&err, "out of memory");
        goto fail;
    }
    pf_img_to_pixels(img.rgb, (int)S, pixels);
    if (pf_processor_build(tok, prompt, suffix, cfg->num_image_tokens, 1, &row, &err))
        goto fail;
    size_t n = row.input_ids.n;
    nll = calloc(n, sizeof *nll);
    double nll_sum = 0;
    size_t n_labels = 0;
    if (!nll) {
        pf_errf(&err, "out of memory");
        goto fail;
    }
    if (ectx ? pf_score_engine(ectx, pixels, 1, row.input_ids.v, row.token_type_ids.v, row.labels.v, n, nll, &nll_sum,
                               &n_labels, &err)
             : pf_score(model, pixels, 1, row.input_ids.v, row.token_type_ids.v, row.labels.v, n, nll, &nll_sum,
                        &n_labels, &err))
        goto fail;
    json_t *out = json_pack("{s:s, s:f, s:I, s:o}", "image", path, "loss", n_labels ? nll_sum / (double)n_labels : 0.0,
                            "n_tokens", (json_int_t)n_labels, "tokens", token_list(tok, &row, nll));
    char *s = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    puts(s);
    free(s);
    json_decref(out);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "paliflow score: %s\n", err.msg);
done:
    pf_proc_row_free(&row);
    pf_img_free(&img);
    free(pixels);
    free(nll);
    free(tok_path);
    pf_tokenizer_free(tok);
    pf_engine_ctx_free(ectx);
    pf_session_close(&ses);
    return rc;
}
