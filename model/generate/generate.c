/* generate.c - continuous-batching generation over a pf_gen_backend: admission, sampling, stopping. */
#include "model/generate/generate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/grow.h"
#include "model/ref/ref.h"

typedef struct gen_seq {
    pf_gen_request req;  /* pixels and ids point to our own copies */
    float *pixels;
    int32_t *hist;       /* prompt followed by generated tokens (repetition penalty, bookkeeping) */
    size_t n_hist, cap;  /* cap = n_ids + max_new_tokens */
    size_t n_new;
    int32_t last;        /* token to feed at the next decode */
    void *bseq;
    pf_rng rng;
    int eos;
    char *error;
    double prefill_s, decode_s;
} gen_seq;

struct pf_generator {
    const pf_model *m;
    const pf_gen_backend *be;
    void *ctx;
    size_t max_active;
    gen_seq **queue;     /* submitted, not yet prefilled (FIFO) */
    size_t n_queue, cap_queue;
    gen_seq **run;       /* prefilled, still decoding */
    size_t n_run, cap_run;
    pf_sampler sampler;
    float *logits;       /* [max_active][V] */
    /* decode-step arrays, [max_active] */
    void **bseqs;
    int32_t *tokens;
    pf_gen_prefill *pre; /* prefill batch, [max_active] */
    gen_seq **adm;       /* admitted this step, [max_active] */
};

static void seq_free(pf_generator *g, gen_seq *s)
{
    if (!s)
        return;
    if (s->bseq)
        g->be->seq_free(g->ctx, s->bseq);
    free(s->pixels);
    free(s->hist);
    free(s->error);
    free(s);
}

int pf_generator_create(const pf_model *m, pf_generator **out, pf_err *err)
{
    return pf_generator_create_params(m, NULL, out, err);
}

int pf_generator_create_params(const pf_model *m, const pf_generator_params *opts, pf_generator **out, pf_err *err)
{
    *out = NULL;
    pf_generator *g = calloc(1, sizeof *g);
    if (!g)
        return pf_errf(err, "generator: out of memory");
    g->m = m;
    g->be = opts && opts->backend ? opts->backend : &pf_gen_backend_ref;
    g->max_active = opts && opts->max_active ? opts->max_active : 64;
    if (g->max_active > 4096)
        g->max_active = 4096;
    size_t V = (size_t)m->cfg.text.vocab_size;
    g->ctx = g->be->ctx_create(m, opts ? opts->backend_arg : NULL, err);
    if (!g->ctx || pf_sampler_init(&g->sampler, V, err) != 0) {
        pf_generator_free(g);
        return -1;
    }
    g->logits = malloc(sizeof(float) * V * g->max_active);
    g->bseqs = malloc(sizeof(void *) * g->max_active);
    g->tokens = malloc(sizeof(int32_t) * g->max_active);
    g->run = malloc(sizeof(gen_seq *) * g->max_active);
    g->pre = malloc(sizeof(pf_gen_prefill) * g->max_active);
    g->adm = malloc(sizeof(gen_seq *) * g->max_active);
    if (!g->logits || !g->bseqs || !g->tokens || !g->run || !g->pre || !g->adm) {
        pf_generator_free(g);
        return pf_errf(err, "generator: out of memory for %zu active sequences", g->max_active);
    }
    g->cap_run = g->max_active;
    *out = g;
    return 0;
}

void pf_generator_free(pf_generator *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n_queue; i++)
        seq_free(g, g->queue[i]);
    for (size_t i = 0; i < g->n_run; i++)
        seq_free(g, g->run[i]);
    free(g->queue);
    free(g->run);
    if (g->ctx)
        g->be->ctx_free(g->ctx);
    pf_sampler_free(&g->sampler);
    free(g->logits);
    free(g->bseqs);
    free(g->tokens);
    free(g->pre);
    free(g->adm);
    free(g);
}

size_t pf_generator_active(const pf_generator *g) { return g->n_queue + g->n_run; }

