/* engine_text.c - the Gemma / Gemma 2 decoder over a ragged batch (prefill) and one decode step for a batch
 * of sequences; logits only for the rows asked for. Quirk numbers refer to ../shared/golden/model/README.md.
 *
 * Prefill: the rows' tokens are stacked into one [M, D] activation (no padding): every linear layer is one
 * matmul over all M tokens, RoPE uses each row's own positions 1..n, attention runs per row. Decode: one
 * token per sequence, the same layers with M = number of sequences, attention over each one's KV pages.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/engine/engine_internal.h"

#define MLP_ROWS 512

static int fwd(pf_engine_ctx *c, const pf_linear *l, int64_t m, const float *x, float *y, unsigned flags, pf_err *err)
{
    return pf_linear_forward(c->mm, l, m, x, pf_linear_k(l), y, pf_linear_n(l), flags, err);
}

static eng_attn attn_params(const pf_engine *e, int layer)
{
    const pf_text_config *t = &e->m->cfg.text;
    eng_attn a = {.heads = t->heads, .kv_heads = t->kv_heads, .head_dim = t->head_dim};
    if (t->kind == PF_TEXT_GEMMA2) {
        a.scale = (float)pow((double)t->query_pre_attn_scalar, -0.5); /* quirk 12 */
        a.softcap = t->attn_logit_softcapping;
        a.window = pf_config_layer_is_sliding(&e->m->cfg, layer) ? t->sliding_window : 0;
    } else {
        a.scale = (float)(1.0 / sqrt((double)t->head_dim)); /* quirk 5 */
    }
    return a;
}

typedef struct text_bufs {
    float *x, *h, *qkv, *att, *t, *gu, *act;
    int64_t *pos;
    size_t M, ch;
} text_bufs;

static int get_bufs(pf_engine_ctx *c, size_t M, text_bufs *b, pf_err *err)
{
    const pf_text_config *t = &c->e->m->cfg.text;
    size_t D = (size_t)t->hidden, I = (size_t)t->intermediate, hd = (size_t)t->head_dim;
    size_t qd = (size_t)t->heads * hd, qkvd = qd + 2 * (size_t)t->kv_heads * hd;
    b->M = M;
    b->ch = (M + (M + MLP_ROWS - 1) / MLP_ROWS - 1) / ((M + MLP_ROWS - 1) / MLP_ROWS); /* even chunks <= MLP_ROWS */
    b->x = pf_eng_scratch(c, SCR_X, M * D * sizeof(float), err);
    b->h = b->x ? pf_eng_scratch(c, SCR_H, M * D * sizeof(float), err) : NULL;
    b->qkv = b->h ? pf_eng_scratch(c, SCR_QKV, M * qkvd * sizeof(float), err) : NULL;
    b->att = b->qkv ? pf_eng_scratch(c, SCR_ATT, M * qd * sizeof(float), err) : NULL;
    b->t = b->att ? pf_eng_scratch(c, SCR_T, M * D * sizeof(float), err) : NULL;
    b->gu = b->t ? pf_eng_scratch(c, SCR_MLP, b->ch * 2 * I * sizeof(float), err) : NULL;
    b->act = b->gu ? pf_eng_scratch(c, SCR_ACT, b->ch * I * sizeof(float), err) : NULL;
    b->pos = b->act ? pf_eng_scratch(c, SCR_POS, M * sizeof(int64_t), err) : NULL;
    return b->pos ? 0 : -1;
}

/* After attention: o_proj, residual, MLP (in row chunks), residual. x holds the residual stream, att the
 * attention output [M][qd]; h, t, gu, act are scratch. */
