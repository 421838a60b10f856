/* engine_load.c - pf_engine_create: every linear layer converted once (pf_linear: oneDNN's preferred layout
 * at the chosen precision; q/k/v and gate/up stacked into one matmul each, read straight from the
 * checkpoint's mapping), the small tensors (norms, biases handled by pf_linear, position embeddings) to f32,
 * and each source tensor's pages given back once converted. */
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/log.h"
#include "model/engine/engine_internal.h"

typedef struct loader {
    pf_engine *e;
    const pf_model *m;
    size_t f32_used;
    pf_err *err;
} loader;

static const pf_st_tensor *find(loader *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static const pf_st_tensor *find(loader *L, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const pf_st_tensor *t = pf_model_find_tensor(L->m, name);
    if (!t)
        pf_errf(L->err, "tensor %s: missing from the checkpoint", name);
    return t;
}

/* f32 copy of a small tensor into the arena; plus1: store 1 + w (Gemma RMSNorm). */
static const float *small(loader *L, const pf_st_tensor *t, int plus1)
{
    if (!t)
        return NULL;
    float *dst = L->e->f32 + L->f32_used;
    if (pf_st_read_f32(t, dst, L->err) != 0)
        return NULL;
    if (plus1)
        for (size_t i = 0; i < t->numel; i++)
            dst[i] = 1.0f + dst[i];
    L->f32_used += (t->numel + 15) & ~(size_t)15;
    return dst;
}

/* A linear layer from 1..3 stored [n][k] tensors stacked along n, with their biases if bias != 0. */
static pf_linear *linear(loader *L, const char *name, int bias, int np, const pf_st_tensor **w,
                         const pf_st_tensor **b)
{
    pf_linear_desc d = {.name = name, .nparts = np, .release_source = true};
    for (int i = 0; i < np; i++) {
        if (!w[i] || (bias && !b[i]))
            return NULL;
        d.k = w[i]->numel / (size_t)w[i]->shape[0]; /* patch conv [Dv, C, p, p] is [Dv][C*p*p] */
        /* LoRA-merged weights live in anonymous memory: giving those pages back would zero them. */
        if (!pf_model_in_mapping(L->m, w[i]->data))
            d.release_source = false;
        d.parts[i] = (pf_linear_part){.w = w[i]->data, .dtype = w[i]->dtype, .n = w[i]->shape[0],
                                      .bias = bias ? b[i]->data : NULL, .bias_dtype = bias ? b[i]->dtype : PF_DT_F32};
    }
    pf_linear *l;
    return pf_linear_create(L->e->mm, &d, &l, L->err) == 0 ? l : NULL; /* gives the source pages back */
}

/* Layer i's one-tensor linear "<p>.<i>.<what>.weight" (+ ".bias" if bias), named "<p>.<i>.<what>". */
static pf_linear *layer_linear(loader *L, const char *p, int i, const char *what, int bias)
{
    const pf_st_tensor *w = find(L, "%s.%d.%s.weight", p, i, what);
    const pf_st_tensor *b = bias ? find(L, "%s.%d.%s.bias", p, i, what) : NULL;
    char name[160];
    snprintf(name, sizeof name, "%s.%d.%s", p, i, what);
    return linear(L, name, bias, 1, &w, &b);
}

static size_t small_floats(const pf_config *c)
{
    size_t Dv = (size_t)c->vision.hidden, D = (size_t)c->text.hidden, pad = 16;
    size_t v = (size_t)c->vision.layers * 4 * (Dv + pad) + (size_t)c->vision.num_patches * Dv + pad + 2 * (Dv + pad);
    size_t t = (size_t)c->text.layers * 4 * (D + pad) + D + pad;
    return v + t + (size_t)c->text.head_dim + pad;
}

static int load_vision(loader *L)
{
    pf_engine *e = L->e;
    const pf_config *c = &L->m->cfg;
    const char *vp = "vision_tower.vision_model.";
    const pf_st_tensor *w[3], *b[3];
    char name[160];
    w[0] = find(L, "%sembeddings.patch_embedding.weight", vp);
    b[0] = find(L, "%sembeddings.patch_embedding.bias", vp);
    if (!(e->patch = linear(L, "vision patch_embedding", 1, 1, w, b)))
        return -1;
    if (!(e->pos_emb = small(L, find(L, "%sembeddings.position_embedding.weight", vp), 0)))
        return -1;
    for (int i = 0; i < c->vision.layers; i++) {
        eng_vlayer *V = &e->v[i];
        const char *p = "vision_tower.vision_model.encoder.layers";
        if (!(V->ln1_w = small(L, find(L, "%s.%d.layer_norm1.weight", p, i), 0)) ||
            !(V->ln1_b = small(L, find(L, "%s.%d.layer_norm1.bias", p, i), 0)) ||
            !(V->ln2_w = small(L, find(L, "%s.%d.layer_norm2.weight", p, i), 0)) ||
            !(V->ln2_b = small(L, find(L, "%s.%d.layer_norm2.bias", p, i), 0)))
            return -1;
        const char *qkv[3] = {"q", "k", "v"};
        for (int j = 0; j < 3; j++) {
            w[j] = find(L, "%s.%d.self_attn.%s_proj.weight", p, i, qkv[j]);
            b[j] = find(L, "%s.%d.self_attn.%s_proj.bias", p, i, qkv[j]);
        }
        snprintf(name, sizeof name, "%s.%d.self_attn.qkv", p, i);
        if (!(V->qkv = linear(L, name, 1, 3, w, b)))
            return -1;
        if (!(V->o = layer_linear(L, p, i, "self_attn.out_proj", 1)) ||
            !(V->fc1 = layer_linear(L, p, i, "mlp.fc1", 1)) || !(V->fc2 = layer_linear(L, p, i, "mlp.fc2", 1)))
            return -1;
    }
    if (!(e->post_ln_w = small(L, find(L, "%spost_layernorm.weight", vp), 0)) ||
        !(e->post_ln_b = small(L, find(L, "%spost_layernorm.bias", vp), 0)))
        return -1;
    w[0] = find(L, "multi_modal_projector.linear.weight");
    b[0] = find(L, "multi_modal_projector.linear.bias");
    return (e->proj = linear(L, "multi_modal_projector.linear", 1, 1, w, b)) ? 0 : -1;
}

static int load_text(loader *L)
{
    pf_engine *e = L->e;
    const pf_config *c = &L->m->cfg;
    const pf_st_tensor *w[3];
    char name[160];
    const char *p = "language_model.model.layers";
    for (int i = 0; i < c->text.layers; i++) {
        eng_tlayer *T = &e->t[i];
        if (!(T->in_norm = small(L, find(L, "%s.%d.input_layernorm.weight", p, i), 1)) ||
            !(T->post_attn_norm = small(L, find(L, "%s.%d.post_attention_layernorm.weight", p, i), 1)))
            return -1;
        if (c->text.kind == PF_TEXT_GEMMA2 &&
            (!(T->pre_ff_norm = small(L, find(L, "%s.%d.pre_feedforward_layernorm.weight", p, i), 1)) ||
             !(T->post_ff_norm = small(L, find(L, "%s.%d.post_feedforward_layernorm.weight", p, i), 1))))
            return -1;
        const char *qkv[3] = {"q", "k", "v"};
        for (int j = 0; j < 3; j++)
            w[j] = find(L, "%s.%d.self_attn.%s_proj.weight", p, i, qkv[j]);
        snprintf(name, sizeof name, "%s.%d.self_attn.qkv", p, i);
        if (!(T->qkv = linear(L, name, 0, 3, w, NULL)))
            return -1;
        if (!(T->o = layer_linear(L, p, i, "self_attn.o_proj", 0)))
            return -1;
        w[0] = find(L, "%s.%d.mlp.gate_proj.weight", p, i);
        w[1] = find(L, "%s.%d.mlp.up_proj.weight", p, i);
        snprintf(name, sizeof name, "%s.%d.mlp.gate_up", p, i);
        if (!(T->gu = linear(L, name, 0, 2, w, NULL)))
            return -1;
        if (!(T->down = layer_linear(L, p, i, "mlp.down_proj", 0)))
            return -1;
    }
    if (!(e->final_norm = small(L, find(L, "language_model.model.norm.weight"), 1)))
        return -1;
    if (!(e->embed = find(L, "language_model.model.embed_tokens.weight")))
        return -1;
    /* LM head: stored explicitly (v2 layout, untied) or tied to the embedding. */
    const pf_st_tensor *head = pf_model_find_tensor(L->m, "language_model.lm_head.weight");
    w[0] = head && (head != e->embed) ? head : e->embed;
    if (!c->tie_word_embeddings && !head)
        return pf_errf(L->err, "tensor language_model.lm_head.weight: missing (tie_word_embeddings is false)");
    return (e->lm_head = linear(L, "lm_head", 0, 1, w, NULL)) ? 0 : -1;
}

static void compute_stats(pf_engine *e)
{
    const pf_config *c = &e->m->cfg;
    pf_engine_stats *st = &e->st;
    double P = (double)c->vision.num_patches;
    size_t vb = pf_linear_bytes(e->patch) + pf_linear_bytes(e->proj), tb = 0;
    double vf = 2.0 * P *
                ((double)pf_linear_n(e->patch) * (double)pf_linear_k(e->patch) +
                 (double)pf_linear_n(e->proj) * (double)pf_linear_k(e->proj));
    for (int i = 0; i < c->vision.layers; i++) {
        pf_linear *ls[4] = {e->v[i].qkv, e->v[i].o, e->v[i].fc1, e->v[i].fc2};
        for (int j = 0; j < 4; j++) {
            vb += pf_linear_bytes(ls[j]);
            vf += 2.0 * P * (double)pf_linear_n(ls[j]) * (double)pf_linear_k(ls[j]);
        }
    }
    double tf = 0;
    for (int i = 0; i < c->text.layers; i++) {
        pf_linear *ls[4] = {e->t[i].qkv, e->t[i].o, e->t[i].gu, e->t[i].down};
        for (int j = 0; j < 4; j++) {
            tb += pf_linear_bytes(ls[j]);
            tf += 2.0 * (double)pf_linear_n(ls[j]) * (double)pf_linear_k(ls[j]);
        }
    }
    size_t hb = pf_linear_bytes(e->lm_head);
    st->vision_weight_bytes = vb;
    st->decode_weight_bytes = tb + hb;
    st->weight_bytes = vb + tb + hb + e->f32_floats * sizeof(float);
    st->vision_flops_per_image = vf;
    st->text_flops_per_token = tf;
    st->lm_head_flops_per_row = 2.0 * (double)pf_linear_n(e->lm_head) * (double)pf_linear_k(e->lm_head);
}

int pf_engine_create(const pf_model *m, const pf_engine_params *o, pf_engine **out, pf_err *err)
{
    *out = NULL;
    pf_engine_params opt = {0};
    if (o)
        opt = *o;
    if (opt.threads < 0 || opt.threads > 4096)
        return pf_errf(err, "engine: %d threads", opt.threads);
    if (opt.threads > 0)
        omp_set_num_threads(opt.threads);
    const pf_config *c = &m->cfg;
    if (c->text.head_dim % 2 || c->text.heads % c->text.kv_heads || c->vision.hidden % c->vision.heads)
        return pf_errf(err, "engine: unsupported head layout (head_dim %d, heads %d / %d)", c->text.head_dim,
                       c->text.heads, c->text.kv_heads);
    double t0 = pf_now();
    pf_engine *e = calloc(1, sizeof *e);
    if (!e)
        return pf_errf(err, "engine: out of memory");
    e->m = m;
    e->threads = opt.threads;
    e->v = calloc((size_t)c->vision.layers, sizeof *e->v);
    e->t = calloc((size_t)c->text.layers, sizeof *e->t);
    e->f32_floats = small_floats(c);
    e->f32 = malloc(e->f32_floats * sizeof(float));
    pf_mm_params mo = {.precision = opt.precision, .allow_ref = opt.allow_ref};
    if (!e->v || !e->t || !e->f32) {
        pf_engine_free(e);
        return pf_errf(err, "engine: out of memory");
    }
    if (pf_mm_engine_create(&mo, &e->mm, err) != 0) {
        pf_engine_free(e);
        return -1;
    }
    e->prec = pf_mm_engine_precision(e->mm);
    loader L = {.e = e, .m = m, .err = err};
    if (load_vision(&L) != 0 || load_text(&L) != 0) {
        pf_engine_free(e);
        return pf_err_prefix(err, "engine");
    }
    int half = c->text.head_dim / 2;
    e->rope_inv = e->f32 + L.f32_used;
    for (int i = 0; i < half; i++) { /* as pf_ref_rope computes them */
        float ex = (float)(2 * i) / (float)c->text.head_dim;
        e->rope_inv[i] = 1.0f / (float)pow((double)c->text.rope_theta, (double)ex);
    }
    e->embed_scale = (float)sqrt((double)c->text.hidden);
    compute_stats(e);
    e->st.load_s = pf_now() - t0;
    char cpu[200];
    pf_cpu_describe(cpu, sizeof cpu);
    pf_info("engine", "precision %s on %s: %.0f MB of weights (vision %.0f MB, decoder + LM head %.0f MB) converted "
                      "in %.1f s, %d threads",
            pf_precision_name(e->prec), cpu, (double)e->st.weight_bytes / 1e6, (double)e->st.vision_weight_bytes / 1e6,
            (double)e->st.decode_weight_bytes / 1e6, e->st.load_s, omp_get_max_threads());
    *out = e;
    return 0;
}

void pf_engine_free(pf_engine *e)
{
    if (!e)
        return;
    pf_linear_destroy(e->patch);
    pf_linear_destroy(e->proj);
    pf_linear_destroy(e->lm_head);
    for (int i = 0; e->v && i < e->m->cfg.vision.layers; i++) {
        pf_linear_destroy(e->v[i].qkv);
        pf_linear_destroy(e->v[i].o);
        pf_linear_destroy(e->v[i].fc1);
        pf_linear_destroy(e->v[i].fc2);
    }
    for (int i = 0; e->t && i < e->m->cfg.text.layers; i++) {
        pf_linear_destroy(e->t[i].qkv);
        pf_linear_destroy(e->t[i].o);
        pf_linear_destroy(e->t[i].gu);
        pf_linear_destroy(e->t[i].down);
    }
    free(e->v);
    free(e->t);
    free(e->f32);
    pf_mm_engine_destroy(e->mm);
    free(e);
}

const pf_model *pf_engine_model(const pf_engine *e) { return e->m; }
pf_precision pf_engine_precision(const pf_engine *e) { return e->prec; }
void pf_engine_get_stats(const pf_engine *e, pf_engine_stats *st) { *st = e->st; }

/* ---- implementations per shape ---- */

static int check_one(pf_engine_ctx *c, const pf_linear *l, const char *what, const int64_t *ms, int nm, pf_err *err)
{
    int nref = 0;
    for (int i = 0; i < nm; i++) {
        char buf[128];
        pf_err e2 = {{0}};
        if (pf_linear_impl(c->mm, l, ms[i], 0, buf, sizeof buf, &e2) != 0) {
            if (strstr(e2.msg, "reference implementation")) {
                pf_warn("engine", "%s: %s", what, e2.msg);
                nref++;
                continue;
            }
            *err = e2;
            return -1;
        }
        if (strstr(buf, "ref:"))
            nref++;
        pf_debug("engine", "%s N=%lld K=%lld M=%lld: %s", what, (long long)pf_linear_n(l), (long long)pf_linear_k(l),
                 (long long)ms[i], buf);
    }
    return nref;
}

int pf_engine_check_impls(pf_engine_ctx *c, const int64_t *ms, int nm, pf_err *err)
{
    const pf_engine *e = c->e;
    /* Every layer of a kind has the same shape: the first of each is enough. */
    struct {
        const pf_linear *l;
        const char *what;
    } ls[] = {
        {e->patch, "vision patch"}, {e->v[0].qkv, "vision qkv"}, {e->v[0].o, "vision out"},
        {e->v[0].fc1, "vision fc1"}, {e->v[0].fc2, "vision fc2"}, {e->proj, "projector"},
        {e->t[0].qkv, "text qkv"},   {e->t[0].o, "text o"},       {e->t[0].gu, "text gate_up"},
        {e->t[0].down, "text down"}, {e->lm_head, "lm_head"},
    };
    int total = 0;
    for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++) {
        int r = check_one(c, ls[i].l, ls[i].what, ms, nm, err);
        if (r < 0)
            return -1;
        total += r;
    }
    return total;
}
