/* lora.c - PEFT LoRA adapter config and the merge into a loaded checkpoint (lora.h). */
#include "model/io/lora.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/log.h"
#include "model/io/model.h"

/* A field that must be absent, null, false, empty or equal to `ok_string`: what peft writes when the option
 * is not used. Anything else changes what the merge must compute, so it is refused rather than ignored. */
static int refuse_if_set(const json_t *root, const char *key, const char *ok_string, const char *name,
                         const char *why, pf_err *err)
{
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v) || json_is_false(v))
        return 0;
    if ((json_is_array(v) && json_array_size(v) == 0) || (json_is_object(v) && json_object_size(v) == 0))
        return 0;
    if (ok_string && json_is_string(v) && !strcmp(json_string_value(v), ok_string))
        return 0;
    return pf_errf(err, "%s: %s is set: %s", name, key, why);
}

int pf_lora_config_parse(const char *json, size_t len, const char *name, pf_lora_config *out, pf_err *err)
{
    memset(out, 0, sizeof *out);
    if (len > PF_LORA_MAX_CONFIG_BYTES)
        return pf_errf(err, "%s: %zu bytes, more than %u", name, len, PF_LORA_MAX_CONFIG_BYTES);
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return pf_errf(err, "%s: line %d: %s", name, je.line, je.text);
    int rc = -1;
    if (!json_is_object(root)) {
        pf_errf(err, "%s: not a JSON object", name);
        goto out;
    }
    const json_t *pt = json_object_get(root, "peft_type");
    if (pt && !(json_is_string(pt) && !strcmp(json_string_value(pt), "LORA"))) {
        pf_errf(err, "%s: peft_type: only LORA adapters can be merged, got %s", name,
                json_is_string(pt) ? json_string_value(pt) : "a non-string");
        goto out;
    }
    const json_t *r = json_object_get(root, "r");
    if (!json_is_integer(r) || json_integer_value(r) < 1 || json_integer_value(r) > PF_LORA_MAX_RANK) {
        pf_errf(err, "%s: r: want an integer in [1, %d]", name, PF_LORA_MAX_RANK);
        goto out;
    }
    out->r = (int)json_integer_value(r);
    const json_t *a = json_object_get(root, "lora_alpha");
    out->alpha = a ? json_number_value(a) : 8.0; /* peft's LoraConfig default */
    if (a && (!json_is_number(a) || !isfinite(out->alpha) || fabs(out->alpha) > 1e6)) {
        pf_errf(err, "%s: lora_alpha: want a finite number", name);
        goto out;
    }
    const json_t *rs = json_object_get(root, "use_rslora");
    if (rs && !json_is_boolean(rs) && !json_is_null(rs)) {
        pf_errf(err, "%s: use_rslora: want true or false", name);
        goto out;
    }
    out->rslora = rs && json_is_true(rs);
    out->scale = out->rslora ? out->alpha / sqrt((double)out->r) : out->alpha / out->r;
    const json_t *tm = json_object_get(root, "target_modules");
    if (json_is_string(tm)) {
        pf_errf(err, "%s: target_modules is the string '%.64s' (a regular expression, or peft's 'all-linear'): "
                "only a list of module names is supported", name, json_string_value(tm));
        goto out;
    }
    if (!json_is_array(tm) || json_array_size(tm) == 0 || json_array_size(tm) > PF_LORA_MAX_TARGETS) {
        pf_errf(err, "%s: target_modules: want a list of 1..%d module names", name, PF_LORA_MAX_TARGETS);
        goto out;
    }
    for (size_t i = 0; i < json_array_size(tm); i++) {
        const json_t *t = json_array_get(tm, i);
        const char *s = json_string_value(t);
        if (!s || !*s || strlen(s) >= sizeof out->targets[0] || strchr(s, '*')) {
            pf_errf(err, "%s: target_modules[%zu]: want a module name shorter than %zu characters", name, i,
                    sizeof out->targets[0]);
            goto out;
        }
        snprintf(out->targets[out->n_targets++], sizeof out->targets[0], "%s", s);
    }
    if (refuse_if_set(root, "use_dora", NULL, name, "DoRA's magnitude vectors are not supported", err) ||
        refuse_if_set(root, "fan_in_fan_out", NULL, name, "transposed (Conv1D) weights do not occur in PaliGemma",
                      err) ||
        refuse_if_set(root, "bias", "none", name, "adapter biases are not supported", err) ||
        refuse_if_set(root, "lora_bias", NULL, name, "lora_B biases are not supported", err) ||
        refuse_if_set(root, "modules_to_save", NULL, name, "fully trained extra modules are not supported", err) ||
        refuse_if_set(root, "rank_pattern", NULL, name, "per-module ranks are not supported", err) ||
        refuse_if_set(root, "alpha_pattern", NULL, name, "per-module alphas are not supported", err) ||
        refuse_if_set(root, "layers_to_transform", NULL, name, "layer selection is not supported", err) ||
        refuse_if_set(root, "layer_replication", NULL, name, "layer replication is not supported", err))
        goto out;
    rc = 0;
out:
    json_decref(root);
    return rc;
}

