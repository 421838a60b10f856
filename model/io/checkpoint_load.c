/* checkpoint_load.c - pf_model_load: config + checkpoint -> validated f32 weights. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/grow.h"
#include "base/log.h"
#include "model/io/lora.h"
#include "model/io/model.h"

/* A tensor the config says must exist: its v1 name, expected shape, and where its f32 pointer goes. */
typedef struct want {
    char name[160];
    int ndim;
    int64_t shape[4];
    const float **dst;
    const pf_st_tensor *t; /* found */
} want;

typedef struct want_list {
    want *v;
    size_t n, cap;
} want_list;

static int add(want_list *l, const float **dst, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
               pf_err *err, const char *fmt, ...) __attribute__((format(printf, 9, 10)));

static int add(want_list *l, const float **dst, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
               pf_err *err, const char *fmt, ...)
{
    if (PF_GROW(l->v, l->cap, l->n, 1, 64))
        return pf_errf(err, "out of memory");
    want *w = &l->v[l->n++];
    memset(w, 0, sizeof *w);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->name, sizeof w->name, fmt, ap);
    va_end(ap);
    w->ndim = ndim;
    w->shape[0] = d0;
    w->shape[1] = d1;
    w->shape[2] = d2;
    w->shape[3] = d3;
    w->dst = dst;
    return 0;
}

#define VEC(dst, n, ...) add(&l, (dst), 1, (n), 0, 0, 0, err, __VA_ARGS__)
#define MAT(dst, r, c, ...) add(&l, (dst), 2, (r), (c), 0, 0, err, __VA_ARGS__)

/* The list of tensors for this config (v1 names). */
static int build_wants(pf_model *m, want_list *out, pf_err *err)
{
    const pf_config *c = &m->cfg;
    const pf_vision_config *v = &c->vision;
    const pf_text_config *t = &c->text;
    want_list l = {0};
    const char *vp = "vision_tower.vision_model.";
    int64_t Dv = v->hidden, Iv = v->intermediate, D = t->hidden, I = t->intermediate;
    int64_t qd = (int64_t)t->heads * t->head_dim, kvd = (int64_t)t->kv_heads * t->head_dim;
    int rc = add(&l, &m->patch_w, 4, Dv, v->channels, v->patch_size, v->patch_size, err,
                 "%sembeddings.patch_embedding.weight", vp) ||
             VEC(&m->patch_b, Dv, "%sembeddings.patch_embedding.bias", vp) ||
             MAT(&m->pos_emb, v->num_patches, Dv, "%sembeddings.position_embedding.weight", vp);
    for (int i = 0; i < v->layers && !rc; i++) {
        pf_vision_layer_w *L = &m->vlayers[i];
        const char *p = "vision_tower.vision_model.encoder.layers";
        rc = VEC(&L->ln1_w, Dv, "%s.%d.layer_norm1.weight", p, i) || VEC(&L->ln1_b, Dv, "%s.%d.layer_norm1.bias", p, i) ||
             MAT(&L->q_w, Dv, Dv, "%s.%d.self_attn.q_proj.weight", p, i) ||
             VEC(&L->q_b, Dv, "%s.%d.self_attn.q_proj.bias", p, i) ||
             MAT(&L->k_w, Dv, Dv, "%s.%d.self_attn.k_proj.weight", p, i) ||
             VEC(&L->k_b, Dv, "%s.%d.self_attn.k_proj.bias", p, i) ||
             MAT(&L->v_w, Dv, Dv, "%s.%d.self_attn.v_proj.weight", p, i) ||
             VEC(&L->v_b, Dv, "%s.%d.self_attn.v_proj.bias", p, i) ||
             MAT(&L->o_w, Dv, Dv, "%s.%d.self_attn.out_proj.weight", p, i) ||
             VEC(&L->o_b, Dv, "%s.%d.self_attn.out_proj.bias", p, i) ||
             VEC(&L->ln2_w, Dv, "%s.%d.layer_norm2.weight", p, i) || VEC(&L->ln2_b, Dv, "%s.%d.layer_norm2.bias", p, i) ||
             MAT(&L->fc1_w, Iv, Dv, "%s.%d.mlp.fc1.weight", p, i) || VEC(&L->fc1_b, Iv, "%s.%d.mlp.fc1.bias", p, i) ||
             MAT(&L->fc2_w, Dv, Iv, "%s.%d.mlp.fc2.weight", p, i) || VEC(&L->fc2_b, Dv, "%s.%d.mlp.fc2.bias", p, i);
    }
    rc = rc || VEC(&m->post_ln_w, Dv, "%spost_layernorm.weight", vp) ||
         VEC(&m->post_ln_b, Dv, "%spost_layernorm.bias", vp) ||
         MAT(&m->proj_w, c->projection_dim, Dv, "multi_modal_projector.linear.weight") ||
         VEC(&m->proj_b, c->projection_dim, "multi_modal_projector.linear.bias") ||
         MAT(&m->embed, t->vocab_size, D, "language_model.model.embed_tokens.weight");
    for (int i = 0; i < t->layers && !rc; i++) {
        pf_text_layer_w *L = &m->tlayers[i];
        const char *p = "language_model.model.layers";
        rc = VEC(&L->input_norm, D, "%s.%d.input_layernorm.weight", p, i) ||
             MAT(&L->q, qd, D, "%s.%d.self_attn.q_proj.weight", p, i) ||
             MAT(&L->k, kvd, D, "%s.%d.self_attn.k_proj.weight", p, i) ||
             MAT(&L->v, kvd, D, "%s.%d.self_attn.v_proj.weight", p, i) ||
             MAT(&L->o, D, qd, "%s.%d.self_attn.o_proj.weight", p, i) ||
             VEC(&L->post_attn_norm, D, "%s.%d.post_attention_layernorm.weight", p, i) ||
             MAT(&L->gate, I, D, "%s.%d.mlp.gate_proj.weight", p, i) ||
             MAT(&L->up, I, D, "%s.%d.mlp.up_proj.weight", p, i) ||
             MAT(&L->down, D, I, "%s.%d.mlp.down_proj.weight", p, i);
        if (!rc && t->kind == PF_TEXT_GEMMA2)
            rc = VEC(&L->pre_ff_norm, D, "%s.%d.pre_feedforward_layernorm.weight", p, i) ||
                 VEC(&L->post_ff_norm, D, "%s.%d.post_feedforward_layernorm.weight", p, i);
    }
    rc = rc || VEC(&m->final_norm, D, "language_model.model.norm.weight");
    /* lm_head: explicit when stored (v2 always writes it), else tied to embed_tokens. */
    if (!rc && (pf_model_find_tensor(m, "language_model.lm_head.weight") || !m->cfg.tie_word_embeddings))
        rc = MAT(&m->lm_head, t->vocab_size, D, "language_model.lm_head.weight");
    if (rc) {
        free(l.v);
        return -1;
    }
    *out = l;
    return 0;
}

