/* ref_vision.c - SigLIP vision tower and the multimodal projector (quirks 6 and 13). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/ref/ref.h"

#define MLP_CHUNK 256 /* rows of the MLP intermediate computed at once (bounds memory at 896 px) */

static void debug(const pf_ref_debug *dbg, const char *name, const float *x, size_t rows, size_t cols)
{
    if (dbg && dbg->fn)
        dbg->fn(dbg->ctx, name, x, rows, cols);
}

size_t pf_ref_vision_scratch_floats(const pf_config *c)
{
    size_t P = (size_t)c->vision.num_patches, Dv = (size_t)c->vision.hidden, I = (size_t)c->vision.intermediate;
    size_t ch = P < MLP_CHUNK ? P : MLP_CHUNK;
    size_t patch = (size_t)c->vision.channels * (size_t)c->vision.patch_size * (size_t)c->vision.patch_size;
    size_t layer = 4 * P * Dv + ch * I;
    size_t embed = P * patch;
    /* x [P][Dv] lives throughout; the patch matrix only before the layers. */
    return P * Dv + (layer > embed ? layer : embed);
}

/* Pre-LN encoder layer: x += attn(LN1(x)); x += mlp(LN2(x)). scratch: 4*P*Dv + min(P,CHUNK)*I floats. */
static int vision_layer(const pf_vision_config *vc, const pf_vision_layer_w *L, float *x, size_t P, float *scratch)
{
    size_t D = (size_t)vc->hidden, I = (size_t)vc->intermediate;
    float *h = scratch, *q = h + P * D, *k = q + P * D, *v = k + P * D, *t = v + P * D;

    pf_ref_layernorm(h, x, L->ln1_w, L->ln1_b, P, D, vc->layer_norm_eps);
    pf_ref_linear(q, h, L->q_w, L->q_b, P, D, D);
    pf_ref_linear(k, h, L->k_w, L->k_b, P, D, D);
    pf_ref_linear(v, h, L->v_w, L->v_b, P, D, D);
    pf_ref_attn a = {.heads = vc->heads, .kv_heads = vc->heads, .head_dim = vc->head_dim,
                     .scale = (float)pow((double)vc->head_dim, -0.5), .n_bidir = P};
    if (pf_ref_attention(&a, q, P, 0, k, v, P, D, q, NULL) != 0) /* no mask: every patch sees every patch */
        return -1;
    pf_ref_linear(h, q, L->o_w, L->o_b, P, D, D);
    for (size_t i = 0; i < P * D; i++)
        x[i] += h[i];

    pf_ref_layernorm(h, x, L->ln2_w, L->ln2_b, P, D, vc->layer_norm_eps);
    for (size_t r0 = 0; r0 < P; r0 += MLP_CHUNK) {
        size_t nr = P - r0 < MLP_CHUNK ? P - r0 : MLP_CHUNK;
        pf_ref_linear(t, h + r0 * D, L->fc1_w, L->fc1_b, nr, D, I);
        if (vc->act == PF_ACT_GELU)
            pf_ref_gelu_erf(t, nr * I);
        else
            pf_ref_gelu_tanh(t, nr * I);
        pf_ref_linear(q, t, L->fc2_w, L->fc2_b, nr, I, D);
        for (size_t i = 0; i < nr * D; i++)
            x[r0 * D + i] += q[i];
    }
    return 0;
}

int pf_ref_vision_layer(const pf_vision_config *vc, const pf_vision_layer_w *L, float *x, size_t P, pf_err *err)
{
    size_t D = (size_t)vc->hidden, I = (size_t)vc->intermediate, ch = P < MLP_CHUNK ? P : MLP_CHUNK;
    float *scratch = malloc(sizeof(float) * (4 * P * D + ch * I));
    if (!scratch)
        return pf_errf(err, "vision layer: out of memory");
    int rc = vision_layer(vc, L, x, P, scratch);
    free(scratch);
    return rc ? pf_errf(err, "vision layer: out of memory") : 0;
}

int pf_ref_image_features(const pf_model *m, const float *pixels, float *out, const pf_ref_debug *dbg, pf_err *err)
{
    const pf_vision_config *vc = &m->cfg.vision;
    size_t P = (size_t)vc->num_patches, D = (size_t)vc->hidden, ps = (size_t)vc->patch_size;
    size_t C = (size_t)vc->channels, S = (size_t)vc->image_size, side = S / ps, plen = C * ps * ps;
    size_t I = (size_t)vc->intermediate, ch = P < MLP_CHUNK ? P : MLP_CHUNK;
    size_t layer = 4 * P * D + ch * I, embed = P * plen;
    float *x = malloc(sizeof(float) * P * D);
    float *scratch = malloc(sizeof(float) * (layer > embed ? layer : embed));
    if (!x || !scratch) {
        free(x);
        free(scratch);
        return pf_errf(err, "image features: out of memory");
    }

    /* Patch embedding: Conv2d(kernel = stride = patch, valid) as a matmul over gathered patches, patch
     * index = row * side + col, plus the learned position embedding (no CLS token, no interpolation). */
    float *patches = scratch;
    for (size_t pr = 0; pr < side; pr++)
        for (size_t pc = 0; pc < side; pc++) {
            float *dst = patches + (pr * side + pc) * plen;
            for (size_t c = 0; c < C; c++)
                for (size_t ky = 0; ky < ps; ky++)
                    memcpy(dst + (c * ps + ky) * ps, pixels + (c * S + pr * ps + ky) * S + pc * ps,
                           sizeof(float) * ps);
        }
    pf_ref_linear(x, patches, m->patch_w, m->patch_b, P, plen, D);
    for (size_t i = 0; i < P * D; i++)
        x[i] += m->pos_emb[i];
    debug(dbg, "vision_embeddings", x, P, D);

    char name[64];
    for (int l = 0; l < vc->layers; l++) {
        if (vision_layer(vc, &m->vlayers[l], x, P, scratch) != 0) {
            free(x);
            free(scratch);
            return pf_errf(err, "image features: out of memory");
        }
        snprintf(name, sizeof name, "vision_layer_%d", l);
        debug(dbg, name, x, P, D);
    }
    pf_ref_layernorm(x, x, m->post_ln_w, m->post_ln_b, P, D, vc->layer_norm_eps);
    debug(dbg, "vision_post_layernorm", x, P, D);

    /* Projector (plain Linear; projector_hidden_act is ignored by transformers), then / sqrt(text hidden). */
    size_t Dt = (size_t)m->cfg.text.hidden;
    pf_ref_linear(out, x, m->proj_w, m->proj_b, P, D, Dt);
    float norm = (float)sqrt((double)m->cfg.text.hidden);
    for (size_t i = 0; i < P * Dt; i++)
        out[i] = out[i] / norm;
    free(x);
    free(scratch);
    return 0;
}
