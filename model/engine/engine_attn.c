/* engine_attn.c - attention for the engine, fp32 at every precision.
 *
 * Prefill (and the vision tower): tiled with an online softmax, so no [heads, N, N] (or even [N, N]) score
 * matrix exists: per (row, head, block of BQ queries), key blocks of BK: S = Q K^T and O += P V are
 * oneDNN sgemm calls (single-threaded inside our OpenMP loop over the work items), scaling, soft-cap, mask
 * and the softmax update are vectorized leaf functions.
 * Decode: one query per head against the sequence's KV pages: a score pass per page (the query heads of a
 * kv head share each key row), an exact softmax over all keys, then a weighted sum of the V rows.
 */
#include <dnnl.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "base/simd.h"
#include "model/engine/engine_internal.h"
#include "model/math/vec_math.h"

#define BQ 128
#define BK 512

size_t pf_eng_attn_prefill_work(int head_dim)
{
    /* S [BQ][BK], acc [BQ][hd], m [BQ], l [BQ], 64-float alignment slack */
    return (size_t)BQ * BK + (size_t)BQ * (size_t)head_dim + 2 * BQ + 64;
}

/* One query row of a score block: scale, soft-cap, mask (visible() only if masked), online softmax update.
 * s[c] becomes the probability (0 where masked). Returns the factor acc must be multiplied by. */
PF_SIMD_CLONES(static, float, softmax_block_row,
               (float *restrict s, size_t kb, float scale, float softcap, const uint8_t *restrict vis, float *m,
                float *l),
               (s, kb, scale, softcap, vis, m, l))
{
    float bm = -INFINITY;
    if (softcap > 0) {
        for (size_t c = 0; c < kb; c++)
            s[c] = pf_eng_tanh(s[c] * scale / softcap) * softcap;
    } else {
        for (size_t c = 0; c < kb; c++)
            s[c] *= scale;
    }
    if (vis) {
        for (size_t c = 0; c < kb; c++)
            s[c] = vis[c] ? s[c] : -INFINITY;
    }
    for (size_t c = 0; c < kb; c++)
        bm = s[c] > bm ? s[c] : bm;
    if (bm == -INFINITY) { /* nothing visible in this block */
        for (size_t c = 0; c < kb; c++)
            s[c] = 0.0f;
        return 1.0f;
    }
    float mnew = *m > bm ? *m : bm;
    float alpha = *m == -INFINITY ? 0.0f : pf_eng_exp(*m - mnew);
    float sumv = 0;
    if (vis) {
        for (size_t c = 0; c < kb; c++) {
            float e = pf_eng_exp(s[c] - mnew);
            s[c] = vis[c] ? e : 0.0f;
            sumv += s[c];
        }
    } else {
        for (size_t c = 0; c < kb; c++) {
            s[c] = pf_eng_exp(s[c] - mnew);
            sumv += s[c];
        }
    }
    *l = *l * alpha + sumv;
    *m = mnew;
    return alpha;
}

PF_SIMD_CLONES(static, void, scale_row, (float *restrict x, size_t n, float f), (x, n, f))
{
    for (size_t i = 0; i < n; i++)
        x[i] *= f;
}

static inline int visible(const eng_attn *a, const int32_t *tt, size_t i, size_t j)
{
    if (a->window > 0 && (long long)j <= (long long)i - a->window)
        return 0;
    if (j <= i || !tt)
        return 1;
    return tt[j] == 0;
}

