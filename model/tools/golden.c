/* golden.c - run a golden model case: forward / score / generate per row (no padding, the contract
 * "batched == unbatched"), place each row's results back into the padded [B, T, ...] layout, compare. */
#include "model/tools/golden.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/log.h"
#include "model/engine/engine.h"
#include "model/generate/generate.h"
#include "model/io/model.h"
#include "model/ref/ref.h"
#include "model/io/safetensors.h"
#include "model/generate/score.h"

typedef struct gout {
    char name[96];
    pf_dtype dtype; /* F32 or I64 */
    int ndim;
    int64_t shape[4];
    size_t numel;
    float *f;
    int64_t *i;
} gout;

typedef struct gcase {
    const char *dir;
    const char *adapter; /* --adapter: merged into the checkpoint at load */
    json_t *json;
    pf_model *m;
    pf_st_file in, exp;
    int64_t B, T;
    int64_t *ids, *mask, *tt, *labels; /* [B][T]; tt/labels NULL when absent */
    float *pixels;                     /* [B][C][S][S] */
    size_t img_floats;
    gout **out; /* individually allocated: pointers stay valid while more are added */
    int n_out, cap_out;
    int want_all_debug; /* --dump: keep every debug tensor; else only those expected.safetensors has */
    pf_engine *eng; /* engine runs (NULL: the reference) */
    pf_engine_ctx *ectx;
    /* row being run (debug collection) */
    int64_t row;
    size_t *pos_map; /* real positions of the row */
    size_t row_len;
} gcase;

static gout *out_get(gcase *c, const char *name, pf_dtype dt, int ndim, const int64_t *shape)
{
    for (int i = 0; i < c->n_out; i++)
        if (strcmp(c->out[i]->name, name) == 0)
            return c->out[i];
    if (c->n_out == c->cap_out) {
        int cap = c->cap_out ? 2 * c->cap_out : 32;
        gout **v = realloc(c->out, (size_t)cap * sizeof *v);
        if (!v)
            return NULL;
        c->out = v;
        c->cap_out = cap;
    }
    gout *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    snprintf(o->name, sizeof o->name, "%s", name);
    o->dtype = dt;
    o->ndim = ndim;
    o->numel = 1;
    for (int d = 0; d < ndim; d++) {
        o->shape[d] = shape[d];
        o->numel *= (size_t)shape[d];
    }
    if (dt == PF_DT_I64)
        o->i = calloc(o->numel ? o->numel : 1, sizeof(int64_t));
    else
        o->f = calloc(o->numel ? o->numel : 1, sizeof(float));
    if (!o->i && !o->f) {
        free(o);
        return NULL;
    }
    c->out[c->n_out++] = o;
    return o;
}

/* Debug observer: decoder tensors land at the row's real positions, vision tensors per image. */
static void on_debug(void *ctx, const char *name, const float *x, size_t rows, size_t cols)
{
    gcase *c = ctx;
    char full[96];
    snprintf(full, sizeof full, "debug/%s", name);
    if (!c->want_all_debug && !pf_st_find(&c->exp, full))
        return;
    int vision = strncmp(name, "vision_", 7) == 0;
    int64_t shape[3] = {c->B, vision ? (int64_t)rows : c->T, (int64_t)cols};
    gout *o = out_get(c, full, PF_DT_F32, 3, shape);
    if (!o || (!vision && rows != c->row_len))
        return;
    for (size_t r = 0; r < rows; r++) {
        size_t t = vision ? r : c->pos_map[r];
        memcpy(o->f + ((size_t)c->row * (size_t)shape[1] + t) * cols, x + r * cols, cols * sizeof(float));
    }
}

static int read_i64(gcase *c, const char *name, int required, int64_t **out, pf_err *err)
{
    *out = NULL;
    const pf_st_tensor *t = pf_st_find(&c->in, name);
    if (!t)
        return required ? pf_errf(err, "inputs.safetensors: %s missing", name) : 0;
    if (t->ndim != 2 || t->shape[0] != c->B || t->shape[1] != c->T)
        return pf_errf(err, "inputs.safetensors: %s must be [%lld, %lld]", name, (long long)c->B, (long long)c->T);
    *out = malloc(t->numel * sizeof(int64_t));
    if (!*out)
        return pf_errf(err, "out of memory");
    return pf_st_read_i64(t, *out, err);
}