const pf_st_tensor *pf_model_find_tensor(const pf_model *m, const char *name)
{
    if (m->layout != PF_LAYOUT_V2)
        return pf_checkpoint_find(&m->ckpt, name, NULL);
    /* v1 -> v2: language_model.model.X -> model.language_model.X; language_model.lm_head.weight ->
     * lm_head.weight; vision_tower.* and multi_modal_projector.* gain "model.". */
    char buf[512];
    static const char lm[] = "language_model.model.", head[] = "language_model.lm_head.weight";
    if (strcmp(name, head) == 0)
        snprintf(buf, sizeof buf, "lm_head.weight");
    else if (strncmp(name, lm, sizeof lm - 1) == 0)
        snprintf(buf, sizeof buf, "model.language_model.%s", name + sizeof lm - 1);
    else
        snprintf(buf, sizeof buf, "model.%s", name);
    return pf_checkpoint_find(&m->ckpt, buf, NULL);
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
}

/* Presence, dtype and shape of every wanted tensor; the first problem is reported by name. */
static int check_wants(pf_model *m, want_list *l, size_t *convert_floats, pf_err *err)
{
    *convert_floats = 0;
    for (size_t i = 0; i < l->n; i++) {
        want *w = &l->v[i];
        w->t = pf_model_find_tensor(m, w->name);
        if (!w->t)
            return pf_errf(err, "tensor %s: missing from the checkpoint", w->name);
        if (w->t->dtype != PF_DT_F32 && w->t->dtype != PF_DT_BF16 && w->t->dtype != PF_DT_F16)
            return pf_errf(err, "tensor %s: dtype %s is not supported (want F32, BF16 or F16)", w->name,
                           pf_dtype_name(w->t->dtype));
        int same = w->t->ndim == w->ndim;
        for (int d = 0; same && d < w->ndim; d++)
            same = w->t->shape[d] == w->shape[d];
        if (!same) {
            char got[128], exp[128];
            shape_str(got, sizeof got, w->t->ndim, w->t->shape);
            shape_str(exp, sizeof exp, w->ndim, w->shape);
            return pf_errf(err, "tensor %s: shape %s, but the config implies %s", w->name, got, exp);
        }
        if (w->t->dtype != PF_DT_F32 || ((uintptr_t)w->t->data & 3u) != 0)
            *convert_floats += w->t->numel;
    }
    return 0;
}

/* Before looking at tensors: the config's parameter count must fit in the files (>= 2 bytes per
 * parameter), so an absurd config is refused before anything is sized from it. */
static int check_total_size(const pf_model *m, const want_list *l, pf_err *err)
{
    uint64_t params = 0;
    for (size_t i = 0; i < l->n; i++) {
        uint64_t n = 1;
        for (int d = 0; d < l->v[i].ndim; d++)
            n *= (uint64_t)l->v[i].shape[d]; /* each dim <= 2^24 (config bounds), at most 4 dims: no overflow */
        if (n > UINT64_MAX / 4 || params > UINT64_MAX / 4 - n)
            return pf_errf(err, "config implies an absurd number of parameters");
        params += n;
    }
    if (params * 2 > m->ckpt.total_bytes)
        return pf_errf(err, "config implies %llu parameters (>= %llu bytes) but the checkpoint files hold only "
                            "%llu bytes: config and weights do not match",
                       (unsigned long long)params, (unsigned long long)(params * 2),
                       (unsigned long long)m->ckpt.total_bytes);
    return 0;
}

