/* ref_text.c - embedding merge, Gemma / Gemma 2 decoder (prefill over a row, batched decode steps),
 * lm_head, KV cache. Quirk numbers refer to ../shared/golden/model/README.md. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/ref/ref.h"

#define MLP_CHUNK 256

static void debug(const pf_ref_debug *dbg, const char *name, const float *x, size_t rows, size_t cols)
{
    if (dbg && dbg->fn)
        dbg->fn(dbg->ctx, name, x, rows, cols);
}

/* ---- KV cache and scratch ---------------------------------------------------------------------- */

int pf_ref_kv_init(pf_ref_kv *kv, const pf_model *m, size_t cap, pf_err *err)
{
    memset(kv, 0, sizeof *kv);
    const pf_text_config *t = &m->cfg.text;
    if (cap == 0 || cap > PF_REF_MAX_TOKENS)
        return pf_errf(err, "KV cache: %zu positions is outside [1, %u]", cap, PF_REF_MAX_TOKENS);
    kv->layers = t->layers;
    kv->kv_dim = t->kv_heads * t->head_dim;
    /* layers <= 1024, kv_dim <= 2^22, cap <= 2^17: the product fits in 64 bits. */
    size_t n = (size_t)kv->layers * cap * (size_t)kv->kv_dim;
    kv->k = malloc(n * sizeof(float));
    kv->v = malloc(n * sizeof(float));
    if (!kv->k || !kv->v) {
        pf_ref_kv_free(kv);
        return pf_errf(err, "KV cache: out of memory for %zu positions (%zu MB)", cap, (2 * n * sizeof(float)) >> 20);
    }
    kv->cap = cap;
    return 0;
}

void pf_ref_kv_free(pf_ref_kv *kv)
{
    free(kv->k);
    free(kv->v);
    memset(kv, 0, sizeof *kv);
}

static float *scratch_get(pf_ref_scratch *s, int i, size_t n)
{
    if (s->cap[i] < n) {
        free(s->buf[i]);
        s->buf[i] = malloc(n * sizeof(float));
        s->cap[i] = s->buf[i] ? n : 0;
    }
    return s->buf[i];
}

void pf_ref_scratch_free(pf_ref_scratch *s)
{
    for (int i = 0; i < 12; i++)
        free(s->buf[i]);
    memset(s, 0, sizeof *s);
}

/* ---- pieces shared by prefill and decode -------------------------------------------------------- */

static pf_ref_attn attn_params(const pf_model *m, int layer)
{
    const pf_text_config *t = &m->cfg.text;
    pf_ref_attn a = {.heads = t->heads, .kv_heads = t->kv_heads, .head_dim = t->head_dim};
    if (t->kind == PF_TEXT_GEMMA2) {
        a.scale = (float)pow((double)t->query_pre_attn_scalar, -0.5); /* quirk 12 */
        a.softcap = t->attn_logit_softcapping;
        a.window = pf_config_layer_is_sliding(&m->cfg, layer) ? t->sliding_window : 0;
    } else {
        a.scale = (float)(1.0 / sqrt((double)t->head_dim)); /* quirk 5: head_dim from config */
    }
    return a;
}

/* The normalizer rounded to the activation dtype (quirk 1). */
static float embed_normalizer(const pf_model *m) { return (float)sqrt((double)m->cfg.text.hidden); }

/* MLP on rows [n][D] of h -> out [n][D]: down(act(gate(h)) * up(h)), chunked; g, u: [MLP_CHUNK][I]. */
static void mlp(const pf_model *m, const pf_text_layer_w *L, const float *h, size_t n, float *out, float *g,
                float *u)
{
    size_t D = (size_t)m->cfg.text.hidden, I = (size_t)m->cfg.text.intermediate;
    for (size_t r0 = 0; r0 < n; r0 += MLP_CHUNK) {
        size_t nr = n - r0 < MLP_CHUNK ? n - r0 : MLP_CHUNK;
        pf_ref_linear(g, h + r0 * D, L->gate, NULL, nr, D, I);
        pf_ref_linear(u, h + r0 * D, L->up, NULL, nr, D, I);
        if (m->cfg.text.act == PF_ACT_GELU)
            pf_ref_gelu_erf(g, nr * I);
        else
            pf_ref_gelu_tanh(g, nr * I);
        for (size_t i = 0; i < nr * I; i++)
            g[i] *= u[i];
        pf_ref_linear(out + r0 * D, g, L->down, NULL, nr, I, D);
    }
}