static int load_case(gcase *c, pf_err *err)
{
    char *path = pf_path_join(c->dir, "case.json");
    json_error_t jerr;
    c->json = path ? json_load_file(path, 0, &jerr) : NULL;
    if (!c->json) {
        pf_errf(err, "%s: %s", path ? path : c->dir, path ? jerr.text : "out of memory");
        free(path);
        return -1;
    }
    free(path);
    const char *ck = json_string_value(json_object_get(c->json, "checkpoint"));
    char *ckdir = pf_path_join(c->dir, ck ? ck : "checkpoint");
    int rc = ckdir ? pf_model_load_adapter(ckdir, c->adapter, 0, &c->m, err) : pf_errf(err, "out of memory");
    free(ckdir);
    if (rc != 0)
        return -1;
    char *ip = pf_path_join(c->dir, "inputs.safetensors"), *ep = pf_path_join(c->dir, "expected.safetensors");
    rc = (ip && ep) ? pf_st_open(ip, &c->in, err) || pf_st_open(ep, &c->exp, err) : pf_errf(err, "out of memory");
    free(ip);
    free(ep);
    if (rc != 0)
        return -1;
    const pf_st_tensor *ids = pf_st_find(&c->in, "input_ids");
    if (!ids || ids->ndim != 2)
        return pf_errf(err, "inputs.safetensors: input_ids [B, T] missing");
    c->B = ids->shape[0];
    c->T = ids->shape[1];
    if (read_i64(c, "input_ids", 1, &c->ids, err) || read_i64(c, "attention_mask", 1, &c->mask, err) ||
        read_i64(c, "token_type_ids", 0, &c->tt, err) || read_i64(c, "labels", 0, &c->labels, err))
        return -1;
    const pf_config *cfg = &c->m->cfg;
    const pf_st_tensor *px = pf_st_find(&c->in, "pixel_values");
    c->img_floats = (size_t)cfg->vision.channels * (size_t)cfg->vision.image_size * (size_t)cfg->vision.image_size;
    if (!px || px->ndim != 4 || px->shape[0] != c->B || px->shape[1] != cfg->vision.channels ||
        px->shape[2] != cfg->vision.image_size || px->shape[3] != cfg->vision.image_size)
        return pf_errf(err, "inputs.safetensors: pixel_values must be [%lld, %d, %d, %d]", (long long)c->B,
                       cfg->vision.channels, cfg->vision.image_size, cfg->vision.image_size);
    c->pixels = malloc(px->numel * sizeof(float));
    if (!c->pixels)
        return pf_errf(err, "out of memory");
    return pf_st_read_f32(px, c->pixels, err);
}

/* The real (attention_mask == 1) tokens of row b, as a row of its own. */
static int row_inputs(gcase *c, int64_t b, int32_t *ids, int32_t *tt, int32_t *labels, size_t *pos_map, size_t *n,
                      int *num_images)
{
    size_t k = 0, n_img = 0;
    for (int64_t t = 0; t < c->T; t++) {
        size_t at = (size_t)(b * c->T + t);
        if (!c->mask[at])
            continue;
        ids[k] = (int32_t)c->ids[at];
        if (tt)
            tt[k] = c->tt ? (int32_t)c->tt[at] : 0;
        if (labels)
            labels[k] = c->labels ? (int32_t)c->labels[at] : PF_IGNORE_INDEX;
        pos_map[k++] = (size_t)t;
        n_img += ids[k - 1] == c->m->cfg.image_token_index;
    }
    *n = k;
    *num_images = n_img > 0 ? (int)(n_img / (size_t)c->m->cfg.num_image_tokens) : 0;
    if (*num_images > 1)
        *num_images = 1; /* one pixel_values image per row; a mismatch is reported by the merge */
    return 0;
}

typedef struct fwd_out {
    gout *logits, *feats, *nll, *posid;
    double nll_sum;
    size_t n_labels;
} fwd_out;