static int layer_tail(pf_engine_ctx *c, const eng_tlayer *L, text_bufs *b, pf_err *err)
{
    const pf_text_config *tc = &c->e->m->cfg.text;
    size_t D = (size_t)tc->hidden, I = (size_t)tc->intermediate, M = b->M;
    int gemma2 = tc->kind == PF_TEXT_GEMMA2;
    float eps = tc->rms_norm_eps;
    if (gemma2) { /* h = pre_ff_norm(x += post_attn_norm(o_proj(att))) (quirk 12) */
        if (fwd(c, L->o, (int64_t)M, b->att, b->t, 0, err) != 0)
            return -1;
        pf_eng_prof_mark(c, PROF_O);
        pf_eng_residual_norm(b->x, D, b->t, D, L->post_attn_norm, b->h, D, L->pre_ff_norm, M, D, eps);
    } else { /* x += o_proj(att); h = post_attention_layernorm(x) */
        if (fwd(c, L->o, (int64_t)M, b->att, b->x, PF_LINEAR_ACCUMULATE, err) != 0)
            return -1;
        pf_eng_prof_mark(c, PROF_O);
        pf_eng_residual_norm(b->x, D, NULL, 0, NULL, b->h, D, L->post_attn_norm, M, D, eps);
    }
    pf_eng_prof_mark(c, PROF_NORM);
    for (size_t r0 = 0; r0 < M; r0 += b->ch) {
        size_t nr = M - r0 < b->ch ? M - r0 : b->ch;
        if (fwd(c, L->gu, (int64_t)nr, b->h + r0 * D, b->gu, 0, err) != 0)
            return -1;
        pf_eng_prof_mark(c, PROF_GATE_UP);
        pf_eng_gelu_mul(b->act, b->gu, nr, I, tc->act == PF_ACT_GELU);
        pf_eng_prof_mark(c, PROF_ACT);
        if (gemma2) {
            if (fwd(c, L->down, (int64_t)nr, b->act, b->t + r0 * D, 0, err) != 0)
                return -1;
            pf_eng_prof_mark(c, PROF_DOWN);
            pf_eng_residual_norm(b->x + r0 * D, D, b->t + r0 * D, D, L->post_ff_norm, NULL, 0, NULL, nr, D, eps);
            pf_eng_prof_mark(c, PROF_NORM);
        } else if (fwd(c, L->down, (int64_t)nr, b->act, b->x + r0 * D, PF_LINEAR_ACCUMULATE, err) != 0) {
            return -1;
        } else {
            pf_eng_prof_mark(c, PROF_DOWN);
        }
    }
    return 0;
}

/* logits of `n` rows of the residual stream (row indices idx[] into x): final norm, LM head, soft-cap.
 * out[i] is where row i's V logits go; written in one matmul when they are consecutive. */
/* y [n][V] = soft-capped LM head of the final norm of in [n][D] (in is normalized in place). */
static int final_logits(pf_engine_ctx *c, float *in, size_t n, float *y, pf_err *err)
{
    const pf_engine *e = c->e;
    const pf_text_config *tc = &e->m->cfg.text;
    size_t D = (size_t)tc->hidden, V = (size_t)tc->vocab_size;
    pf_eng_residual_norm(in, D, NULL, 0, NULL, in, D, e->final_norm, n, D, tc->rms_norm_eps);
    if (fwd(c, e->lm_head, (int64_t)n, in, y, 0, err) != 0)
        return -1;
    if (tc->final_logit_softcapping > 0)
        pf_eng_softcap(y, n * V, tc->final_logit_softcapping);
    pf_eng_prof_mark(c, PROF_LM_HEAD);
    return 0;
}

/* Logits of the hidden rows x[idx[i]] into out[i] (only the rows asked for reach the LM head). */
static int logits_rows(pf_engine_ctx *c, const float *x, const size_t *idx, size_t n, float *const *out, pf_err *err)
{
    const pf_text_config *tc = &c->e->m->cfg.text;
    size_t D = (size_t)tc->hidden, V = (size_t)tc->vocab_size;
    if (n == 0)
        return 0;
    float *in = pf_eng_scratch(c, SCR_LOGIT_IN, n * D * sizeof(float), err);
    if (!in)
        return -1;
    for (size_t i = 0; i < n; i++)
        memcpy(in + i * D, x + idx[i] * D, D * sizeof(float));
    int consecutive = 1;
    for (size_t i = 1; i < n && consecutive; i++)
        consecutive = out[i] == out[0] + i * V;
    float *y = consecutive ? out[0] : pf_eng_scratch(c, SCR_T, n * V * sizeof(float), err);
    if (!y || final_logits(c, in, n, y, err) != 0)
        return -1;
    if (!consecutive)
        for (size_t i = 0; i < n; i++)
            memcpy(out[i], y + i * V, V * sizeof(float));
    return 0;
}

