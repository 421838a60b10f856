/* stage_inference.c - the inference stage: preprocessed uint8 image + task -> generated ids and text,
 * with continuous batching: items join the generator between decode steps and leave when finished.
 * Prompt -> request -> text is model/annotate.h, the code `paliflow generate` runs, so the pipeline's
 * text and ids equal generate's for the same image, prompt and model (issue 12). */
#include "workers/stages.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "model/generate/annotate.h"
#include "model/generate/generate.h"
#include "model/io/model.h"
#include "model/tokenizer/processor.h"
#include "model/seg/objects.h"
#include "model/generate/session.h"
#include "model/tokenizer/tokenizer.h"
#include "image/image.h"

typedef struct inf_inst {
    pf_session ses;
    pf_model *model; /* = ses.model, ses.gen */
    pf_tokenizer *tok;
    pf_generator *gen;
    int image_size, n_image_tokens;
    const pf_seg_decoder *seg;  /* NULL: no --seg-decoder */
    float *pixels;              /* scratch [3, S, S] */
    pf_work **done;             /* finished since the last step (incl. items refused at submit) */
    size_t n_done, cap_done;
    size_t active;
} inf_inst;

static void inf_destroy(void *inst)
{
    inf_inst *p = inst;
    if (!p)
        return;
    pf_session_close(&p->ses);
    pf_tokenizer_free(p->tok);
    free(p->pixels);
    free(p->done);
    free(p);
}

static void *inf_create(const void *cfgp, pf_err *err)
{
    const pf_inference_params *cfg = cfgp;
    inf_inst *p = calloc(1, sizeof *p);
    if (!p) {
        pf_errf(err, "out of memory");
        return NULL;
    }
    pf_session_params so = cfg->session;
    so.max_active = cfg->max_batch > 0 ? (size_t)cfg->max_batch : so.max_active;
    if (pf_tokenizer_load(cfg->tokenizer, &p->tok, err) || pf_session_open(cfg->model_dir, &so, &p->ses, err)) {
        inf_destroy(p);
        return NULL;
    }
    p->seg = cfg->seg_decoder;
    p->model = p->ses.model;
    p->gen = p->ses.gen;
    const pf_config *c = pf_model_config(p->model);
    p->image_size = c->vision.image_size;
    p->n_image_tokens = c->num_image_tokens;
    p->pixels = malloc((size_t)p->image_size * p->image_size * 3 * sizeof *p->pixels);
    if (!p->pixels) {
        pf_errf(err, "out of memory");
        inf_destroy(p);
        return NULL;
    }
    return p;
}

static int push_done(inf_inst *p, pf_work *w)
{
    if (p->n_done == p->cap_done) {
        size_t nc = p->cap_done ? 2 * p->cap_done : 16;
        pf_work **nd = realloc(p->done, nc * sizeof *nd);
        if (!nd)
            return -1;
        p->done = nd;
        p->cap_done = nc;
    }
    p->done[p->n_done++] = w;
    return 0;
}

pf_sample_params pf_task_sample_params(const pf_task *t)
{
    return (pf_sample_params){.max_new_tokens = t->max_new_tokens, .temperature = (float)t->temperature,
                              .top_k = t->top_k, .top_p = (float)t->top_p,
                              .repetition_penalty = (float)t->repetition_penalty, .seed = t->seed};
}

