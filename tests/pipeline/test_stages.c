#include "test_stages.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/file.h"

typedef struct tinst {
    pf_test_stage_params cfg;
    pf_work **active;
    int *left;
    size_t n_active, cap;
    pf_work **done;
    size_t n_done, cap_done;
} tinst;

static void *t_create(const void *cfg, pf_err *err)
{
    tinst *t = calloc(1, sizeof *t);
    if (!t) {
        pf_errf(err, "out of memory");
        return NULL;
    }
    if (cfg)
        t->cfg = *(const pf_test_stage_params *)cfg;
    if (t->cfg.steps <= 0)
        t->cfg.steps = 3;
    return t;
}

static void t_destroy(void *inst)
{
    tinst *t = inst;
    free(t->active);
    free(t->left);
    free(t->done);
    free(t);
}

static atomic_int g_pre_started;   /* items the preprocess stage took, every thread (hang_after) */

static void pre_process(void *inst, pf_work *w)
{
    tinst *t = inst;
    if (t->cfg.hang_after > 0 && atomic_fetch_add(&g_pre_started, 1) >= t->cfg.hang_after)
        for (;;)
            sleep(3600);   /* until the test kills the worker */
    const uint8_t *b = w->in.data;
    size_t len = w->in.data_len;
    char *owned = NULL;
    if (w->in.path_only) {
        pf_err e = {{0}};
        /* as the real stage: the producer's canonical path when given; cannot open it = our host's fault */
        if (pf_read_file(w->in.file && *w->in.file ? w->in.file : w->in.path, 64u << 20, &owned, &len, &e)) {
            pf_work_fail(w, PF_WORK_RETRY, "%s", e.msg);
            w->worker_fault = 1;
            return;
        }
        b = (const uint8_t *)owned;
        if (pf_item_content_key(owned ? owned : "", len, w->in.key, w->content_key))
            w->content_key[0] = '\0';
    }
    if (t->cfg.delay_ms)
        usleep((useconds_t)t->cfg.delay_ms * 1000);
    if (len == 0 || (len >= 3 && !memcmp(b, "BAD", 3))) {
        pf_work_fail(w, PF_WORK_FAILED, "test stage: %s is not an image", len ? "content" : "empty file");
    } else if (len >= 5 && !memcmp(b, "CRASH", 5)) {
        fprintf(stderr, "test stage: crashing on %s as asked\n", w->in.path);
        usleep(50000);   /* like a decoder that dies partway through the file */
        abort();
    } else if (len >= 5 && !memcmp(b, "FLAKY", 5) && w->in.attempt == 0) {
        pf_work_fail(w, PF_WORK_RETRY, "test stage: flaky the first time");
    } else {
        int S = w->in.image_size;
        size_t n = (size_t)S * S * 3;
        w->rgb = malloc(n);
        if (!w->rgb) {
            pf_work_fail(w, PF_WORK_RETRY, "out of memory");
        } else {
            /* rgb[i] = b[i % len], built by doubling copies: a byte loop with a division per byte took
             * ~0.5 ms per 224 px item, which made this "near-zero" worker the bottleneck of bench_hub */
            size_t have = len < n ? len : n;
            memcpy(w->rgb, b, have);
            while (have < n) {
                size_t c = have < n - have ? have : n - have;
                memcpy(w->rgb + have, w->rgb, c);
                have += c;
            }
            w->size = S;
            w->width = (int)len;
            w->height = 1 + (int)(len % 7);
        }
    }
    free(owned);
}

static int push_done(tinst *t, pf_work *w)
{
    if (t->n_done == t->cap_done) {
        size_t nc = t->cap_done ? 2 * t->cap_done : 16;
        pf_work **nd = realloc(t->done, nc * sizeof *nd);
        if (!nd)
            return -1;
        t->done = nd;
        t->cap_done = nc;
    }
    t->done[t->n_done++] = w;
    return 0;
}

static int inf_submit(void *inst, pf_work *w, pf_err *err)
{
    tinst *t = inst;
    if (t->cfg.model_size && w->in.image_size != t->cfg.model_size) {
        pf_work_fail(w, PF_WORK_FAILED, "the item was preprocessed for %d px but the model takes %d px",
                     w->in.image_size, t->cfg.model_size);
        return push_done(t, w) ? pf_errf(err, "out of memory") : 0;
    }
    if (t->n_active == t->cap) {
        size_t nc = t->cap ? 2 * t->cap : 16;
        pf_work **na = realloc(t->active, nc * sizeof *na);
        int *nl = realloc(t->left, nc * sizeof *nl);
        if (na)
            t->active = na;
        if (nl)
            t->left = nl;
        if (!na || !nl)
            return pf_errf(err, "out of memory");
        t->cap = nc;
    }
    t->active[t->n_active] = w;
    t->left[t->n_active] = t->cfg.steps;
    t->n_active++;
    return 0;
}

static void finish_item(pf_work *w, size_t batch)
{
    char text[256];
    const uint8_t *r = w->in.data;
    if (strncmp(w->in.task.prompt, "detect", 6) == 0)
        snprintf(text, sizeof text, "<loc0100><loc0200><loc0300><loc0400> cat ; <loc0000><loc0000><loc1023><loc1023> dog");
    else
        snprintf(text, sizeof text, "test: %02x%02x%02x%02x%02x%02x%02x%02x len=%d", r[0], r[1], r[2], r[3], r[4], r[5],
                 r[6], r[7], w->in.width);
    w->text = strdup(text);
    w->ids = malloc(3 * sizeof *w->ids);
    if (w->ids) {
        w->ids[0] = r[0];
        w->ids[1] = w->in.width;
        w->ids[2] = (int32_t)batch;   /* how many were decoding together when it finished */
        w->n_ids = 3;
    }
    w->stopped_by_eos = 1;
    w->prefill_s = 0.001;
    w->decode_s = 0.002;
}

static int inf_step(void *inst, pf_work ***done, size_t *n_done, pf_err *err)
{
    tinst *t = inst;
    if (t->n_active && t->cfg.delay_ms)
        usleep((useconds_t)t->cfg.delay_ms * 1000);
    size_t batch = t->n_active;
    for (size_t i = 0; i < t->n_active;) {
        if (--t->left[i] <= 0) {
            finish_item(t->active[i], batch);
            if (push_done(t, t->active[i]))
                return pf_errf(err, "out of memory");
            t->active[i] = t->active[t->n_active - 1];
            t->left[i] = t->left[t->n_active - 1];
            t->n_active--;
        } else {
            i++;
        }
    }
    *done = t->done;
    *n_done = t->n_done;
    t->n_done = 0;
    return 0;
}

static size_t inf_active(const void *inst)
{
    const tinst *t = inst;
    return t->n_active + t->n_done;
}

static int inf_image_size(const void *inst) { return ((const tinst *)inst)->cfg.model_size; }

const pf_stage_ops pf_test_preprocess_ops = {
    .name = "preprocess", .create = t_create, .destroy = t_destroy, .process = pre_process};

const pf_stage_ops pf_test_inference_ops = {
    .name = "inference", .create = t_create, .destroy = t_destroy, .submit = inf_submit,
    .step = inf_step, .active = inf_active, .image_size = inf_image_size};