static int validate(const pf_generator *g, const pf_gen_request *r, pf_err *err)
{
    const pf_config *c = &g->m->cfg;
    if (!r->ids || r->n_ids == 0)
        return pf_errf(err, "request %llu: no input ids", (unsigned long long)r->tag);
    if (r->params.max_new_tokens < 1)
        return pf_errf(err, "request %llu: max_new_tokens must be >= 1, got %d", (unsigned long long)r->tag,
                       r->params.max_new_tokens);
    if (r->n_ids > g->be->max_tokens || (size_t)r->params.max_new_tokens > g->be->max_tokens - r->n_ids)
        return pf_errf(err, "request %llu: %zu prompt + %d new tokens exceed the limit of %zu",
                       (unsigned long long)r->tag, r->n_ids, r->params.max_new_tokens, g->be->max_tokens);
    size_t n_img = 0;
    for (size_t i = 0; i < r->n_ids; i++) {
        if (r->ids[i] == c->image_token_index)
            n_img++;
        else if (r->ids[i] < 0 || r->ids[i] >= c->text.vocab_size)
            return pf_errf(err, "request %llu: token id %d at position %zu is outside the vocabulary [0, %d)",
                           (unsigned long long)r->tag, r->ids[i], i, c->text.vocab_size);
    }
    if (r->num_images < 0 || (r->num_images > 0 && !r->pixels))
        return pf_errf(err, "request %llu: num_images %d without pixels", (unsigned long long)r->tag,
                       r->num_images);
    if (r->num_images > 0 && n_img != (size_t)r->num_images * (size_t)c->num_image_tokens)
        return pf_errf(err, "request %llu: %zu <image> tokens but %d image(s) x %d image tokens",
                       (unsigned long long)r->tag, n_img, r->num_images, c->num_image_tokens);
    if (r->num_images == 0 && n_img > 0 && c->image_token_index >= c->text.vocab_size)
        return pf_errf(err, "request %llu: %zu <image> tokens but no image", (unsigned long long)r->tag, n_img);
    return 0;
}

int pf_generator_submit(pf_generator *g, const pf_gen_request *r, pf_err *err)
{
    if (validate(g, r, err) != 0)
        return -1;
    const pf_config *c = &g->m->cfg;
    gen_seq *s = calloc(1, sizeof *s);
    if (!s)
        return pf_errf(err, "request %llu: out of memory", (unsigned long long)r->tag);
    s->req = *r;
    s->cap = r->n_ids + (size_t)r->params.max_new_tokens;
    s->hist = malloc(sizeof(int32_t) * s->cap);
    size_t img = (size_t)r->num_images * (size_t)c->vision.channels * (size_t)c->vision.image_size *
                 (size_t)c->vision.image_size;
    if (img)
        s->pixels = malloc(sizeof(float) * img);
    if (!s->hist || (img && !s->pixels)) {
        seq_free(g, s);
        return pf_errf(err, "request %llu: out of memory copying inputs", (unsigned long long)r->tag);
    }
    memcpy(s->hist, r->ids, sizeof(int32_t) * r->n_ids);
    s->n_hist = r->n_ids;
    if (img)
        memcpy(s->pixels, r->pixels, sizeof(float) * img);
    s->req.ids = s->hist;
    s->req.pixels = s->pixels;
    pf_rng_seed(&s->rng, r->params.seed);
    if (PF_GROW(g->queue, g->cap_queue, g->n_queue, 1, 16)) {
        seq_free(g, s);
        return pf_errf(err, "request %llu: out of memory", (unsigned long long)r->tag);
    }
    g->queue[g->n_queue++] = s;
    return 0;
}

/* Take a token for s from logits; returns 1 if s is finished (eos or max_new_tokens). */
static int accept_token(pf_generator *g, gen_seq *s, float *logits)
{
    int32_t t = pf_sample_next(&g->sampler, logits, &s->req.params, s->hist, s->n_hist, &s->rng);
    s->hist[s->n_hist++] = t;
    s->n_new++;
    s->last = t;
    if (!s->req.params.ignore_eos && pf_config_is_eos(&g->m->cfg, t)) {
        s->eos = 1;
        return 1;
    }
    return s->n_new >= (size_t)s->req.params.max_new_tokens;
}

