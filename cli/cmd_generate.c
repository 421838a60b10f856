/* paliflow generate: image files + prompt(s) -> generated token ids and text, one JSON line per image.
 *
 * Every image is decoded and resized exactly as SiglipImageProcessor does (image/image.h), the prompt
 * is built as PaliGemmaProcessor does, and all images run as ONE batch through the generator (continuous
 * batching: each row gives exactly what it gives alone). The prompt -> request -> text path is
 * model/annotate.h, the same code the pipeline's inference stage runs. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/log.h"
#include "base/optable.h"
#include "cli/cli_options.h"
#include "cli/commands.h"
#include "model/generate/annotate.h"
#include "model/generate/generate.h"
#include "model/io/model.h"
#include "model/seg/decoder.h"
#include "model/seg/objects.h"
#include "model/generate/session.h"
#include "model/tokenizer/tokenizer.h"
#include "model/seg/boxes.h"
#include "proto/proto.h"
#include "image/image.h"
#include "workers/stages.h"

typedef struct gen_params {
    const char *model_dir, *tokenizer;
    pf_opt_list prompts;
    pf_task task;                 /* the generation settings, as for `run` and the producer */
    pf_sample_params params;      /* the task's, as the generator takes them */
    pf_session_params so;
    const char *seg_decoder;
} gen_params;

static void gen_init(void *obj)
{
    *(gen_params *)obj = (gen_params){.task = pf_task_default_params()};
}

#define T gen_params
static const pf_opt g_rows[] = {
    PF_OPT_ROW_STR("model", T, model_dir, PF_OPT_NONEMPTY | PF_OPT_REQUIRED, "DIR",
                   "Hugging Face PaliGemma checkpoint folder (config.json + safetensors)"),
    {"tokenizer", 0, PF_OPT_STR, offsetof(T, tokenizer), .flags = PF_OPT_NONEMPTY, .arg = "FILE",
     .def = "DIR/tokenizer.json", .help = "tokenizer.json"},
    {"prompt", 0, PF_OPT_LIST, offsetof(T, prompts), .flags = PF_OPT_REQUIRED, .arg = "P",
     .help = "e.g. \"caption en\", \"ocr\", \"answer en what is this?\", \"detect cat\"; once for every "
             "image, or once per image (paired in order)"},
    CLI_TASK_ROWS(T, task),
    PF_OPT_ROW_STR("seg-decoder", T, seg_decoder, PF_OPT_NONEMPTY, "FILE",
                   "big_vision's vae-oid.npz: 'segment' answers get objects with masks (label, box, COCO RLE "
                   "mask); without it, label and box only"),
    CLI_ENGINE_ROWS(T, so),
    PF_OPT_END,
};
#undef T

static const pf_optcmd g_cmd = {
    .name = "generate",
    .synopsis = "usage: paliflow generate --model DIR [--tokenizer FILE] --prompt P [--prompt P ...] [options] IMAGE...\n"
                "\n"
                "Run PaliGemma on image files and print one JSON line per image, in order:\n"
                "  {\"image\": PATH, \"ids\": [new token ids], \"text\": decoded text (special tokens skipped),\n"
                "   \"boxes\": [...] for detect prompts, \"objects\": [...] for segment prompts}\n"
                "  or  {\"image\": PATH, \"error\": reason}\n"
                "All images run as one batch; each gives exactly what it gives alone.\n"
                "\n"
                "options:\n",
    .epilog = "Exit status: 0 all images succeeded, 1 some failed (the others are printed), 2 usage/setup error.\n",
    .opts = g_rows,
    .size = sizeof(gen_params),
    .init = gen_init,
    .operands = 1,
};

/* 0 parsed (images at argv[*first...]), 1 --help printed, 2 usage error (printed). */
static int parse_args(int argc, char **argv, gen_params *o, int *first)
{
    gen_init(o);
    int pr = pf_opt_parse(&g_cmd, o, argc, argv, first, 0);
    if (pr)
        return pr;
    o->params = pf_task_sample_params(&o->task);
    int n_images = argc - *first;
    if (!o->model_dir || o->prompts.n == 0 || n_images == 0) {
        fprintf(stderr, "paliflow generate: --model, --prompt and at least one IMAGE are required\n");
        return 2;
    }
    if (o->prompts.n != 1 && o->prompts.n != (size_t)n_images) {
        fprintf(stderr, "paliflow generate: %zu prompts for %d images: give one prompt, or one per image\n",
                o->prompts.n, n_images);
        return 2;
    }
    return 0;
}

/* One image's state from file to printed line. */
typedef struct gen_item {
    const char *path, *prompt;
    pf_img img;
    float *pixels;
    pf_annot_input in;
    pf_gen_result res;
    char *error;
} gen_item;