/* x += attn_out (Gemma) or x += post_attention_layernorm(attn_out) (Gemma 2); then h = the MLP input norm. */
static void add_residual(float *x, float *y, const float *post_norm, size_t n, size_t D, float eps)
{
    if (post_norm)
        pf_ref_rmsnorm(y, y, post_norm, n, D, eps);
    for (size_t i = 0; i < n * D; i++)
        x[i] += y[i];
}

/* ---- embedding merge ---------------------------------------------------------------------------- */

int pf_ref_embed(const pf_model *m, const int32_t *ids, size_t n, const float *feats, int num_images, float *x,
                 pf_err *err)
{
    const pf_config *c = &m->cfg;
    size_t D = (size_t)c->text.hidden, n_img = 0;
    for (size_t i = 0; i < n; i++)
        n_img += ids[i] == c->image_token_index;
    if (num_images > 0 && n_img != (size_t)num_images * (size_t)c->num_image_tokens)
        return pf_errf(err, "row has %zu <image> tokens (id %d) but %d image(s) x %d image tokens", n_img,
                       c->image_token_index, num_images, c->num_image_tokens);
    size_t next = 0;
    for (size_t i = 0; i < n; i++) {
        if (num_images > 0 && ids[i] == c->image_token_index) {
            memcpy(x + i * D, feats + next++ * D, D * sizeof(float));
        } else if (ids[i] < 0 || ids[i] >= c->text.vocab_size) {
            return pf_errf(err, "token id %d at position %zu is outside the vocabulary [0, %d)", ids[i], i,
                           c->text.vocab_size);
        } else {
            memcpy(x + i * D, m->embed + (size_t)ids[i] * D, D * sizeof(float));
        }
    }
    return 0;
}

/* ---- prefill / training forward over one row ---------------------------------------------------- */