/* Row b's results (n real tokens at pos_map, logits lg [n][V], image features img or NULL, labels for
 * scoring) into the padded [B, T, ...] outputs. */
static int place_row(gcase *c, fwd_out *o, int64_t b, size_t n, const size_t *pos_map, const float *lg,
                     const float *img, const int32_t *labels, pf_err *err)
{
    const pf_config *cfg = &c->m->cfg;
    size_t D = (size_t)cfg->text.hidden, V = (size_t)cfg->text.vocab_size, N = (size_t)cfg->num_image_tokens;
    size_t T = (size_t)c->T;
    if (o->feats && img)
        memcpy(o->feats->f + (size_t)b * N * D, img, N * D * sizeof(float));
    for (size_t r = 0; r < n; r++) {
        memcpy(o->logits->f + ((size_t)b * T + pos_map[r]) * V, lg + r * V, V * sizeof(float));
        if (o->posid)
            o->posid->i[(size_t)b * T + pos_map[r]] = (int64_t)r + 1;
    }
    for (size_t r = 0; o->nll && r + 1 < n; r++) {
        int32_t lab = labels[r + 1];
        if (lab == PF_IGNORE_INDEX)
            continue;
        if (lab < 0 || (size_t)lab >= V)
            return pf_errf(err, "row %lld: label %d outside the vocabulary", (long long)b, lab);
        double x = pf_score_nll(lg + r * V, V, lab);
        o->nll->f[(size_t)b * (T - 1) + pos_map[r]] = (float)x;
        o->nll_sum += x;
        o->n_labels++;
    }
    return 0;
}

/* Every row through the engine in ONE ragged batch; logits at every real position. */
static int forward_engine(gcase *c, fwd_out *o, int scoring, pf_err *err)
{
    const pf_config *cfg = &c->m->cfg;
    size_t D = (size_t)cfg->text.hidden, V = (size_t)cfg->text.vocab_size, N = (size_t)cfg->num_image_tokens;
    size_t T = (size_t)c->T, B = (size_t)c->B;
    int32_t *ids = malloc(B * T * sizeof *ids), *tt = malloc(B * T * sizeof *tt), *labels = malloc(B * T * sizeof *labels);
    size_t *pos_map = malloc(B * T * sizeof *pos_map), *all = malloc(T * sizeof *all), *n = calloc(B, sizeof *n);
    float *lg = malloc(B * T * V * sizeof(float)), *img = malloc(B * N * D * sizeof(float));
    pf_engine_row *rows = calloc(B, sizeof *rows);
    int rc = -1;
    if (!ids || !tt || !labels || !pos_map || !all || !n || !lg || !img || !rows) {
        pf_errf(err, "out of memory");
        goto done;
    }
    for (size_t t = 0; t < T; t++)
        all[t] = t;
    for (size_t b = 0; b < B; b++) {
        int num_images;
        row_inputs(c, (int64_t)b, ids + b * T, tt + b * T, labels + b * T, pos_map + b * T, &n[b], &num_images);
        rows[b] = (pf_engine_row){.pixels = c->pixels + b * c->img_floats, .num_images = num_images, .ids = ids + b * T,
                                  .n = n[b], .token_type = scoring ? tt + b * T : NULL, .logits = lg + b * T * V,
                                  .logit_rows = all, .n_logit_rows = n[b],
                                  .image_features = num_images ? img + b * N * D : NULL};
    }
    if (pf_engine_prefill(c->ectx, rows, B, err) != 0)
        goto done;
    for (size_t b = 0; b < B; b++)
        if (place_row(c, o, (int64_t)b, n[b], pos_map + b * T, lg + b * T * V, rows[b].image_features,
                      labels + b * T, err) != 0)
            goto done;
    rc = 0;
done:
    free(ids);
    free(tt);
    free(labels);
    free(pos_map);
    free(all);
    free(n);
    free(lg);
    free(img);
    free(rows);
    return rc;
}