int pf_eng_text_prefill(pf_engine_ctx *c, const pf_engine_row *rows, size_t nrows, const float *const *row_feats,
                        pf_err *err)
{
    const pf_engine *e = c->e;
    const pf_config *cfg = &e->m->cfg;
    const pf_text_config *tc = &cfg->text;
    size_t D = (size_t)tc->hidden, hd = (size_t)tc->head_dim, V = (size_t)tc->vocab_size;
    size_t qd = (size_t)tc->heads * hd, kvd = (size_t)tc->kv_heads * hd, qkvd = qd + 2 * kvd;
    size_t M = 0, nlog = 0;
    for (size_t r = 0; r < nrows; r++) {
        M += rows[r].n;
        if (rows[r].logits)
            nlog += rows[r].logit_rows ? rows[r].n_logit_rows : 1;
    }
    text_bufs b;
    if (get_bufs(c, M, &b, err) != 0)
        return -1;
    size_t *lidx = malloc((nlog ? nlog : 1) * sizeof *lidx);
    float **lout = malloc((nlog ? nlog : 1) * sizeof *lout);
    eng_attn_row *ar = malloc((nrows ? nrows : 1) * sizeof *ar);
    int nth = omp_get_max_threads(), rc = -1;
    float *work = pf_eng_scratch(c, SCR_ATTN_WORK, (size_t)nth * pf_eng_attn_prefill_work(tc->head_dim) * sizeof(float),
                                 err);
    if (!lidx || !lout || !ar || !work) {
        if (work)
            pf_errf(err, "engine: out of memory");
        goto done;
    }

    /* Embeddings with image features at <image> positions, times sqrt(hidden) (quirks 1, 6); positions
     * 1..n per row (quirk 7); where the logits go. */
    pf_eng_prof_mark(c, -1);
    size_t r0 = 0, k = 0;
    for (size_t r = 0; r < nrows; r++) {
        const pf_engine_row *row = &rows[r];
        size_t next = 0;
        for (size_t i = 0; i < row->n; i++) {
            int32_t id = row->ids[i];
            float *xi = b.x + (r0 + i) * D;
            if (row->num_images > 0 && id == cfg->image_token_index) {
                const float *f = row_feats[r] + next++ * D;
                for (size_t d = 0; d < D; d++)
                    xi[d] = f[d] * e->embed_scale;
            } else {
                pf_eng_embed_rows(e->embed, &id, 1, D, e->embed_scale, xi, D);
            }
            b.pos[r0 + i] = (int64_t)i + 1;
        }
        if (row->logits) {
            if (!row->logit_rows) {
                lidx[k] = r0 + row->n - 1;
                lout[k++] = row->logits;
            } else {
                for (size_t j = 0; j < row->n_logit_rows; j++) {
                    lidx[k] = r0 + row->logit_rows[j];
                    lout[k++] = row->logits + j * V;
                }
            }
        }
        r0 += row->n;
    }

    pf_eng_prof_mark(c, PROF_EMBED);
    for (int l = 0; l < tc->layers; l++) {
        const eng_tlayer *L = &e->t[l];
        pf_eng_residual_norm(b.x, D, NULL, 0, NULL, b.h, D, L->in_norm, M, D, tc->rms_norm_eps);
        pf_eng_prof_mark(c, PROF_NORM);
        if (fwd(c, L->qkv, (int64_t)M, b.h, b.qkv, 0, err) != 0)
            goto done;
        pf_eng_prof_mark(c, PROF_QKV);
        pf_eng_rope(b.qkv, qkvd, M, tc->heads, tc->head_dim, b.pos, e->rope_inv);
        pf_eng_rope(b.qkv + qd, qkvd, M, tc->kv_heads, tc->head_dim, b.pos, e->rope_inv);
        r0 = 0;
        for (size_t r = 0; r < nrows; r++) {
            const float *q = b.qkv + r0 * qkvd;
            ar[r] = (eng_attn_row){.q = q, .k = q + qd, .v = q + qd + kvd, .out = b.att + r0 * qd, .n = rows[r].n,
                                   .token_type = rows[r].token_type};
            pf_engine_seq *s = rows[r].seq;
            for (size_t i = 0; s && i < rows[r].n; i++) { /* K (after RoPE, quirk 4) and V into the cache */
                float *kp = pf_eng_kv_k(&c->kv, s, l, i);
                memcpy(kp, q + i * qkvd + qd, kvd * sizeof(float));
                memcpy(kp + (size_t)PF_ENGINE_PAGE * kvd, q + i * qkvd + qd + kvd, kvd * sizeof(float));
            }
            r0 += rows[r].n;
        }
        eng_attn a = attn_params(e, l);
        pf_eng_prof_mark(c, PROF_ROPE_KV);
        pf_eng_attn_prefill(&a, ar, nrows, qkvd, qkvd, qd, work, nth);
        pf_eng_prof_mark(c, PROF_ATTN);
        if (layer_tail(c, L, &b, err) != 0)
            goto done;
    }
    for (size_t r = 0; r < nrows; r++)
        if (rows[r].seq)
            rows[r].seq->len = rows[r].n;
    rc = logits_rows(c, b.x, lidx, k, lout, err);
done:
    free(lidx);
    free(lout);
    free(ar);
    return rc;
}