static void set_error(gen_seq *s, const char *msg)
{
    free(s->error);
    s->error = strdup(msg);
}

/* Move s's outcome into r and free s. */
static void finish(pf_generator *g, gen_seq *s, pf_gen_result *r)
{
    memset(r, 0, sizeof *r);
    r->tag = s->req.tag;
    r->stopped_by_eos = s->eos;
    r->prefill_s = s->prefill_s;
    r->decode_s = s->decode_s;
    r->error = s->error;
    s->error = NULL;
    if (!r->error && s->n_new > 0) {
        r->ids = malloc(sizeof(int32_t) * s->n_new);
        if (r->ids) {
            memcpy(r->ids, s->hist + s->req.n_ids, sizeof(int32_t) * s->n_new);
            r->n_ids = s->n_new;
        } else {
            r->error = strdup("out of memory for the result");
        }
    }
    seq_free(g, s);
}

static int push_done(pf_gen_result **done, size_t *n_done, size_t *cap, pf_generator *g, gen_seq *s)
{
    if (PF_GROW(*done, *cap, *n_done, 1, 8))
        return -1;
    finish(g, s, &(*done)[(*n_done)++]);
    return 0;
}

int pf_generator_step(pf_generator *g, pf_gen_result **done, size_t *n_done, pf_err *err)
{
    *done = NULL;
    *n_done = 0;
    size_t cap_done = 0, V = (size_t)g->m->cfg.text.vocab_size;
    size_t n_old = g->n_run; /* only these decode this step */

    /* 1. Admit queued requests while there is room (and, for a batched prefill, within the backend's token
     * budget; the first always goes), create their sequences, prefill them and sample their first token. */
    size_t admitted = 0, n_adm = 0, tokens = 0;
    while (admitted < g->n_queue && g->n_run + n_adm < g->max_active) {
        gen_seq *s = g->queue[admitted];
        if (g->be->prefill_batch && g->be->max_prefill_tokens && n_adm > 0 &&
            tokens + s->req.n_ids > g->be->max_prefill_tokens)
            break;
        admitted++;
        tokens += s->req.n_ids;
        pf_err e = {{0}};
        if ((s->bseq = g->be->seq_create(g->ctx, s->cap, &e)) == NULL) {
            set_error(s, e.msg);
            if (push_done(done, n_done, &cap_done, g, s) != 0)
                return pf_errf(err, "generator: out of memory");
            continue;
        }
        g->adm[n_adm++] = s;
    }
    memmove(g->queue, g->queue + admitted, (g->n_queue - admitted) * sizeof *g->queue);
    g->n_queue -= admitted;
    int batched_ok = 0;
    if (g->be->prefill_batch && n_adm > 1) {
        for (size_t i = 0; i < n_adm; i++) {
            gen_seq *s = g->adm[i];
            g->pre[i] = (pf_gen_prefill){.seq = s->bseq, .pixels = s->req.pixels, .num_images = s->req.num_images,
                                         .ids = s->req.ids, .n = s->req.n_ids};
        }
        pf_err e = {{0}};
        double t0 = pf_now();
        batched_ok = g->be->prefill_batch(g->ctx, g->pre, n_adm, g->logits, &e) == 0;
        double dt = pf_now() - t0;
        for (size_t i = 0; batched_ok && i < n_adm; i++)
            g->adm[i]->prefill_s = dt; /* shared: the batch's wall time */
        if (!batched_ok) /* retry alone below: sequences are reset by a fresh prefill */
            for (size_t i = 0; i < n_adm; i++) {
                g->be->seq_free(g->ctx, g->adm[i]->bseq);
                pf_err e2 = {{0}};
                if ((g->adm[i]->bseq = g->be->seq_create(g->ctx, g->adm[i]->cap, &e2)) == NULL)
                    set_error(g->adm[i], e2.msg);
            }
    }
    for (size_t i = 0; i < n_adm; i++) {
        gen_seq *s = g->adm[i];
        float *lg = batched_ok ? g->logits + i * V : g->logits;
        int ok = batched_ok;
        if (!ok && !s->error) {
            pf_err e = {{0}};
            double t0 = pf_now();
            ok = g->be->prefill(g->ctx, s->bseq, s->req.pixels, s->req.num_images, s->req.ids, s->req.n_ids, lg,
                                &e) == 0;
            s->prefill_s = pf_now() - t0;
            if (!ok)
                set_error(s, e.msg);
        }
        if (!ok || accept_token(g, s, lg)) {
            if (push_done(done, n_done, &cap_done, g, s) != 0)
                return pf_errf(err, "generator: out of memory");
        } else {
            g->run[g->n_run++] = s;
        }
    }

    /* 2. One decode step for the sequences that were running before this step, batched. */
    if (n_old > 0) {
        for (size_t i = 0; i < n_old; i++) {
            g->bseqs[i] = g->run[i]->bseq;
            g->tokens[i] = g->run[i]->last;
        }
        pf_err e = {{0}};
        double t0 = pf_now();
        int rc = g->be->decode(g->ctx, g->bseqs, g->tokens, n_old, g->logits, &e);
        double dt = pf_now() - t0;
        for (size_t i = 0; i < n_old; i++) {
            gen_seq *s = g->run[i];
            s->decode_s += dt;
            if (rc != 0)
                set_error(s, e.msg);
            if (rc != 0 || accept_token(g, s, g->logits + i * V)) {
                g->run[i] = NULL;
                if (push_done(done, n_done, &cap_done, g, s) != 0)
                    return pf_errf(err, "generator: out of memory");
            }
        }
        /* Compact, keeping order. */
        size_t k = 0;
        for (size_t i = 0; i < g->n_run; i++)
            if (g->run[i])
                g->run[k++] = g->run[i];
        g->n_run = k;
    }
    return 0;
}