static int op_forward(gcase *c, int scoring, pf_err *err)
{
    const pf_config *cfg = &c->m->cfg;
    size_t D = (size_t)cfg->text.hidden, V = (size_t)cfg->text.vocab_size, N = (size_t)cfg->num_image_tokens;
    size_t T = (size_t)c->T;
    int64_t sh3[3] = {c->B, c->T, (int64_t)V}, shf[3] = {c->B, (int64_t)N, (int64_t)D};
    int64_t shn[2] = {c->B, c->T - 1}, sh2[2] = {c->B, c->T};
    fwd_out o = {0};
    o.logits = out_get(c, scoring ? "score_logits" : "logits", PF_DT_F32, 3, sh3);
    o.feats = scoring ? NULL : out_get(c, "image_features", PF_DT_F32, 3, shf);
    o.nll = scoring ? out_get(c, "token_nll", PF_DT_F32, 2, shn) : NULL;
    o.posid = scoring ? NULL : out_get(c, "debug/position_ids", PF_DT_I64, 2, sh2);
    int32_t *ids = malloc(T * sizeof *ids), *tt = malloc(T * sizeof *tt), *labels = malloc(T * sizeof *labels);
    size_t *pos_map = malloc(T * sizeof *pos_map);
    float *img = malloc(N * D * sizeof(float)), *hidden = malloc(T * D * sizeof(float));
    float *lg = malloc(T * V * sizeof(float));
    int rc = -1;
    if (!o.logits || (!scoring && (!o.feats || !o.posid)) || (scoring && !o.nll) || !ids || !tt || !labels ||
        !pos_map || !img || !hidden || !lg) {
        pf_errf(err, "out of memory");
        goto done;
    }
    if (c->ectx) {
        if (forward_engine(c, &o, scoring, err) != 0)
            goto done;
    } else {
        pf_ref_debug dbg = {.fn = on_debug, .ctx = c};
        for (int64_t b = 0; b < c->B; b++) {
            size_t n;
            int num_images;
            row_inputs(c, b, ids, tt, labels, pos_map, &n, &num_images);
            c->row = b;
            c->pos_map = pos_map;
            c->row_len = n;
            const pf_ref_debug *d = scoring ? NULL : &dbg;
            if (pf_ref_image_features(c->m, c->pixels + (size_t)b * c->img_floats, img, d, err) != 0)
                goto done;
            if (pf_ref_embed(c->m, ids, n, img, num_images, hidden, err) != 0 ||
                pf_ref_decoder(c->m, hidden, n, scoring ? tt : NULL, NULL, d, err) != 0) {
                pf_err_prefix(err, "row %lld", (long long)b);
                goto done;
            }
            pf_ref_logits(c->m, hidden, n, lg);
            if (place_row(c, &o, b, n, pos_map, lg, img, labels, err) != 0)
                goto done;
        }
    }
    if (scoring) {
        gout *loss = out_get(c, "loss", PF_DT_F32, 0, NULL);
        if (!loss) {
            pf_errf(err, "out of memory");
            goto done;
        }
        loss->f[0] = o.n_labels ? (float)(o.nll_sum / (double)o.n_labels) : NAN;
    }
    rc = 0;
done:
    free(ids);
    free(tt);
    free(labels);
    free(pos_map);
    free(img);
    free(hidden);
    free(lg);
    return rc;
}

/* Every row generated in ONE continuous batch (rows of different lengths), then laid out as transformers'
 * batched generate returns them: padded prompt, new tokens, pad 0 after a row's eos. */