int pf_ref_decoder(const pf_model *m, float *x, size_t n, const int32_t *token_type, pf_ref_kv *kv,
                   const pf_ref_debug *dbg, pf_err *err)
{
    const pf_text_config *t = &m->cfg.text;
    size_t D = (size_t)t->hidden, I = (size_t)t->intermediate, hd = (size_t)t->head_dim;
    size_t qd = (size_t)t->heads * hd, kvd = (size_t)t->kv_heads * hd, ch = n < MLP_CHUNK ? n : MLP_CHUNK;
    if (n == 0 || n > PF_REF_MAX_TOKENS)
        return pf_errf(err, "decoder: row of %zu tokens is outside [1, %u]", n, PF_REF_MAX_TOKENS);
    if (kv && (kv->cap < n || kv->layers != t->layers || kv->kv_dim != (int)kvd))
        return pf_errf(err, "decoder: KV cache does not fit %zu tokens of this model", n);
    float *h = malloc(sizeof(float) * n * D), *q = malloc(sizeof(float) * n * (qd > D ? qd : D));
    float *g = malloc(sizeof(float) * ch * I), *u = malloc(sizeof(float) * ch * I);
    float *kown = kv ? NULL : malloc(sizeof(float) * n * kvd), *vown = kv ? NULL : malloc(sizeof(float) * n * kvd);
    int64_t *pos = malloc(sizeof(int64_t) * n);
    int rc = -1;
    if (!h || !q || !g || !u || !pos || (!kv && (!kown || !vown))) {
        pf_errf(err, "decoder: out of memory for %zu tokens", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        pos[i] = (int64_t)i + 1; /* quirk 7: positions 1..n */

    debug(dbg, "inputs_embeds", x, n, D);
    float norm = embed_normalizer(m);
    for (size_t i = 0; i < n * D; i++)
        x[i] *= norm;
    debug(dbg, "decoder_input", x, n, D);

    char name[64];
    for (int l = 0; l < t->layers; l++) {
        const pf_text_layer_w *L = &m->tlayers[l];
        float *K = kv ? kv->k + (size_t)l * kv->cap * kvd : kown;
        float *V = kv ? kv->v + (size_t)l * kv->cap * kvd : vown;
        pf_ref_rmsnorm(h, x, L->input_norm, n, D, t->rms_norm_eps);
        pf_ref_linear(q, h, L->q, NULL, n, D, qd);
        pf_ref_linear(K, h, L->k, NULL, n, D, kvd);
        pf_ref_linear(V, h, L->v, NULL, n, D, kvd);
        pf_ref_rope(q, n, t->heads, t->head_dim, pos, t->rope_theta);
        pf_ref_rope(K, n, t->kv_heads, t->head_dim, pos, t->rope_theta);
        pf_ref_attn a = attn_params(m, l);
        a.n_bidir = n;            /* inference: the whole row attends to itself (quirk 8) */
        a.token_type = token_type; /* training: prefix-LM (quirk 9) */
        if (pf_ref_attention(&a, q, n, 0, K, V, n, kvd, q, NULL) != 0) {
            pf_errf(err, "decoder: out of memory");
            goto done;
        }
        pf_ref_linear(h, q, L->o, NULL, n, qd, D);
        add_residual(x, h, L->post_ff_norm ? L->post_attn_norm : NULL, n, D, t->rms_norm_eps);
        pf_ref_rmsnorm(h, x, L->pre_ff_norm ? L->pre_ff_norm : L->post_attn_norm, n, D, t->rms_norm_eps);
        mlp(m, L, h, n, q, g, u);
        add_residual(x, q, L->post_ff_norm, n, D, t->rms_norm_eps);
        snprintf(name, sizeof name, "decoder_layer_%d", l);
        debug(dbg, name, x, n, D);
    }
    pf_ref_rmsnorm(x, x, m->final_norm, n, D, t->rms_norm_eps);
    debug(dbg, "final_norm", x, n, D);
    if (kv)
        kv->len = n;
    rc = 0;
done:
    free(h);
    free(q);
    free(g);
    free(u);
    free(kown);
    free(vown);
    free(pos);
    return rc;
}

void pf_ref_logits(const pf_model *m, const float *h, size_t n, float *logits)
{
    size_t V = (size_t)m->cfg.text.vocab_size;
    pf_ref_linear(logits, h, m->lm_head, NULL, n, (size_t)m->cfg.text.hidden, V);
    float cap = m->cfg.text.final_logit_softcapping;
    if (cap > 0)
        for (size_t i = 0; i < n * V; i++)
            logits[i] = tanhf(logits[i] / cap) * cap;
}

int pf_ref_forward(const pf_model *m, const float *pixels, int num_images, const int32_t *ids, size_t n,
                   const int32_t *token_type, pf_ref_kv *kv, float *hidden, const pf_ref_debug *dbg, pf_err *err)
{
    const pf_config *c = &m->cfg;
    if (n == 0 || n > PF_REF_MAX_TOKENS)
        return pf_errf(err, "row of %zu tokens is outside [1, %u]", n, PF_REF_MAX_TOKENS);
    if (num_images < 0 || (num_images > 0 && !pixels) ||
        (size_t)num_images * (size_t)c->num_image_tokens > n)
        return pf_errf(err, "%d image(s) of %d tokens do not fit a row of %zu tokens", num_images,
                       c->num_image_tokens, n);
    size_t nf = (size_t)num_images * (size_t)c->num_image_tokens * (size_t)c->text.hidden;
    size_t img = (size_t)c->vision.channels * (size_t)c->vision.image_size * (size_t)c->vision.image_size;
    float *feats = nf ? malloc(nf * sizeof(float)) : NULL;
    if (nf && !feats)
        return pf_errf(err, "out of memory for image features");
    for (int i = 0; i < num_images; i++) {
        if (pf_ref_image_features(m, pixels + (size_t)i * img,
                                  feats + (size_t)i * (size_t)c->num_image_tokens * (size_t)c->text.hidden, dbg,
                                  err) != 0) {
            free(feats);
            return -1;
        }
    }
    int rc = pf_ref_embed(m, ids, n, feats, num_images, hidden, err);
    free(feats);
    if (rc != 0)
        return -1;
    return pf_ref_decoder(m, hidden, n, token_type, kv, dbg, err);
}

/* ---- decode: one new token for each of n sequences ---------------------------------------------- */

int pf_ref_decode(const pf_model *m, pf_ref_kv *const *kvs, const int32_t *tokens, size_t n, float *logits,
                  pf_ref_scratch *s, pf_err *err)
{
    const pf_text_config *t = &m->cfg.text;
    size_t D = (size_t)t->hidden, I = (size_t)t->intermediate, hd = (size_t)t->head_dim;
    size_t qd = (size_t)t->heads * hd, kvd = (size_t)t->kv_heads * hd;
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (kvs[i]->len >= kvs[i]->cap || kvs[i]->len == 0)
            return pf_errf(err, "decode: sequence %zu has %zu/%zu cached positions", i, kvs[i]->len, kvs[i]->cap);
        if (tokens[i] < 0 || tokens[i] >= t->vocab_size)
            return pf_errf(err, "decode: token id %d is outside the vocabulary", tokens[i]);
    }
    size_t ch = n < MLP_CHUNK ? n : MLP_CHUNK;
    float *x = scratch_get(s, 0, n * D), *h = scratch_get(s, 1, n * D), *q = scratch_get(s, 2, n * (qd > D ? qd : D));
    float *kk = scratch_get(s, 3, n * kvd), *vv = scratch_get(s, 4, n * kvd);
    float *g = scratch_get(s, 5, ch * I), *u = scratch_get(s, 6, ch * I);
    int64_t *pos = (int64_t *)(void *)scratch_get(s, 7, 2 * n);
    float *work = scratch_get(s, 8, pf_ref_attention_work_floats(t->head_dim));
    if (!x || !h || !q || !kk || !vv || !g || !u || !pos || !work)
        return pf_errf(err, "decode: out of memory for %zu sequences", n);

    float norm = embed_normalizer(m);
    for (size_t i = 0; i < n; i++) {
        pos[i] = (int64_t)kvs[i]->len + 1; /* quirk 7: the prompt had 1..L, then L+1, L+2, ... */
        const float *e = m->embed + (size_t)tokens[i] * D;
        for (size_t d = 0; d < D; d++)
            x[i * D + d] = e[d] * norm;
    }
    for (int l = 0; l < t->layers; l++) {
        const pf_text_layer_w *L = &m->tlayers[l];
        pf_ref_rmsnorm(h, x, L->input_norm, n, D, t->rms_norm_eps);
        pf_ref_linear(q, h, L->q, NULL, n, D, qd);
        pf_ref_linear(kk, h, L->k, NULL, n, D, kvd);
        pf_ref_linear(vv, h, L->v, NULL, n, D, kvd);
        pf_ref_rope(q, n, t->heads, t->head_dim, pos, t->rope_theta);
        pf_ref_rope(kk, n, t->kv_heads, t->head_dim, pos, t->rope_theta);
        pf_ref_attn a = attn_params(m, l);
        for (size_t i = 0; i < n; i++) {
            pf_ref_kv *kv = kvs[i];
            float *K = kv->k + (size_t)l * kv->cap * kvd, *V = kv->v + (size_t)l * kv->cap * kvd;
            memcpy(K + kv->len * kvd, kk + i * kvd, kvd * sizeof(float));
            memcpy(V + kv->len * kvd, vv + i * kvd, kvd * sizeof(float));
            /* The new token sees every cached position and itself (window by position distance, quirk 12). */
            pf_ref_attention(&a, q + i * qd, 1, kv->len, K, V, kv->len + 1, kvd, q + i * qd, work);
        }
        pf_ref_linear(h, q, L->o, NULL, n, qd, D);
        add_residual(x, h, L->post_ff_norm ? L->post_attn_norm : NULL, n, D, t->rms_norm_eps);
        pf_ref_rmsnorm(h, x, L->pre_ff_norm ? L->pre_ff_norm : L->post_attn_norm, n, D, t->rms_norm_eps);
        mlp(m, L, h, n, q, g, u);
        add_residual(x, q, L->post_ff_norm, n, D, t->rms_norm_eps);
    }
    for (size_t i = 0; i < n; i++)
        kvs[i]->len++;
    pf_ref_rmsnorm(x, x, m->final_norm, n, D, t->rms_norm_eps);
    pf_ref_logits(m, x, n, logits);
    return 0;
}