static void print_item(const pf_tokenizer *tok, const pf_seg_decoder *seg, const gen_item *it)
{
    json_t *line = json_object();
    json_object_set_new(line, "image", json_string(it->path));
    const char *error = it->error ? it->error : it->res.error;
    if (error) {
        json_object_set_new(line, "error", json_string(error));
    } else {
        json_t *ids = json_array();
        for (size_t i = 0; i < it->res.n_ids; i++)
            json_array_append_new(ids, json_integer(it->res.ids[i]));
        json_object_set_new(line, "ids", ids);
        char *text = NULL;
        size_t len = 0;
        pf_err err;
        if (pf_annot_text(tok, it->res.ids, it->res.n_ids, &text, &len, &err) != 0) {
            json_object_set_new(line, "error", json_string(err.msg));
        } else {
            json_object_set_new(line, "text", json_stringn(text, len));
            if (pf_task_is_detect(it->prompt)) {
                pf_box *b = NULL;
                size_t nb = 0;
                json_t *boxes = json_array();
                if (pf_boxes_parse(text, it->img.orig_width, it->img.orig_height, &b, &nb, &err) == 0)
                    for (size_t i = 0; i < nb; i++)
                        json_array_append_new(boxes, json_pack("{s:s, s:f, s:f, s:f, s:f}", "label", b[i].label, "x0",
                                                               b[i].x0, "y0", b[i].y0, "x1", b[i].x1, "y1", b[i].y1));
                pf_boxes_free(b, nb);
                json_object_set_new(line, "boxes", boxes);
            }
            if (pf_seg_prompt_is_segment(it->prompt))
                pf_seg_record_objects(line, text, len, it->img.orig_width, it->img.orig_height, seg, NULL, 0);
            free(text);
        }
        json_object_set_new(line, "stopped_by_eos", json_boolean(it->res.stopped_by_eos));
    }
    char *s = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    if (s)
        puts(s);
    free(s);
    json_decref(line);
}

/* Decode every image and submit it; failures are recorded on the item. */
static void prepare_items(gen_item *items, size_t n, const pf_tokenizer *tok, const pf_config *cfg,
                          const gen_params *o, pf_generator *gen)
{
    pf_img_params io = {.size = cfg->vision.image_size, .autorotate = o->task.autorotate};
    size_t S = (size_t)cfg->vision.image_size;
    for (size_t i = 0; i < n; i++) {
        gen_item *it = &items[i];
        pf_err err;
        pf_img_errkind kind;
        if (pf_img_load_file(it->path, &io, &it->img, &kind, &err) != 0) {
            it->error = strdup(err.msg);
            continue;
        }
        it->pixels = malloc(3 * S * S * sizeof *it->pixels);
        if (!it->pixels) {
            it->error = strdup("out of memory");
            continue;
        }
        pf_img_to_pixels(it->img.rgb, (int)S, it->pixels);
        if (pf_annot_prepare(tok, cfg, it->prompt, it->pixels, &o->params, i, &it->in, &err) != 0 ||
            pf_generator_submit(gen, &it->in.req, &err) != 0) {
            it->error = strdup(err.msg);
            continue;
        }
        /* the generator copied pixels and ids: release them now, they can be large at 896 px */
        free(it->pixels);
        it->pixels = NULL;
        pf_annot_input_free(&it->in);
    }
}

static int run_batch(gen_item *items, pf_generator *gen, pf_err *err)
{
    while (pf_generator_active(gen) > 0) {
        pf_gen_result *done = NULL;
        size_t n_done = 0;
        if (pf_generator_step(gen, &done, &n_done, err) != 0)
            return -1;
        for (size_t i = 0; i < n_done; i++) {
            items[done[i].tag].res = done[i];
            memset(&done[i], 0, sizeof done[i]); /* ownership moved to the item */
        }
        pf_gen_results_free(done, n_done);
    }
    return 0;
}

int cmd_generate(int argc, char **argv)
{
    gen_params o;
    int first;
    int pr = parse_args(argc, argv, &o, &first);
    if (pr) {
        pf_opt_free(&g_cmd, &o);
        return pr == 1 ? 0 : 2;
    }
    size_t n = (size_t)(argc - first);
    char **paths = argv + first;
    pf_err err;
    pf_session ses = {0};
    pf_tokenizer *tok = NULL;
    char *tok_path = o.tokenizer ? strdup(o.tokenizer) : pf_path_join(o.model_dir, "tokenizer.json");
    int rc = 2;
    pf_seg_decoder *seg = NULL;
    if (o.seg_decoder && pf_seg_decoder_load(o.seg_decoder, &seg, &err) != 0) {
        fprintf(stderr, "paliflow generate: --seg-decoder: %s\n", err.msg);
        goto done;
    }
    if (pf_img_init(&err) != 0 || pf_tokenizer_load(tok_path, &tok, &err) != 0 ||
        pf_session_open(o.model_dir, &o.so, &ses, &err) != 0) {
        fprintf(stderr, "paliflow generate: %s\n", err.msg);
        goto done;
    }
    pf_model *model = ses.model;
    pf_generator *gen = ses.gen;
    gen_item *items = calloc(n, sizeof *items);
    if (!items) {
        fprintf(stderr, "paliflow generate: out of memory\n");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        items[i].path = paths[i];
        items[i].prompt = o.prompts.v[o.prompts.n == 1 ? 0 : i];
    }
    prepare_items(items, n, tok, pf_model_config(model), &o, gen);
    if (run_batch(items, gen, &err) != 0) {
        fprintf(stderr, "paliflow generate: %s\n", err.msg);
    } else {
        rc = 0;
        for (size_t i = 0; i < n; i++) {
            print_item(tok, seg, &items[i]);
            if (items[i].error || items[i].res.error) {
                /* image errors already name the file; generation errors may not */
                const char *why = items[i].error ? items[i].error : items[i].res.error;
                if (strstr(why, items[i].path))
                    fprintf(stderr, "paliflow generate: %s\n", why);
                else
                    fprintf(stderr, "paliflow generate: %s: %s\n", items[i].path, why);
                rc = 1;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        pf_img_free(&items[i].img);
        free(items[i].pixels);
        pf_annot_input_free(&items[i].in);
        pf_gen_result_free(&items[i].res);
        free(items[i].error);
    }
    free(items);
done:
    pf_seg_decoder_free(seg);
    pf_session_close(&ses);
    pf_tokenizer_free(tok);
    free(tok_path);
    pf_opt_free(&g_cmd, &o);
    return rc;
}