static int op_generate(gcase *c, int max_new, pf_err *err)
{
    size_t T = (size_t)c->T, B = (size_t)c->B;
    pf_gen_request *reqs = calloc(B, sizeof *reqs);
    pf_gen_result *res = calloc(B, sizeof *res);
    int32_t *ids = malloc(B * T * sizeof *ids);
    size_t *pos_map = malloc(T * sizeof *pos_map);
    pf_generator *g = NULL;
    int rc = -1;
    if (!reqs || !res || !ids || !pos_map) {
        pf_errf(err, "out of memory");
        goto done;
    }
    for (size_t b = 0; b < B; b++) {
        size_t n;
        int num_images;
        row_inputs(c, (int64_t)b, ids + b * T, NULL, NULL, pos_map, &n, &num_images);
        reqs[b].ids = ids + b * T;
        reqs[b].n_ids = n;
        reqs[b].pixels = num_images ? c->pixels + b * c->img_floats : NULL;
        reqs[b].num_images = num_images;
        reqs[b].params = pf_sample_default_params();
        reqs[b].params.max_new_tokens = max_new;
        reqs[b].tag = b;
    }
    pf_generator_params go = {.backend = c->eng ? &pf_gen_backend_engine : NULL, .backend_arg = c->eng};
    if (pf_generator_create_params(c->m, &go, &g, err) != 0 || pf_generate(g, reqs, B, res, err) != 0)
        goto done;
    size_t nmax = 0;
    for (size_t b = 0; b < B; b++) {
        if (res[b].error) {
            pf_errf(err, "generate row %zu: %s", b, res[b].error);
            goto done;
        }
        nmax = res[b].n_ids > nmax ? res[b].n_ids : nmax;
    }
    int64_t shape[2] = {c->B, (int64_t)(T + nmax)};
    gout *o = out_get(c, "generated_ids", PF_DT_I64, 2, shape);
    if (!o) {
        pf_errf(err, "out of memory");
        goto done;
    }
    for (size_t b = 0; b < B; b++) {
        int64_t *row = o->i + b * (T + nmax);
        memcpy(row, c->ids + b * T, T * sizeof(int64_t));
        for (size_t k = 0; k < nmax; k++)
            row[T + k] = k < res[b].n_ids ? res[b].ids[k] : c->m->cfg.pad_id;
    }
    rc = 0;
done:
    for (size_t b = 0; res && b < B; b++)
        pf_gen_result_free(&res[b]);
    pf_generator_free(g);
    free(reqs);
    free(res);
    free(ids);
    free(pos_map);
    return rc;
}

/* ---- comparison --------------------------------------------------------------------------------- */

/* Is element e of expected tensor NAME compared? (README "Tolerance rule and checker masking") */
static int compared(const gcase *c, const char *name, const pf_st_tensor *t, size_t e)
{
    if (strcmp(name, "token_nll") == 0) {
        size_t b = e / (size_t)(c->T - 1), s = e % (size_t)(c->T - 1);
        return c->labels && c->labels[b * (size_t)c->T + s + 1] != PF_IGNORE_INDEX;
    }
    if (strcmp(name, "generated_ids") == 0) {
        size_t w = (size_t)t->shape[1], b = e / w, s = e % w;
        return s >= (size_t)c->T || c->mask[b * (size_t)c->T + s];
    }
    if (t->ndim >= 2 && t->shape[0] == c->B && t->shape[1] == c->T && strncmp(name, "debug/vision_", 13) != 0) {
        size_t inner = 1;
        for (int d = 2; d < t->ndim; d++)
            inner *= (size_t)t->shape[d];
        return c->mask[e / inner] != 0;
    }
    return 1;
}

static void index_str(char *buf, size_t n, const pf_st_tensor *t, size_t e)
{
    size_t idx[PF_ST_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = t->shape[d] ? e % (size_t)t->shape[d] : 0;
        e = t->shape[d] ? e / (size_t)t->shape[d] : 0;
    }
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%zu", d ? "," : "", idx[d]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
}