static void prefill_item(const eng_attn *a, const eng_attn_row *r, int h, size_t q0, size_t ldq, size_t ldkv,
                         size_t ldo, float *work)
{
    const int hd = a->head_dim, group = a->heads / a->kv_heads;
    const size_t nb = r->n - q0 < BQ ? r->n - q0 : BQ;
    float *S = work, *acc = S + (size_t)BQ * BK, *m = acc + (size_t)BQ * (size_t)hd, *l = m + BQ;
    uint8_t vis[BK];
    const float *Q = r->q + q0 * ldq + (size_t)h * (size_t)hd;
    const float *K = r->k + (size_t)(h / group) * (size_t)hd, *V = r->v + (size_t)(h / group) * (size_t)hd;
    bool masked = a->window > 0 || r->token_type;
    memset(acc, 0, sizeof(float) * nb * (size_t)hd);
    for (size_t i = 0; i < nb; i++) {
        m[i] = -INFINITY;
        l[i] = 0;
    }
    for (size_t j0 = 0; j0 < r->n; j0 += BK) {
        size_t kb = r->n - j0 < BK ? r->n - j0 : BK;
        /* key blocks no query of this tile can see */
        if (a->window > 0 && (long long)(j0 + kb - 1) <= (long long)q0 - a->window)
            continue;
        if (r->token_type && j0 > q0 + nb - 1) {
            bool any = false;
            for (size_t c = 0; c < kb && !any; c++)
                any = r->token_type[j0 + c] == 0;
            if (!any)
                continue;
        }
        dnnl_sgemm('N', 'T', (dnnl_dim_t)nb, (dnnl_dim_t)kb, hd, 1.0f, Q, (dnnl_dim_t)ldq, K + j0 * ldkv,
                   (dnnl_dim_t)ldkv, 0.0f, S, BK);
        for (size_t i = 0; i < nb; i++) {
            if (masked)
                for (size_t c = 0; c < kb; c++)
                    vis[c] = (uint8_t)visible(a, r->token_type, q0 + i, j0 + c);
            float alpha = softmax_block_row(S + i * BK, kb, a->scale, a->softcap, masked ? vis : NULL, &m[i], &l[i]);
            if (alpha != 1.0f)
                scale_row(acc + i * (size_t)hd, (size_t)hd, alpha);
        }
        dnnl_sgemm('N', 'N', (dnnl_dim_t)nb, hd, (dnnl_dim_t)kb, 1.0f, S, BK, V + j0 * ldkv, (dnnl_dim_t)ldkv, 1.0f,
                   acc, hd);
    }
    for (size_t i = 0; i < nb; i++) {
        float *o = r->out + (q0 + i) * ldo + (size_t)h * (size_t)hd;
        float inv = 1.0f / l[i];
        for (int d = 0; d < hd; d++)
            o[d] = acc[i * (size_t)hd + (size_t)d] * inv;
    }
}

void pf_eng_attn_prefill(const eng_attn *a, const eng_attn_row *rows, size_t nrows, size_t ldq, size_t ldkv,
                         size_t ldo, float *work, int nthreads)
{
    size_t total = 0;
    for (size_t r = 0; r < nrows; r++)
        total += (size_t)a->heads * ((rows[r].n + BQ - 1) / BQ);
    size_t per = pf_eng_attn_prefill_work(a->head_dim);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (size_t it = 0; it < total; it++) {
        size_t rem = it, r = 0;
        for (; r < nrows; r++) {
            size_t nblk = (size_t)a->heads * ((rows[r].n + BQ - 1) / BQ);
            if (rem < nblk)
                break;
            rem -= nblk;
        }
        size_t qblocks = (rows[r].n + BQ - 1) / BQ;
        int h = (int)(rem / qblocks);
        size_t q0 = (rem % qblocks) * BQ;
        float *w = work + (size_t)omp_get_thread_num() * per;
        w = (float *)(((uintptr_t)w + 63) & ~(uintptr_t)63);
        prefill_item(a, &rows[r], h, q0, ldq, ldkv, ldo, w);
    }
}

/* ---- decode ---- */

size_t pf_eng_attn_decode_work(const eng_attn *a, size_t max_len)
{
    size_t g = (size_t)(a->heads / a->kv_heads);
    return g * (max_len + 1) + g * (size_t)a->head_dim + g + 64;
}