static int inf_submit(void *inst, pf_work *w, pf_err *err)
{
    inf_inst *p = inst;
    if (w->in.image_size != p->image_size) {
        /* The item is fine; this worker is the wrong one for the job (a producer of this version never
         * sends it such items: our hello announced the size). */
        pf_work_fail(w, PF_WORK_RETRY, "the item was preprocessed for %d px but the model takes %d px "
                     "(producer --image-size must match the model)", w->in.image_size, p->image_size);
        w->worker_fault = 1;
        return push_done(p, w) ? pf_errf(err, "out of memory") : 0;
    }
    pf_img_to_pixels(w->in.data, p->image_size, p->pixels);
    const pf_task *t = &w->in.task;
    pf_sample_params params = pf_task_sample_params(t);
    pf_annot_input in;
    pf_err e = {{0}};
    if (pf_annot_prepare(p->tok, pf_model_config(p->model), t->prompt, p->pixels, &params,
                         (uint64_t)(uintptr_t)w, &in, &e)) {
        pf_work_fail(w, PF_WORK_FAILED, "%s", e.msg);
        return push_done(p, w) ? pf_errf(err, "out of memory") : 0;
    }
    int rc = pf_generator_submit(p->gen, &in.req, &e); /* copies its inputs */
    pf_annot_input_free(&in);
    if (rc) {
        pf_work_fail(w, PF_WORK_RETRY, "%s", e.msg);
        return push_done(p, w) ? pf_errf(err, "out of memory") : 0;
    }
    p->active++;
    return 0;
}

/* A segment answer's objects with masks, decoded here where the decoder is (the sink has none). Masks take
 * milliseconds per object next to the seconds of generation. On failure the record still gets label and
 * box from the sink, with a note. */
static void make_objects(const inf_inst *p, pf_work *w)
{
    pf_err e = {{0}};
    json_t *j = pf_seg_objects_json(w->text, w->text_len, w->in.width, w->in.height, p->seg, NULL, &e);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) {
        pf_warn("inference", "%s: masks not decoded: %s", w->in.path, e.msg[0] ? e.msg : "out of memory");
        return;
    }
    w->objects = s;
    w->objects_len = strlen(s);
}

static int inf_step(void *inst, pf_work ***done, size_t *n_done, pf_err *err)
{
    inf_inst *p = inst;
    /* items refused at submit are already in p->done; finished ones join them below */
    if (p->active > 0) {
        pf_gen_result *res = NULL;
        size_t nres = 0;
        if (pf_generator_step(p->gen, &res, &nres, err))
            return -1;
        for (size_t i = 0; i < nres; i++) {
            pf_work *w = (pf_work *)(uintptr_t)res[i].tag;
            p->active--;
            if (res[i].error) {
                pf_work_fail(w, PF_WORK_RETRY, "%s", res[i].error);
            } else {
                w->ids = malloc((res[i].n_ids ? res[i].n_ids : 1) * sizeof *w->ids);
                if (!w->ids) {
                    pf_work_fail(w, PF_WORK_RETRY, "out of memory");
                } else {
                    memcpy(w->ids, res[i].ids, res[i].n_ids * sizeof *w->ids);
                    w->n_ids = res[i].n_ids;
                    pf_err e = {{0}};
                    if (pf_annot_text(p->tok, w->ids, w->n_ids, &w->text, &w->text_len, &e))
                        pf_work_fail(w, PF_WORK_FAILED, "decode: %s", e.msg);
                    else if (p->seg && pf_seg_prompt_is_segment(w->in.task.prompt))
                        make_objects(p, w);
                    w->stopped_by_eos = res[i].stopped_by_eos;
                    w->prefill_s = res[i].prefill_s;
                    w->decode_s = res[i].decode_s;
                }
            }
            if (push_done(p, w))
                return pf_errf(err, "out of memory");
        }
        pf_gen_results_free(res, nres);
    }
    *done = p->done;
    *n_done = p->n_done;
    p->n_done = 0;   /* the array stays valid until the next call, as stage.h promises */
    return 0;
}

static size_t inf_active(const void *inst)
{
    const inf_inst *p = inst;
    return p->active + p->n_done;
}

static int inf_image_size(const void *inst) { return ((const inf_inst *)inst)->image_size; }

const pf_stage_ops pf_stage_inference_ops = {
    .name = "inference",
    .create = inf_create,
    .destroy = inf_destroy,
    .submit = inf_submit,
    .step = inf_step,
    .active = inf_active,
    .image_size = inf_image_size,
};