/* Compare one tensor; returns 1 pass, 0 fail, -1 not comparable (no tolerance / not computed). */
static int compare_one(gcase *c, const pf_st_tensor *t, FILE *rep, int required, int verbose)
{
    const char *name = t->name;
    gout *o = NULL;
    for (int i = 0; i < c->n_out; i++)
        if (strcmp(c->out[i]->name, name) == 0)
            o = c->out[i];
    json_t *tol = json_object_get(json_object_get(c->json, "tolerances"), name);
    if (!o) {
        if (required)
            fprintf(rep, "  %-28s FAIL: not computed\n", name);
        return required ? 0 : -1;
    }
    int same_shape = o->ndim == t->ndim;
    for (int d = 0; same_shape && d < t->ndim; d++)
        same_shape = o->shape[d] == t->shape[d];
    if (!same_shape) {
        fprintf(rep, "  %-28s FAIL: shape differs from expected\n", name);
        return 0;
    }
    if (!tol) {
        if (required)
            fprintf(rep, "  %-28s FAIL: no tolerance in case.json\n", name);
        return required ? 0 : -1;
    }
    char where[96] = "-";
    if (json_is_true(json_object_get(tol, "exact")) || o->dtype == PF_DT_I64) {
        int64_t *exp = malloc(t->numel * sizeof(int64_t));
        if (!exp || pf_st_read_i64(t, exp, NULL) != 0 || !o->i) {
            free(exp);
            fprintf(rep, "  %-28s FAIL: cannot read as integers\n", name);
            return 0;
        }
        size_t bad = 0, first = 0, nc = 0;
        for (size_t e = 0; e < t->numel; e++) {
            if (!compared(c, name, t, e))
                continue;
            nc++;
            if (o->i[e] != exp[e] && bad++ == 0)
                first = e;
        }
        if (bad)
            index_str(where, sizeof where, t, first);
        fprintf(rep, "  %-28s %s  %zu/%zu compared ids differ%s%s", name, bad ? "FAIL" : "ok  ", bad, nc,
                bad ? ", first at " : "", bad ? where : "");
        if (bad)
            fprintf(rep, " (got %lld, expected %lld)", (long long)o->i[first], (long long)exp[first]);
        fprintf(rep, "\n");
        free(exp);
        return bad == 0;
    }
    double atol = json_number_value(json_object_get(tol, "atol")), rtol = json_number_value(json_object_get(tol, "rtol"));
    float *exp = malloc((t->numel ? t->numel : 1) * sizeof(float));
    if (!exp || pf_st_read_f32(t, exp, NULL) != 0 || !o->f) {
        free(exp);
        fprintf(rep, "  %-28s FAIL: cannot read as floats\n", name);
        return 0;
    }
    double worst = 0, worst_ratio = 0;
    size_t wi = 0, bad = 0, nc = 0;
    for (size_t e = 0; e < t->numel; e++) {
        if (!compared(c, name, t, e))
            continue;
        nc++;
        double d = fabs((double)o->f[e] - (double)exp[e]), lim = atol + rtol * fabs((double)exp[e]);
        int ok = isfinite(o->f[e]) && d <= lim;
        if (!isfinite(o->f[e]))
            d = INFINITY;
        bad += !ok;
        double ratio = lim > 0 ? d / lim : (d > 0 ? INFINITY : 0);
        if (ratio > worst_ratio || (nc == 1)) {
            worst_ratio = ratio;
            worst = d;
            wi = e;
        }
    }
    index_str(where, sizeof where, t, wi);
    if (required || bad || verbose)
        fprintf(rep, "  %-28s %s  max|d| %.3g at %s (got %.6g, expected %.6g)  atol %.3g  = %.3f of tol  %zu/%zu bad%s\n",
                name, bad ? (required ? "FAIL" : "diff") : "ok  ", worst, where, nc ? o->f[wi] : 0.0,
                nc ? exp[wi] : 0.0, atol, worst_ratio, bad, nc, required ? "" : "  (debug, informational)");
    free(exp);
    return bad == 0;
}

static int dump(gcase *c, const char *path, pf_err *err)
{
    pf_st_entry *e = calloc((size_t)c->n_out, sizeof *e);
    if (!e)
        return pf_errf(err, "out of memory");
    for (int i = 0; i < c->n_out; i++) {
        const gout *o = c->out[i];
        e[i].name = o->name;
        e[i].dtype = o->dtype;
        e[i].ndim = o->ndim;
        memcpy(e[i].shape, o->shape, sizeof o->shape);
        e[i].data = o->dtype == PF_DT_I64 ? (const void *)o->i : (const void *)o->f;
    }
    int rc = pf_st_write(path, e, (size_t)c->n_out, "{\"producer\": \"paliflow golden\"}", err);
    free(e);
    return rc;
}

static void case_free(gcase *c)
{
    pf_engine_ctx_free(c->ectx);
    pf_engine_free(c->eng);
    json_decref(c->json);
    pf_model_free(c->m);
    pf_st_close(&c->in);
    pf_st_close(&c->exp);
    free(c->ids);
    free(c->mask);
    free(c->tt);
    free(c->labels);
    free(c->pixels);
    for (int i = 0; i < c->n_out; i++) {
        free(c->out[i]->f);
        free(c->out[i]->i);
        free(c->out[i]);
    }
    free(c->out);
}