/* softmax over s[j0..n) in place (soft-cap first); returns 1 / sum. */
PF_SIMD_CLONES(static, float, softmax_full, (float *restrict s, size_t j0, size_t n, float softcap),
               (s, j0, n, softcap))
{
    float mx = -INFINITY, sumv = 0;
    if (softcap > 0)
        for (size_t j = j0; j < n; j++)
            s[j] = pf_eng_tanh(s[j] / softcap) * softcap;
    for (size_t j = j0; j < n; j++)
        mx = s[j] > mx ? s[j] : mx;
    for (size_t j = j0; j < n; j++) {
        s[j] = pf_eng_exp(s[j] - mx);
        sumv += s[j];
    }
    return 1.0f / sumv;
}

void pf_eng_attn_decode(const eng_attn *a, const eng_kvpool *p, int layer, pf_engine_seq *const *seqs,
                        const float *q, size_t ldq, float *out, size_t ldo, size_t n, float *work,
                        size_t work_per_thread)
{
    const int hd = a->head_dim, g = a->heads / a->kv_heads;
    size_t items = n * (size_t)a->kv_heads;
    pf_eng_scores_fn page_scores;
    pf_eng_values_fn page_values;
    pf_eng_attn_kernels(&page_scores, &page_values);
#pragma omp parallel for schedule(dynamic, 1) if (items > 1)
    for (size_t it = 0; it < items; it++) {
        size_t i = it / (size_t)a->kv_heads;
        int kvh = (int)(it % (size_t)a->kv_heads);
        const pf_engine_seq *s = seqs[i];
        size_t nk = s->len + 1, qi = s->len; /* the new token's K/V are at index len */
        size_t j0 = 0;
        if (a->window > 0 && qi + 1 > (size_t)a->window)
            j0 = qi + 1 - (size_t)a->window; /* keys j <= qi - window are hidden */
        float *w = work + (size_t)omp_get_thread_num() * work_per_thread;
        float *S = w, *acc = S + (size_t)g * nk;
        const float *qh = q + i * ldq + (size_t)kvh * (size_t)g * (size_t)hd;
        size_t koff = (size_t)kvh * (size_t)hd;
        for (size_t pj = j0 / PF_ENGINE_PAGE * PF_ENGINE_PAGE; pj < nk; pj += PF_ENGINE_PAGE) {
            size_t a0 = pj < j0 ? j0 : pj, a1 = pj + PF_ENGINE_PAGE < nk ? pj + PF_ENGINE_PAGE : nk;
            const float *kp = pf_eng_kv_k(p, s, layer, a0) + koff;
            page_scores(qh, (size_t)hd, g, hd, kp, p->kv_dim, a1 - a0, a->scale, S + a0, nk);
        }
        float *inv = acc + (size_t)g * (size_t)hd;
        for (int h = 0; h < g; h++)
            inv[h] = softmax_full(S + (size_t)h * nk, j0, nk, a->softcap);
        memset(acc, 0, sizeof(float) * (size_t)g * (size_t)hd);
        for (size_t pj = j0 / PF_ENGINE_PAGE * PF_ENGINE_PAGE; pj < nk; pj += PF_ENGINE_PAGE) {
            size_t a0 = pj < j0 ? j0 : pj, a1 = pj + PF_ENGINE_PAGE < nk ? pj + PF_ENGINE_PAGE : nk;
            const float *vp = pf_eng_kv_k(p, s, layer, a0) + (size_t)PF_ENGINE_PAGE * p->kv_dim + koff;
            page_values(S + a0, nk, g, hd, vp, p->kv_dim, a1 - a0, acc);
        }
        for (int h = 0; h < g; h++) {
            float *o = out + i * ldo + ((size_t)kvh * (size_t)g + (size_t)h) * (size_t)hd;
            float f = inv[h];
            for (int d = 0; d < hd; d++)
                o[d] = acc[(size_t)h * (size_t)hd + (size_t)d] * f;
        }
    }
}
