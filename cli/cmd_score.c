/* paliflow score: the loss transformers computes for a suffix given an image and a prompt, and the
 * negative log-likelihood of every suffix token (the basis for ranking candidate answers). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/log.h"
#include "base/optable.h"
#include "cli/cli_options.h"
#include "cli/commands.h"
#include "model/io/model.h"
#include "model/tokenizer/processor.h"
#include "model/generate/score.h"
#include "model/generate/session.h"
#include "model/tokenizer/tokenizer.h"
#include "image/image.h"

typedef struct score_cli {
    const char *model_dir, *tokenizer, *prompt, *suffix;
    int autorotate;
    pf_session_params so;
} score_cli;

static void score_init(void *obj)
{
    *(score_cli *)obj = (score_cli){.so = {.max_active = 1}};
}

#define T score_cli
static const pf_opt g_rows[] = {
    PF_OPT_ROW_STR("model", T, model_dir, PF_OPT_NONEMPTY | PF_OPT_REQUIRED, "DIR",
                   "Hugging Face PaliGemma checkpoint folder"),
    {"tokenizer", 0, PF_OPT_STR, offsetof(T, tokenizer), .flags = PF_OPT_NONEMPTY, .arg = "FILE",
     .def = "DIR/tokenizer.json", .help = "tokenizer.json"},
    PF_OPT_ROW_STR("prompt", T, prompt, PF_OPT_REQUIRED, "P", "the prefix, e.g. \"answer en what is in the image?\""),
    PF_OPT_ROW_STR("suffix", T, suffix, PF_OPT_REQUIRED, "S", "the candidate answer to score"),
    PF_OPT_ROW_FLAG("autorotate", T, autorotate, 0, "apply EXIF orientation before resizing"),
    CLI_ENGINE_ROWS(T, so),
    PF_OPT_END,
};
#undef T

static const pf_optcmd g_cmd = {
    .name = "score",
    .synopsis = "usage: paliflow score --model DIR [--tokenizer FILE] --prompt P --suffix S [--autorotate] IMAGE\n"
                "\n"
                "Score SUFFIX as the answer to PROMPT about IMAGE (training-mode forward, prefix-LM mask) and print\n"
                "  {\"image\": PATH, \"loss\": mean NLL over the suffix tokens and <eos>, \"n_tokens\": N,\n"
                "   \"tokens\": [{\"id\": ID, \"token\": TEXT, \"nll\": X}, ...]}\n"
                "The loss equals transformers' PaliGemmaForConditionalGeneration(..., labels=...).loss.\n"
                "\n"
                "options:\n",
    .opts = g_rows,
    .size = sizeof(score_cli),
    .init = score_init,
    .operands = 1,
};

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
    score_cli o;
    score_init(&o);
    int first;
    int pr = pf_opt_parse(&g_cmd, &o, argc, argv, &first, 0);
    if (pr)
        return pr == 1 ? 0 : 2;
    const char *model_dir = o.model_dir, *tok_arg = o.tokenizer, *prompt = o.prompt, *suffix = o.suffix;
    int autorotate = o.autorotate;
    pf_session_params so = o.so;
    pf_err err;
    if (!model_dir || !prompt || !suffix || argc - first != 1) {
        fprintf(stderr, "paliflow score: --model, --prompt, --suffix and exactly one IMAGE are required\n");
        fprintf(stderr, "Run 'paliflow score --help' for the options.\n");
        return 2;
    }
    const char *path = argv[first];
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
    pf_img_params io = {.size = (int)S, .autorotate = autorotate};
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