static void detect_layout(pf_model *m)
{
    m->layout = PF_LAYOUT_V1;
    if (!pf_checkpoint_find(&m->ckpt, "language_model.model.embed_tokens.weight", NULL) &&
        pf_checkpoint_find(&m->ckpt, "model.language_model.embed_tokens.weight", NULL))
        m->layout = PF_LAYOUT_V2;
}

static int load(pf_model *m, const char *dir, const char *adapter, unsigned flags, pf_err *err)
{
    char *cfg_path = pf_path_join(dir, "config.json");
    if (!cfg_path)
        return pf_errf(err, "out of memory");
    int rc = pf_config_load(cfg_path, &m->cfg, err);
    free(cfg_path);
    if (rc != 0 || pf_checkpoint_open(dir, &m->ckpt, err) != 0)
        return -1;
    detect_layout(m);
    if (adapter && pf_lora_merge(m, adapter, err) != 0)
        return -1;
    /* The config is bounded (layers <= PF_CFG_MAX_LAYERS), so these are small. */
    m->vlayers = calloc((size_t)m->cfg.vision.layers, sizeof *m->vlayers);
    m->tlayers = calloc((size_t)m->cfg.text.layers, sizeof *m->tlayers);
    if (!m->vlayers || !m->tlayers)
        return pf_errf(err, "out of memory");
    want_list l;
    if (build_wants(m, &l, err) != 0)
        return -1;
    size_t conv = 0;
    rc = check_total_size(m, &l, err) || check_wants(m, &l, &conv, err);
    if (flags & PF_MODEL_STORED_ONLY) {
        free(l.v);
        return rc;
    }
    if (rc == 0 && conv > 0) {
        m->arena = malloc(conv * sizeof(float));
        if (!m->arena)
            rc = pf_errf(err, "out of memory converting %zu weights to f32", conv);
    }
    size_t used = 0;
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        const pf_st_tensor *t = l.v[i].t;
        if (t->dtype == PF_DT_F32 && ((uintptr_t)t->data & 3u) == 0) {
            *l.v[i].dst = (const float *)(const void *)t->data;
        } else {
            rc = pf_st_read_f32(t, m->arena + used, err);
            *l.v[i].dst = m->arena + used;
            used += t->numel;
        }
    }
    m->arena_floats = used;
    free(l.v);
    if (rc == 0 && !m->lm_head)
        m->lm_head = m->embed;
    m->has_f32 = rc == 0;
    return rc;
}

int pf_model_load(const char *dir, pf_model **out, pf_err *err)
{
    return pf_model_load_flags(dir, 0, out, err);
}

int pf_model_load_flags(const char *dir, unsigned flags, pf_model **out, pf_err *err)
{
    return pf_model_load_adapter(dir, NULL, flags, out, err);
}

int pf_model_in_mapping(const pf_model *m, const void *p)
{
    for (size_t i = 0; i < m->ckpt.n_files; i++) {
        const pf_map *mp = &m->ckpt.files[i].map;
        if (mp->data && (const uint8_t *)p >= mp->data && (const uint8_t *)p < mp->data + mp->size)
            return 1;
    }
    return 0;
}

int pf_model_load_adapter(const char *dir, const char *adapter, unsigned flags, pf_model **out, pf_err *err)
{
    *out = NULL;
    pf_model *m = calloc(1, sizeof *m);
    if (!m)
        return pf_errf(err, "%s: out of memory", dir);
    if (load(m, dir, adapter, flags, err) != 0) {
        pf_model_free(m);
        return pf_err_prefix(err, "checkpoint %s", dir);
    }
    pf_debug("model", "%s: %s text (%d layers, hidden %d), SigLIP %dpx (%d layers), layout v%d, %zu MB converted",
             dir, m->cfg.text.kind == PF_TEXT_GEMMA2 ? "gemma2" : "gemma", m->cfg.text.layers, m->cfg.text.hidden,
             m->cfg.vision.image_size, m->cfg.vision.layers, (int)m->layout, m->arena_floats * 4 >> 20);
    if (m->cfg.random_weights)
        pf_warn("model", "%s holds RANDOM weights (made by paliflow make-random-checkpoint): everything it "
                "generates is noise. Use a real checkpoint (e.g. google/paligemma-3b-mix-224) for real output.", dir);
    *out = m;
    return 0;
}

void pf_model_free(pf_model *m)
{
    if (!m)
        return;
    free(m->arena);
    for (size_t i = 0; i < m->n_merged; i++)
        free(m->merged[i]);
    free(m->merged);
    free(m->vlayers);
    free(m->tlayers);
    pf_checkpoint_close(&m->ckpt);
    free(m);
}

const pf_config *pf_model_config(const pf_model *m) { return &m->cfg; }