bool pf_lora_targets(const pf_lora_config *c, const char *module)
{
    size_t ml = strlen(module);
    for (int i = 0; i < c->n_targets; i++) {
        size_t tl = strlen(c->targets[i]);
        if (!strcmp(module, c->targets[i]) ||
            (ml > tl && module[ml - tl - 1] == '.' && !strcmp(module + ml - tl, c->targets[i])))
            return true;
    }
    return false;
}

/* ---------------------------------------------------------------- merge */

#define PEFT_PREFIX "base_model.model."

/* The checkpoint's tensor for module + ".weight", the module spelled in either transformers layout. */
static pf_st_tensor *base_tensor(pf_model *m, const char *module)
{
    char name[600], v1[700];
    snprintf(name, sizeof name, "%s.weight", module);
    const pf_st_tensor *t = pf_checkpoint_find(&m->ckpt, name, NULL);
    if (!t) {
        /* v2 spelling -> v1, then pf_model_find_tensor maps to whatever the checkpoint uses */
        static const char v2lm[] = "model.language_model.", v2[] = "model.";
        if (!strncmp(name, v2lm, sizeof v2lm - 1))
            snprintf(v1, sizeof v1, "language_model.model.%s", name + sizeof v2lm - 1);
        else if (!strcmp(name, "lm_head.weight"))
            snprintf(v1, sizeof v1, "language_model.lm_head.weight");
        else if (!strncmp(name, v2, sizeof v2 - 1))
            snprintf(v1, sizeof v1, "%s", name + sizeof v2 - 1);
        else
            snprintf(v1, sizeof v1, "%s", name);
        t = pf_model_find_tensor(m, v1);
    }
    return (pf_st_tensor *)t; /* entries of the checkpoint's own tensor arrays: the merge replaces them */
}