static gout *find_out(gcase *c, const char *name)
{
    for (int i = 0; i < c->n_out; i++)
        if (strcmp(c->out[i]->name, name) == 0)
            return c->out[i];
    return NULL;
}

/* Reduced precision (pf_golden_params doc in golden.h): closeness of the logits to the fp32 expected values
 * against the case's bf16_reference (bf16) or cosine >= 0.99 (int8); greedy agreement reported. */
static int accuracy_mode(gcase *c, pf_precision prec, FILE *rep)
{
    int ok = 1;
    json_t *ref = json_object_get(c->json, "bf16_reference");
    const char *names[] = {"logits", "score_logits", "image_features"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        gout *o = find_out(c, names[k]);
        const pf_st_tensor *t = pf_st_find(&c->exp, names[k]);
        if (!o || !t || t->numel != o->numel)
            continue;
        float *exp = malloc(t->numel * sizeof(float));
        if (!exp || pf_st_read_f32(t, exp, NULL) != 0) {
            free(exp);
            fprintf(rep, "  %-16s FAIL: cannot read expected values\n", names[k]);
            ok = 0;
            continue;
        }
        pf_golden_closeness cl;
        int64_t *ones = NULL;
        if (k == 2) { /* image_features [B][N][D]: every element, "rows" = images */
            ones = malloc((size_t)(o->shape[0] * o->shape[1]) * sizeof *ones);
            for (int64_t i = 0; ones && i < o->shape[0] * o->shape[1]; i++)
                ones[i] = 1;
            if (ones)
                pf_golden_closeness_of(o->f, exp, ones, o->shape[0], o->shape[1], o->shape[2], &cl);
        } else {
            pf_golden_closeness_of(o->f, exp, c->mask, c->B, c->T, o->shape[2], &cl);
        }
        free(exp);
        if (k == 2 && !ones) {
            ok = 0;
            continue;
        }
        free(ones);
        int pass = 1;
        char want[256] = "(informational)";
        if (k == 0 && prec == PF_PREC_BF16) {
            double rc = json_number_value(json_object_get(ref, "overall_cosine"));
            double rm = json_number_value(json_object_get(ref, "overall_max_abs"));
            double rlc = json_number_value(json_object_get(ref, "worst_cosine_last_position"));
            double rlm = json_number_value(json_object_get(ref, "worst_max_abs_last_position"));
            if (!ref)
                snprintf(want, sizeof want, "(no bf16_reference in case.json)");
            else
                snprintf(want, sizeof want, "(transformers bf16: cos %.6f max|d| %.4g, last-position cos %.6f max|d| %.4g)",
                         rc, rm, rlc, rlm);
            pass = !ref || (cl.cosine >= rc && cl.max_abs <= rm && cl.worst_last_cosine >= rlc &&
                            cl.worst_last_max_abs <= rlm);
        } else if (k == 0 && prec == PF_PREC_INT8) {
            snprintf(want, sizeof want, "(need cos >= 0.99 over all real positions)");
            pass = cl.cosine >= 0.99;
        }
        fprintf(rep, "  %-16s %s  %s vs fp32: cos %.6f max|d| %.4g, last-position cos %.6f max|d| %.4g  %s\n",
                names[k], pass ? "ok  " : "FAIL", pf_precision_name(prec), cl.cosine, cl.max_abs, cl.worst_last_cosine,
                cl.worst_last_max_abs, want);
        ok &= pass;
    }
    gout *g = find_out(c, "generated_ids");
    const pf_st_tensor *t = pf_st_find(&c->exp, "generated_ids");
    if (g && t) {
        int64_t *exp = malloc(t->numel * sizeof(int64_t));
        size_t same = 0, nc = 0;
        if (exp && pf_st_read_i64(t, exp, NULL) == 0 && t->ndim == 2) {
            int64_t W = t->shape[1], Wg = g->shape[1];
            for (int64_t b = 0; b < c->B; b++) /* new tokens only, until a row's first difference */
                for (int64_t s = c->T, agree = 1; s < W; s++) {
                    nc++;
                    agree = agree && s < Wg && g->i[b * Wg + s] == exp[b * W + s];
                    same += (size_t)agree;
                }
        }
        free(exp);
        fprintf(rep, "  %-16s info  greedy tokens agree with fp32 transformers: %zu/%zu (up to each row's first "
                     "difference)\n", "generated_ids", same, nc);
    }
    return ok;
}

