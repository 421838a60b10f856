/* engine_vision.c - SigLIP vision tower + projector for a batch of images in one pass (quirks 6, 13): the
 * linear layers run over all images' patches at once, attention per image (tiled), the MLP in row chunks so
 * memory stays bounded at 896 px. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "model/engine/engine_internal.h"

#define MLP_ROWS 1024

static int fwd(pf_engine_ctx *c, const pf_linear *l, int64_t m, const float *x, float *y, unsigned flags, pf_err *err)
{
    return pf_linear_forward(c->mm, l, m, x, pf_linear_k(l), y, pf_linear_n(l), flags, err);
}

int pf_eng_vision(pf_engine_ctx *c, const float *const *pixels, size_t nimg, float *const *feats, pf_err *err)
{
    const pf_engine *e = c->e;
    const pf_vision_config *vc = &e->m->cfg.vision;
    const size_t P = (size_t)vc->num_patches, D = (size_t)vc->hidden, I = (size_t)vc->intermediate;
    const size_t ps = (size_t)vc->patch_size, C = (size_t)vc->channels, S = (size_t)vc->image_size;
    const size_t side = S / ps, plen = C * ps * ps, R = nimg * P, Dt = (size_t)e->m->cfg.text.hidden;
    const size_t ch = (R + (R + MLP_ROWS - 1) / MLP_ROWS - 1) / ((R + MLP_ROWS - 1) / MLP_ROWS); /* even chunks */
    int nth = omp_get_max_threads();
    float *x = pf_eng_scratch(c, SCR_X, R * D * sizeof(float), err);
    float *h = x ? pf_eng_scratch(c, SCR_H, R * D * sizeof(float), err) : NULL;
    float *qkv = h ? pf_eng_scratch(c, SCR_QKV, R * 3 * D * sizeof(float), err) : NULL;
    float *att = qkv ? pf_eng_scratch(c, SCR_ATT, R * D * sizeof(float), err) : NULL;
    float *t = att ? pf_eng_scratch(c, SCR_MLP, ch * (I > plen ? I : plen) * sizeof(float), err) : NULL;
    float *work = t ? pf_eng_scratch(c, SCR_ATTN_WORK,
                                     (size_t)nth * pf_eng_attn_prefill_work(vc->head_dim) * sizeof(float), err)
                    : NULL;
    if (!work)
        return -1;

    pf_eng_prof_mark(c, -1);
    /* Patch embedding: Conv2d(kernel = stride = patch) as a matmul over gathered patches (patch index =
     * row * side + col), in chunks of rows through t; plus the position embedding. */
    for (size_t r0 = 0; r0 < R; r0 += ch) {
        size_t nr = R - r0 < ch ? R - r0 : ch;
#pragma omp parallel for schedule(static)
        for (size_t r = 0; r < nr; r++) {
            size_t img = (r0 + r) / P, pi = (r0 + r) % P, pr = pi / side, pc = pi % side;
            float *dst = t + r * plen;
            const float *px = pixels[img];
            for (size_t ci = 0; ci < C; ci++)
                for (size_t ky = 0; ky < ps; ky++)
                    memcpy(dst + (ci * ps + ky) * ps, px + (ci * S + pr * ps + ky) * S + pc * ps, sizeof(float) * ps);
        }
        if (fwd(c, e->patch, (int64_t)nr, t, x + r0 * D, 0, err) != 0)
            return -1;
    }
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < R; r++)
        for (size_t k = 0; k < D; k++)
            x[r * D + k] += e->pos_emb[(r % P) * D + k];

    eng_attn a = {.heads = vc->heads, .kv_heads = vc->heads, .head_dim = vc->head_dim,
                  .scale = (float)pow((double)vc->head_dim, -0.5)};
    eng_attn_row rows[64];
    for (int l = 0; l < vc->layers; l++) {
        const eng_vlayer *L = &e->v[l];
        pf_eng_prof_mark(c, PROF_VISION_LIN);
        pf_eng_layernorm(h, x, L->ln1_w, L->ln1_b, R, D, vc->layer_norm_eps);
        pf_eng_prof_mark(c, PROF_VISION_OTHER);
        if (fwd(c, L->qkv, (int64_t)R, h, qkv, 0, err) != 0)
            return -1;
        pf_eng_prof_mark(c, PROF_VISION_LIN);
        /* no mask: every patch of an image sees every patch of that image */
        for (size_t i0 = 0; i0 < nimg; i0 += 64) {
            size_t nb = nimg - i0 < 64 ? nimg - i0 : 64;
            for (size_t i = 0; i < nb; i++) {
                const float *q = qkv + (i0 + i) * P * 3 * D;
                rows[i] = (eng_attn_row){.q = q, .k = q + D, .v = q + 2 * D, .out = att + (i0 + i) * P * D, .n = P};
            }
            pf_eng_attn_prefill(&a, rows, nb, 3 * D, 3 * D, D, work, nth);
        }
        pf_eng_prof_mark(c, PROF_VISION_ATTN);
        if (fwd(c, L->o, (int64_t)R, att, x, PF_LINEAR_ACCUMULATE, err) != 0)
            return -1;
        pf_eng_prof_mark(c, PROF_VISION_LIN);
        pf_eng_layernorm(h, x, L->ln2_w, L->ln2_b, R, D, vc->layer_norm_eps);
        pf_eng_prof_mark(c, PROF_VISION_OTHER);
        for (size_t r0 = 0; r0 < R; r0 += ch) {
            size_t nr = R - r0 < ch ? R - r0 : ch;
            if (fwd(c, L->fc1, (int64_t)nr, h + r0 * D, t, 0, err) != 0)
                return -1;
            pf_eng_prof_mark(c, PROF_VISION_LIN);
            if (vc->act == PF_ACT_GELU)
                pf_eng_gelu_erf(t, nr * I);
            else
                pf_eng_gelu_tanh(t, nr * I);
            pf_eng_prof_mark(c, PROF_VISION_OTHER);
            if (fwd(c, L->fc2, (int64_t)nr, t, x + r0 * D, PF_LINEAR_ACCUMULATE, err) != 0)
                return -1;
        }
    }
    pf_eng_prof_mark(c, PROF_VISION_LIN);
    pf_eng_layernorm(h, x, e->post_ln_w, e->post_ln_b, R, D, vc->layer_norm_eps);
    pf_eng_prof_mark(c, PROF_VISION_OTHER);
    /* Projector (plain Linear), then / sqrt(text hidden), straight into each image's output. */
    float norm = (float)sqrt((double)e->m->cfg.text.hidden);
    for (size_t i = 0; i < nimg; i++) {
        if (fwd(c, e->proj, (int64_t)P, h + i * P * D, feats[i], 0, err) != 0)
            return -1;
        float *f = feats[i];
#pragma omp parallel for schedule(static)
        for (size_t k = 0; k < P * Dt; k++)
            f[k] = f[k] / norm;
    }
    pf_eng_prof_mark(c, PROF_VISION_LIN);
    return 0;
}