static float *read_f32(const pf_st_tensor *t, pf_err *err)
{
    float *p = malloc((t->numel ? t->numel : 1) * sizeof(float));
    if (!p) {
        pf_errf(err, "tensor %s: out of memory", t->name);
        return NULL;
    }
    if (pf_st_read_f32(t, p, err) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

/* W[out][in] += scale * B[out][r] A[r][in], one output row per iteration (rows are independent). */
static void merge_rows(float *w, const float *a, const float *b, int64_t n_out, int64_t n_in, int r, float scale)
{
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < n_out; o++) {
        float *wr = w + o * n_in;
        for (int j = 0; j < r; j++) {
            float s = scale * b[o * r + j];
            const float *ar = a + (int64_t)j * n_in;
            for (int64_t i = 0; i < n_in; i++)
                wr[i] += s * ar[i];
        }
    }
}

static int keep_buffer(pf_model *m, float *buf, pf_err *err)
{
    float **v = realloc(m->merged, (m->n_merged + 1) * sizeof *v);
    if (!v)
        return pf_errf(err, "out of memory");
    m->merged = v;
    m->merged[m->n_merged++] = buf;
    return 0;
}

static int merge_one(pf_model *m, const pf_lora_config *cfg, const pf_st_file *f, const pf_st_tensor *ta,
                     const char *module, pf_err *err)
{
    char bname[600];
    snprintf(bname, sizeof bname, PEFT_PREFIX "%s.lora_B.weight", module);
    const pf_st_tensor *tb = pf_st_find(f, bname);
    if (!tb)
        return pf_errf(err, "tensor %s: no matching %s", ta->name, bname);
    if (!pf_lora_targets(cfg, module))
        return pf_errf(err, "tensor %s: module %s is not in target_modules", ta->name, module);
    pf_st_tensor *w = base_tensor(m, module);
    if (!w)
        return pf_errf(err, "tensor %s: the base checkpoint has no %s.weight", ta->name, module);
    if (w->ndim != 2)
        return pf_errf(err, "tensor %s: base %s is %d-dimensional: only Linear weights can be merged", ta->name,
                       w->name, w->ndim);
    int64_t n_out = w->shape[0], n_in = w->shape[1];
    if (ta->ndim != 2 || ta->shape[0] != cfg->r || ta->shape[1] != n_in)
        return pf_errf(err, "tensor %s: shape [%lld, %lld], want [r=%d, %lld] for base %s [%lld, %lld]", ta->name,
                       (long long)ta->shape[0], (long long)(ta->ndim > 1 ? ta->shape[1] : 0), cfg->r,
                       (long long)n_in, w->name, (long long)n_out, (long long)n_in);
    if (tb->ndim != 2 || tb->shape[0] != n_out || tb->shape[1] != cfg->r)
        return pf_errf(err, "tensor %s: shape [%lld, %lld], want [%lld, r=%d] for base %s [%lld, %lld]", tb->name,
                       (long long)tb->shape[0], (long long)(tb->ndim > 1 ? tb->shape[1] : 0), (long long)n_out,
                       cfg->r, w->name, (long long)n_out, (long long)n_in);
    for (size_t i = 0; i < m->n_merged; i++)
        if ((const void *)m->merged[i] == (const void *)w->data)
            return pf_errf(err, "tensor %s: %s adapted twice", ta->name, w->name);
    float *wf = read_f32(w, err), *a = wf ? read_f32(ta, err) : NULL, *b = a ? read_f32(tb, err) : NULL;
    if (!b || keep_buffer(m, wf, err) != 0) {
        free(wf);
        free(a);
        free(b);
        return pf_err_prefix(err, "adapter");
    }
    merge_rows(wf, a, b, n_out, n_in, cfg->r, (float)cfg->scale);
    free(a);
    free(b);
    /* The merged weight replaces the stored one: everything after (the checks against the config, the
     * reference's f32 view, the engine's conversion) sees W + scale B A in f32. */
    w->dtype = PF_DT_F32;
    w->data = (const uint8_t *)wf;
    w->nbytes = w->numel * sizeof(float);
    return 0;
}

int pf_lora_merge(pf_model *m, const char *dir, pf_err *err)
{
    char *cpath = pf_path_join(dir, "adapter_config.json"), *wpath = pf_path_join(dir, "adapter_model.safetensors");
    char *text = NULL;
    size_t len = 0;
    pf_st_file f = {0};
    bool opened = false;
    int rc = -1, merged = 0;
    pf_lora_config cfg;
    if (!cpath || !wpath) {
        pf_errf(err, "out of memory");
        goto out;
    }
    if (pf_read_file(cpath, PF_LORA_MAX_CONFIG_BYTES, &text, &len, err) != 0 ||
        pf_lora_config_parse(text, len, cpath, &cfg, err) != 0)
        goto out;
    if (pf_st_open(wpath, &f, err) != 0)
        goto out;
    opened = true;
    for (size_t i = 0; i < f.count; i++) {
        const pf_st_tensor *t = &f.tensors[i];
        static const char sa[] = ".lora_A.weight", sb[] = ".lora_B.weight";
        size_t nl = strlen(t->name);
        bool is_a = nl > sizeof sa - 1 && !strcmp(t->name + nl - (sizeof sa - 1), sa);
        bool is_b = nl > sizeof sb - 1 && !strcmp(t->name + nl - (sizeof sb - 1), sb);
        if ((!is_a && !is_b) || strncmp(t->name, PEFT_PREFIX, sizeof PEFT_PREFIX - 1) != 0) {
            pf_errf(err, "%s: tensor %s: not a LoRA weight (want " PEFT_PREFIX "<module>.lora_A.weight / "
                    ".lora_B.weight; embedding LoRA and DoRA magnitudes are not supported)", wpath, t->name);
            goto out;
        }
        char module[512];
        size_t ml = nl - (sizeof PEFT_PREFIX - 1) - (sizeof sa - 1);
        if (ml == 0 || ml >= sizeof module) {
            pf_errf(err, "%s: tensor %s: module name empty or too long", wpath, t->name);
            goto out;
        }
        memcpy(module, t->name + sizeof PEFT_PREFIX - 1, ml);
        module[ml] = '\0';
        if (is_b) { /* checked from its A; a B alone has no A */
            char aname[600];
            snprintf(aname, sizeof aname, PEFT_PREFIX "%s.lora_A.weight", module);
            if (!pf_st_find(&f, aname)) {
                pf_errf(err, "%s: tensor %s: no matching %s", wpath, t->name, aname);
                goto out;
            }
            continue;
        }
        if (merge_one(m, &cfg, &f, t, module, err) != 0) {
            pf_err_prefix(err, "%s", wpath);
            goto out;
        }
        merged++;
    }
    if (merged == 0) {
        pf_errf(err, "%s: no lora_A / lora_B tensors", wpath);
        goto out;
    }
    pf_info("model", "adapter %s: %d weights merged (r %d, alpha %g%s, scale %g)", dir, merged, cfg.r, cfg.alpha,
            cfg.rslora ? ", rsLoRA" : "", cfg.scale);
    rc = 0;
out:
    if (opened)
        pf_st_close(&f);
    free(text);
    free(cpath);
    free(wpath);
    return rc;
}