static int run(gcase *c, const pf_golden_params *opts, int *passed, pf_err *err)
{
    FILE *rep = opts && opts->report ? opts->report : stdout;
    if (load_case(c, err) != 0)
        return -1;
    if (opts && opts->engine) {
        pf_engine_params eo = {.precision = opts->precision};
        if (pf_engine_create(c->m, &eo, &c->eng, err) != 0 || pf_engine_ctx_create(c->eng, &c->ectx, err) != 0)
            return -1;
    }
    json_t *ops = json_object_get(c->json, "ops");
    double t0 = pf_now();
    if (json_object_get(ops, "forward") && op_forward(c, 0, err) != 0)
        return pf_err_prefix(err, "forward");
    if (json_object_get(ops, "score")) {
        if (!c->tt || !c->labels)
            return pf_errf(err, "score: inputs.safetensors lacks token_type_ids or labels");
        if (op_forward(c, 1, err) != 0)
            return pf_err_prefix(err, "score");
    }
    json_t *gen = json_object_get(ops, "generate");
    if (gen) {
        json_t *mx = json_object_get(gen, "max_new_tokens");
        if (!json_is_integer(mx) || json_integer_value(mx) < 1 || json_integer_value(mx) > 100000)
            return pf_errf(err, "case.json: ops.generate.max_new_tokens must be a positive integer");
        if (op_generate(c, (int)json_integer_value(mx), err) != 0)
            return pf_err_prefix(err, "generate");
    }
    double secs = pf_now() - t0;

    json_t *req = json_object_get(c->json, "required_outputs");
    int all = 1;
    size_t i;
    json_t *v;
    pf_precision prec = c->eng ? pf_engine_precision(c->eng) : PF_PREC_FP32;
    fprintf(rep, "case %s (%.2f s, %s %s)\n", c->dir, secs, c->eng ? "engine" : "reference", pf_precision_name(prec));
    if (prec != PF_PREC_FP32) {
        all = accuracy_mode(c, prec, rep);
        fprintf(rep, "case %s: %s\n", c->dir, all ? "PASS" : "FAIL");
        *passed = all;
        if (opts && opts->dump_path && dump(c, opts->dump_path, err) != 0)
            return -1;
        return 0;
    }
    json_array_foreach(req, i, v)
    {
        const char *name = json_string_value(v);
        const pf_st_tensor *t = name ? pf_st_find(&c->exp, name) : NULL;
        if (!t) {
            fprintf(rep, "  %-28s FAIL: not in expected.safetensors\n", name ? name : "?");
            all = 0;
            continue;
        }
        if (compare_one(c, t, rep, 1, 0) != 1)
            all = 0;
    }
    /* "debug/" tensors: informational, they locate a bug layer by layer. */
    for (size_t k = 0; k < c->exp.count; k++) {
        const pf_st_tensor *t = &c->exp.tensors[k];
        if (strncmp(t->name, "debug/", 6) == 0 && t->dtype != PF_DT_I64)
            compare_one(c, t, rep, 0, opts && opts->verbose_debug);
    }
    fprintf(rep, "case %s: %s\n", c->dir, all ? "PASS" : "FAIL");
    *passed = all;
    if (opts && opts->dump_path && dump(c, opts->dump_path, err) != 0)
        return -1;
    return 0;
}

int pf_golden_run_case(const char *case_dir, const pf_golden_params *opts, int *passed, pf_err *err)
{
    gcase c;
    memset(&c, 0, sizeof c);
    c.dir = case_dir;
    c.adapter = opts ? opts->adapter : NULL;
    c.want_all_debug = opts && opts->dump_path;
    *passed = 0;
    int rc = run(&c, opts, passed, err);
    case_free(&c);
    return rc;
}