int pf_generate(pf_generator *g, const pf_gen_request *reqs, size_t n, pf_gen_result *out, pf_err *err)
{
    /* Internal tags are request indices; the caller's tags are restored in the results. */
    memset(out, 0, n * sizeof *out);
    if (pf_generator_active(g) > 0)
        return pf_errf(err, "generate: the generator still has %zu requests of its own", pf_generator_active(g));
    int *pending = calloc(n ? n : 1, sizeof *pending);
    if (!pending)
        return pf_errf(err, "generate: out of memory");
    for (size_t i = 0; i < n; i++) {
        pf_gen_request r = reqs[i];
        r.tag = i;
        pf_err e = {{0}};
        if (pf_generator_submit(g, &r, &e) != 0) {
            out[i].tag = reqs[i].tag;
            out[i].error = strdup(e.msg);
        } else {
            pending[i] = 1;
        }
    }
    int rc = 0;
    while (pf_generator_active(g) > 0) {
        pf_gen_result *done;
        size_t nd;
        if (pf_generator_step(g, &done, &nd, err) != 0) {
            rc = -1;
            break;
        }
        for (size_t j = 0; j < nd; j++) {
            size_t i = (size_t)done[j].tag;
            if (i < n && pending[i]) {
                out[i] = done[j];
                out[i].tag = reqs[i].tag;
                pending[i] = 0;
            } else {
                pf_gen_result_free(&done[j]);
            }
        }
        free(done);
    }
    free(pending);
    return rc;
}

void pf_gen_result_free(pf_gen_result *r)
{
    if (!r)
        return;
    free(r->ids);
    free(r->error);
    r->ids = NULL;
    r->error = NULL;
    r->n_ids = 0;
}

void pf_gen_results_free(pf_gen_result *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++)
        pf_gen_result_free(&r[i]);
    free(r);
}