int pf_engine_decode(pf_engine_ctx *c, pf_engine_seq *const *seqs, const int32_t *tokens, size_t n, float *logits,
                     pf_err *err)
{
    const pf_engine *e = c->e;
    const pf_text_config *tc = &e->m->cfg.text;
    size_t D = (size_t)tc->hidden, hd = (size_t)tc->head_dim, V = (size_t)tc->vocab_size;
    size_t qd = (size_t)tc->heads * hd, kvd = (size_t)tc->kv_heads * hd, qkvd = qd + 2 * kvd, maxlen = 0;
    if (n == 0)
        return 0;
    if (e->threads > 0)
        omp_set_num_threads(e->threads);
    for (size_t i = 0; i < n; i++) {
        if (seqs[i]->len == 0 || seqs[i]->len >= seqs[i]->cap)
            return pf_errf(err, "decode: sequence %zu has %zu/%zu cached positions", i, seqs[i]->len, seqs[i]->cap);
        if (tokens[i] < 0 || (size_t)tokens[i] >= V)
            return pf_errf(err, "decode: token id %d is outside the vocabulary", tokens[i]);
        maxlen = seqs[i]->len > maxlen ? seqs[i]->len : maxlen;
    }
    text_bufs b;
    if (get_bufs(c, n, &b, err) != 0)
        return -1;
    int nth = omp_get_max_threads();
    eng_attn a0 = attn_params(e, 0);
    size_t wpt = (pf_eng_attn_decode_work(&a0, maxlen + 1) + 15) & ~(size_t)15;
    float *work = pf_eng_scratch(c, SCR_ATTN_WORK, (size_t)nth * wpt * sizeof(float), err);
    if (!work)
        return -1;
    pf_eng_prof_mark(c, -1);
    pf_eng_embed_rows(e->embed, tokens, n, D, e->embed_scale, b.x, D);
    for (size_t i = 0; i < n; i++)
        b.pos[i] = (int64_t)seqs[i]->len + 1; /* quirk 7: the prompt had 1..L, then L+1, L+2, ... */
    pf_eng_prof_mark(c, PROF_EMBED);
    for (int l = 0; l < tc->layers; l++) {
        const eng_tlayer *L = &e->t[l];
        pf_eng_residual_norm(b.x, D, NULL, 0, NULL, b.h, D, L->in_norm, n, D, tc->rms_norm_eps);
        pf_eng_prof_mark(c, PROF_NORM);
        if (fwd(c, L->qkv, (int64_t)n, b.h, b.qkv, 0, err) != 0)
            return -1;
        pf_eng_prof_mark(c, PROF_QKV);
        pf_eng_rope(b.qkv, qkvd, n, tc->heads, tc->head_dim, b.pos, e->rope_inv);
        pf_eng_rope(b.qkv + qd, qkvd, n, tc->kv_heads, tc->head_dim, b.pos, e->rope_inv);
        for (size_t i = 0; i < n; i++) {
            float *kp = pf_eng_kv_k(&c->kv, seqs[i], l, seqs[i]->len);
            memcpy(kp, b.qkv + i * qkvd + qd, kvd * sizeof(float));
            memcpy(kp + (size_t)PF_ENGINE_PAGE * kvd, b.qkv + i * qkvd + qd + kvd, kvd * sizeof(float));
        }
        eng_attn a = attn_params(e, l);
        pf_eng_prof_mark(c, PROF_ROPE_KV);
        pf_eng_attn_decode(&a, &c->kv, l, seqs, b.qkv, qkvd, b.att, qd, n, work, wpt);
        pf_eng_prof_mark(c, PROF_ATTN);
        if (layer_tail(c, L, &b, err) != 0)
            return -1;
    }
    for (size_t i = 0; i < n; i++)
        seqs[i]->len++;
    /* every row's logits, in order: no gather, no per-step allocation */
    float *in = pf_eng_scratch(c, SCR_LOGIT_IN, n * D * sizeof(float), err);
    if (!in)
        return -1;
    memcpy(in, b.x, n * D * sizeof(float));
    return final_logits(c, in, n, logits, err);
}
