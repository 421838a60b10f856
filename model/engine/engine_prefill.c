/* engine_prefill.c - pf_engine_prefill: check the rows, get every image's features (from the cache, or from
 * one pass of the vision tower over all new images of the batch, each distinct image once), then the
 * decoder over the ragged batch. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/engine/engine_internal.h"

#define VISION_ROWS 8192 /* patches per vision pass: 32 images at 224 px, 2 at 896 px */

static int check_row(const pf_engine *e, const pf_engine_row *r, size_t i, pf_err *err)
{
    const pf_config *c = &e->m->cfg;
    if (!r->ids || r->n == 0 || r->n > ((size_t)1 << 24))
        return pf_errf(err, "row %zu: %zu tokens", i, r->n);
    if (r->num_images < 0 || (r->num_images > 0 && !r->pixels))
        return pf_errf(err, "row %zu: %d images without pixels", i, r->num_images);
    size_t n_img = 0;
    for (size_t t = 0; t < r->n; t++) {
        if (r->num_images > 0 && r->ids[t] == c->image_token_index)
            n_img++;
        else if (r->ids[t] < 0 || r->ids[t] >= c->text.vocab_size)
            return pf_errf(err, "row %zu: token id %d at position %zu is outside the vocabulary [0, %d)", i, r->ids[t],
                           t, c->text.vocab_size);
    }
    if (r->num_images > 0 && n_img != (size_t)r->num_images * (size_t)c->num_image_tokens)
        return pf_errf(err, "row %zu has %zu <image> tokens (id %d) but %d image(s) x %d image tokens", i, n_img,
                       c->image_token_index, r->num_images, c->num_image_tokens);
    if (r->seq && (r->seq->len != 0 || r->seq->cap < r->n))
        return pf_errf(err, "row %zu: its sequence holds %zu tokens already or cannot take %zu", i, r->seq->len, r->n);
    for (size_t j = 0; r->logits && r->logit_rows && j < r->n_logit_rows; j++)
        if (r->logit_rows[j] >= r->n)
            return pf_errf(err, "row %zu: logits wanted at position %zu of %zu", i, r->logit_rows[j], r->n);
    return 0;
}

/* Features of every image of the batch into feats [T][N][Dt]. */
static int image_features(pf_engine_ctx *c, const pf_engine_row *rows, size_t nrows, size_t T, float *feats,
                          pf_err *err)
{
    const pf_config *cfg = &c->e->m->cfg;
    size_t N = (size_t)cfg->num_image_tokens, F = N * (size_t)cfg->text.hidden;
    size_t img = (size_t)cfg->vision.channels * (size_t)cfg->vision.image_size * (size_t)cfg->vision.image_size;
    uint64_t (*h)[2] = malloc(T * sizeof *h);
    const float **px = malloc(T * sizeof *px);
    size_t *src = malloc(T * sizeof *src); /* image whose features this one copies (itself if computed) */
    const float **todo_px = malloc(T * sizeof *todo_px);
    float **todo_out = malloc(T * sizeof *todo_out);
    int rc = -1;
    if (!h || !px || !src || !todo_px || !todo_out) {
        pf_errf(err, "engine: out of memory");
        goto done;
    }
    size_t k = 0, ntodo = 0;
    for (size_t r = 0; r < nrows; r++)
        for (int i = 0; i < rows[r].num_images; i++, k++) {
            px[k] = rows[r].pixels + (size_t)i * img;
            pf_eng_imgcache_hash(px[k], img, h[k]);
            src[k] = k;
            const float *hit = c->img.limit ? pf_eng_imgcache_get(&c->img, h[k], F) : NULL;
            if (hit) {
                memcpy(feats + k * F, hit, F * sizeof(float));
                src[k] = SIZE_MAX;
                continue;
            }
            for (size_t j = 0; j < k; j++) /* the same image earlier in this batch */
                if (src[j] == j && h[j][0] == h[k][0] && h[j][1] == h[k][1]) {
                    src[k] = j;
                    c->img.hits++;
                    break;
                }
            if (src[k] == k) {
                todo_px[ntodo] = px[k];
                todo_out[ntodo++] = feats + k * F;
            }
        }
    size_t group = (size_t)VISION_ROWS / N ? (size_t)VISION_ROWS / N : 1;
    for (size_t i = 0; i < ntodo; i += group)
        if (pf_eng_vision(c, todo_px + i, ntodo - i < group ? ntodo - i : group, todo_out + i, err) != 0)
            goto done;
    c->img.computed += ntodo;
    for (k = 0; k < T; k++) {
        if (src[k] != SIZE_MAX && src[k] != k)
            memcpy(feats + k * F, feats + src[k] * F, F * sizeof(float));
        else if (src[k] == k && c->img.limit)
            pf_eng_imgcache_put(&c->img, h[k], feats + k * F, F);
    }
    rc = 0;
done:
    free(h);
    free(px);
    free(src);
    free(todo_px);
    free(todo_out);
    return rc;
}

int pf_engine_prefill(pf_engine_ctx *c, const pf_engine_row *rows, size_t n, pf_err *err)
{
    const pf_engine *e = c->e;
    const pf_config *cfg = &e->m->cfg;
    if (n == 0)
        return 0;
    if (e->threads > 0)
        omp_set_num_threads(e->threads);
    size_t T = 0;
    for (size_t i = 0; i < n; i++) {
        if (check_row(e, &rows[i], i, err) != 0)
            return -1;
        T += (size_t)rows[i].num_images;
    }
    size_t F = (size_t)cfg->num_image_tokens * (size_t)cfg->text.hidden;
    float *feats = T ? pf_eng_scratch(c, SCR_FEATS, T * F * sizeof(float), err) : NULL;
    const float **row_feats = calloc(n, sizeof *row_feats);
    int rc = -1;
    if ((T && !feats) || !row_feats) {
        if (!row_feats)
            pf_errf(err, "engine: out of memory");
        goto done;
    }
    if (T && image_features(c, rows, n, T, feats, err) != 0)
        goto done;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        row_feats[i] = rows[i].num_images ? feats + k * F : NULL;
        if (rows[i].image_features && rows[i].num_images)
            memcpy(rows[i].image_features, feats + k * F, (size_t)rows[i].num_images * F * sizeof(float));
        k += (size_t)rows[i].num_images;
    }
    rc = pf_eng_text_prefill(c, rows, n, row_feats, err);
done:
    free(row_feats);
    return rc;
}
