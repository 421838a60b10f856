#include "model/io/config.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>

#include "base/file.h"

#define CONFIG_MAX_BYTES (4u << 20)

/* Field readers: absent (or JSON null) -> default; present -> must have the right type and range.
 * `where` is "FILE: text_config" style context for messages. */
static int get_int(const json_t *obj, const char *key, long long def, long long lo, long long hi, int *out,
                   const char *where, pf_err *err)
{
    const json_t *v = obj ? json_object_get(obj, key) : NULL;
    long long x = def;
    if (v && !json_is_null(v)) {
        if (json_is_integer(v)) {
            x = json_integer_value(v);
        } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
                   fabs(json_real_value(v)) < 9e15) {
            x = (long long)json_real_value(v);
        } else {
            return pf_errf(err, "%s.%s: must be an integer", where, key);
        }
    }
    if (x < lo || x > hi)
        return pf_errf(err, "%s.%s: %lld is out of range [%lld, %lld]", where, key, x, lo, hi);
    *out = (int)x;
    return 0;
}

/* Float field; if nullable, JSON null means "off" (0). */
static int get_float(const json_t *obj, const char *key, double def, double lo, double hi, int nullable, float *out,
                     const char *where, pf_err *err)
{
    const json_t *v = obj ? json_object_get(obj, key) : NULL;
    double x = def;
    if (v && json_is_null(v)) {
        x = nullable ? 0.0 : def;
    } else if (v) {
        if (!json_is_number(v))
            return pf_errf(err, "%s.%s: must be a number", where, key);
        x = json_number_value(v);
    }
    if (!(x >= lo && x <= hi)) /* also refuses NaN */
        return pf_errf(err, "%s.%s: %g is out of range [%g, %g]", where, key, x, lo, hi);
    *out = (float)x;
    return 0;
}

static int get_bool(const json_t *obj, const char *key, int def, int *out, const char *where, pf_err *err)
{
    const json_t *v = obj ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return pf_errf(err, "%s.%s: must be true or false", where, key);
    *out = json_is_true(v);
    return 0;
}

static const char *get_string(const json_t *obj, const char *key, const char *def)
{
    const json_t *v = obj ? json_object_get(obj, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : def;
}

static int parse_act(const json_t *obj, const char *key, pf_act *out, const char *where, pf_err *err)
{
    const json_t *v = obj ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v)) {
        *out = PF_ACT_GELU_TANH;
        return 0;
    }
    if (!json_is_string(v))
        return pf_errf(err, "%s.%s: must be a string", where, key);
    const char *s = json_string_value(v);
    if (!strcmp(s, "gelu_pytorch_tanh") || !strcmp(s, "gelu_new") || !strcmp(s, "gelu_fast"))
        *out = PF_ACT_GELU_TANH;
    else if (!strcmp(s, "gelu"))
        *out = PF_ACT_GELU;
    else
        return pf_errf(err, "%s.%s: unsupported activation \"%s\"", where, key, s);
    return 0;
}

/* eos_token_id: an int or a list of ints. Returns 1 if present, 0 if absent, -1 on error. */
static int parse_eos(const json_t *obj, int vocab, pf_config *c, const char *where, pf_err *err)
{
    const json_t *v = obj ? json_object_get(obj, "eos_token_id") : NULL;
    if (!v || json_is_null(v))
        return 0;
    int n = 0, ids[PF_CFG_MAX_EOS];
    if (json_is_integer(v)) {
        ids[n++] = (int)(json_integer_value(v) < 0 || json_integer_value(v) >= vocab ? -1 : json_integer_value(v));
    } else if (json_is_array(v)) {
        if (json_array_size(v) < 1 || json_array_size(v) > PF_CFG_MAX_EOS)
            return pf_errf(err, "%s.eos_token_id: list must hold 1..%d ids", where, PF_CFG_MAX_EOS);
        for (size_t i = 0; i < json_array_size(v); i++) {
            const json_t *e = json_array_get(v, i);
            if (!json_is_integer(e))
                return pf_errf(err, "%s.eos_token_id[%zu]: must be an integer", where, i);
            json_int_t x = json_integer_value(e);
            ids[n++] = x < 0 || x >= vocab ? -1 : (int)x;
        }
    } else {
        return pf_errf(err, "%s.eos_token_id: must be an integer or a list of integers", where);
    }
    for (int i = 0; i < n; i++)
        if (ids[i] < 0)
            return pf_errf(err, "%s.eos_token_id: ids must be in [0, vocab_size=%d)", where, vocab);
    memcpy(c->eos_ids, ids, sizeof(int) * (size_t)n);
    c->n_eos = n;
    return 1;
}

static int parse_vision(const json_t *vc, pf_vision_config *v, const char *name, pf_err *err)
{
    char where[512];
    snprintf(where, sizeof where, "%s: vision_config", name);
    if (vc && !json_is_object(vc))
        return pf_errf(err, "%s: must be an object", where);
    const char *mt = get_string(vc, "model_type", "siglip_vision_model");
    if (strcmp(mt, "siglip_vision_model") != 0)
        return pf_errf(err, "%s.model_type: unsupported \"%s\" (want siglip_vision_model)", where, mt);
    /* PaliGemmaConfig's own defaults when vision_config is absent; SiglipVisionConfig's otherwise. */
    int absent = vc == NULL;
    if (get_int(vc, "hidden_size", absent ? 1152 : 768, 1, PF_CFG_MAX_HIDDEN, &v->hidden, where, err) ||
        get_int(vc, "intermediate_size", absent ? 4096 : 3072, 1, PF_CFG_MAX_INTERMEDIATE, &v->intermediate, where,
                err) ||
        get_int(vc, "num_hidden_layers", absent ? 27 : 12, 1, PF_CFG_MAX_LAYERS, &v->layers, where, err) ||
        get_int(vc, "num_attention_heads", absent ? 16 : 12, 1, PF_CFG_MAX_HEADS, &v->heads, where, err) ||
        get_int(vc, "patch_size", absent ? 14 : 16, 1, PF_CFG_MAX_IMAGE_SIZE, &v->patch_size, where, err) ||
        get_int(vc, "image_size", 224, 1, PF_CFG_MAX_IMAGE_SIZE, &v->image_size, where, err) ||
        get_int(vc, "num_channels", 3, 1, PF_CFG_MAX_CHANNELS, &v->channels, where, err) ||
        get_float(vc, "layer_norm_eps", 1e-6, 0.0, 1.0, 0, &v->layer_norm_eps, where, err) ||
        parse_act(vc, "hidden_act", &v->act, where, err))
        return -1;
    if (v->hidden % v->heads != 0)
        return pf_errf(err, "%s: hidden_size %d is not a multiple of num_attention_heads %d", where, v->hidden,
                       v->heads);
    v->head_dim = v->hidden / v->heads;
    if (v->patch_size > v->image_size)
        return pf_errf(err, "%s: patch_size %d exceeds image_size %d", where, v->patch_size, v->image_size);
    long long side = v->image_size / v->patch_size;
    if (side * side > PF_CFG_MAX_PATCHES)
        return pf_errf(err, "%s: (image_size / patch_size)^2 = %lld patches, more than %d", where, side * side,
                       PF_CFG_MAX_PATCHES);
    v->num_patches = (int)(side * side);
    return 0;
}

static int parse_text(const json_t *tc, long long top_vocab, pf_text_config *t, int *tie, const char *name,
                      pf_err *err)
{
    char where[512];
    snprintf(where, sizeof where, "%s: text_config", name);
    if (tc && !json_is_object(tc))
        return pf_errf(err, "%s: must be an object", where);
    const char *mt = get_string(tc, "model_type", "gemma");
    if (!strcmp(mt, "gemma"))
        t->kind = PF_TEXT_GEMMA;
    else if (!strcmp(mt, "gemma2"))
        t->kind = PF_TEXT_GEMMA2;
    else
        return pf_errf(err, "%s.model_type: unsupported \"%s\" (want gemma or gemma2)", where, mt);
    int g2 = t->kind == PF_TEXT_GEMMA2, absent = tc == NULL;
    /* Defaults: PaliGemmaConfig's gemma-2b text config when text_config is absent; otherwise GemmaConfig's
     * or Gemma2Config's class defaults. */
    long long d_hidden = absent ? 2048 : g2 ? 2304 : 3072, d_inter = absent ? 16384 : g2 ? 9216 : 24576;
    long long d_layers = absent ? 18 : g2 ? 26 : 28, d_heads = absent ? 8 : g2 ? 8 : 16;
    long long d_kv = absent ? 1 : g2 ? 4 : 16, d_vocab = absent ? top_vocab : 256000;
    if (get_int(tc, "hidden_size", d_hidden, 1, PF_CFG_MAX_HIDDEN, &t->hidden, where, err) ||
        get_int(tc, "intermediate_size", d_inter, 1, PF_CFG_MAX_INTERMEDIATE, &t->intermediate, where, err) ||
        get_int(tc, "num_hidden_layers", d_layers, 1, PF_CFG_MAX_LAYERS, &t->layers, where, err) ||
        get_int(tc, "num_attention_heads", d_heads, 1, PF_CFG_MAX_HEADS, &t->heads, where, err) ||
        get_int(tc, "num_key_value_heads", d_kv, 1, PF_CFG_MAX_HEADS, &t->kv_heads, where, err) ||
        get_int(tc, "head_dim", 256, 2, PF_CFG_MAX_HEAD_DIM, &t->head_dim, where, err) ||
        get_int(tc, "vocab_size", d_vocab, 1, PF_CFG_MAX_VOCAB, &t->vocab_size, where, err) ||
        get_float(tc, "rms_norm_eps", 1e-6, 0.0, 1.0, 0, &t->rms_norm_eps, where, err) ||
        get_float(tc, "rope_theta", 10000.0, 1e-6, 1e30, 0, &t->rope_theta, where, err) ||
        get_int(tc, "max_position_embeddings", 8192, 1, 1 << 30, &t->max_position_embeddings, where, err) ||
        get_bool(tc, "tie_word_embeddings", 1, tie, where, err) ||
        parse_act(tc, "hidden_activation", &t->act, where, err))
        return -1;
    if (g2) {
        if (get_float(tc, "attn_logit_softcapping", 50.0, 0.0, 1e30, 1, &t->attn_logit_softcapping, where, err) ||
            get_float(tc, "final_logit_softcapping", 30.0, 0.0, 1e30, 1, &t->final_logit_softcapping, where, err) ||
            get_float(tc, "query_pre_attn_scalar", 256.0, 1e-30, 1e30, 0, &t->query_pre_attn_scalar, where, err) ||
            get_int(tc, "sliding_window", 4096, 0, 1 << 30, &t->sliding_window, where, err))
            return -1;
        /* null sliding_window: get_int kept the default; transformers treats None as no window. */
        const json_t *sw = json_object_get(tc, "sliding_window");
        if (sw && json_is_null(sw))
            t->sliding_window = 0;
    } else {
        t->attn_logit_softcapping = 0;
        t->final_logit_softcapping = 0;
        t->query_pre_attn_scalar = (float)t->head_dim;
        t->sliding_window = 0;
    }
    int bias = 0;
    if (get_bool(tc, "attention_bias", 0, &bias, where, err))
        return -1;
    if (bias)
        return pf_errf(err, "%s.attention_bias: true is not supported (Gemma has no attention biases)", where);
    const json_t *rs = tc ? json_object_get(tc, "rope_scaling") : NULL;
    if (rs && !json_is_null(rs))
        return pf_errf(err, "%s.rope_scaling: not supported (Gemma uses plain RoPE)", where);
    if (t->heads % t->kv_heads != 0)
        return pf_errf(err, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", where,
                       t->heads, t->kv_heads);
    if (t->head_dim % 2 != 0)
        return pf_errf(err, "%s.head_dim: %d must be even (rotary embedding)", where, t->head_dim);
    if ((long long)t->heads * t->head_dim > PF_CFG_MAX_HIDDEN * 4LL)
        return pf_errf(err, "%s: num_attention_heads * head_dim = %lld is absurd", where,
                       (long long)t->heads * t->head_dim);
    return 0;
}

int pf_config_parse(const char *text, size_t len, const char *name, pf_config *c, pf_err *err)
{
    memset(c, 0, sizeof *c);
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root)
        return pf_errf(err, "%s: not valid JSON (line %d column %d: %s)", name, jerr.line, jerr.column, jerr.text);
    int rc = -1;
    if (!json_is_object(root)) {
        pf_errf(err, "%s: not a JSON object", name);
        goto done;
    }
    const json_t *mt = json_object_get(root, "model_type");
    if (!json_is_string(mt)) {
        pf_errf(err, "%s: model_type missing (want \"paligemma\")", name);
        goto done;
    }
    if (strcmp(json_string_value(mt), "paligemma") != 0) {
        pf_errf(err, "%s: model_type: unsupported \"%s\" (want \"paligemma\")", name, json_string_value(mt));
        goto done;
    }
    int top_vocab = 257152;
    if (get_int(root, "vocab_size", 257152, 1, PF_CFG_MAX_VOCAB, &top_vocab, name, err))
        goto done;
    const json_t *vc = json_object_get(root, "vision_config"), *tc = json_object_get(root, "text_config");
    if (json_is_null(vc))
        vc = NULL;
    if (json_is_null(tc))
        tc = NULL;
    if (parse_vision(vc, &c->vision, name, err) || parse_text(tc, top_vocab, &c->text, &c->tie_word_embeddings,
                                                              name, err))
        goto done;
    const json_t *iti = json_object_get(root, "image_token_index");
    if (get_int(root, iti ? "image_token_index" : "image_token_id", 256000, 0, INT32_MAX - 1, &c->image_token_index,
                name, err) ||
        get_int(root, "projection_dim", 2048, 1, PF_CFG_MAX_HIDDEN, &c->projection_dim, name, err) ||
        get_int(root, "bos_token_id", 2, 0, c->text.vocab_size - 1, &c->bos_id, name, err) ||
        get_int(root, "pad_token_id", 0, 0, c->text.vocab_size - 1, &c->pad_id, name, err))
        goto done;
    if (c->projection_dim != c->text.hidden) {
        pf_errf(err, "%s: projection_dim %d differs from text_config.hidden_size %d (image features could not "
                     "be merged)", name, c->projection_dim, c->text.hidden);
        goto done;
    }
    c->num_image_tokens = c->vision.num_patches;
    c->random_weights = json_is_true(json_object_get(root, "paliflow_random_weights"));
    char where[512];
    snprintf(where, sizeof where, "%s: text_config", name);
    int got = parse_eos(root, c->text.vocab_size, c, name, err);
    if (got == 0)
        got = parse_eos(tc, c->text.vocab_size, c, where, err);
    if (got < 0)
        goto done;
    if (got == 0) {
        c->eos_ids[0] = 1; /* GemmaConfig default */
        c->n_eos = 1;
    }
    rc = 0;
done:
    json_decref(root);
    return rc;
}

int pf_config_parse_generation(const char *text, size_t len, const char *name, pf_config *c, pf_err *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root)
        return pf_errf(err, "%s: not valid JSON (line %d column %d: %s)", name, jerr.line, jerr.column, jerr.text);
    int rc = 0;
    if (!json_is_object(root))
        rc = pf_errf(err, "%s: not a JSON object", name);
    else if (parse_eos(root, c->text.vocab_size, c, name, err) < 0)
        rc = -1;
    json_decref(root);
    return rc;
}

int pf_config_load(const char *path, pf_config *out, pf_err *err)
{
    char *text;
    size_t len;
    if (pf_read_file(path, CONFIG_MAX_BYTES, &text, &len, err) != 0)
        return -1;
    int rc = pf_config_parse(text, len, path, out, err);
    free(text);
    if (rc != 0)
        return -1;
    /* generation_config.json beside config.json decides the stop ids, as in transformers' generate(). */
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) : 0;
    char *dir = slash ? strndup(path, dl) : strdup(".");
    char *gpath = dir ? pf_path_join(dir, "generation_config.json") : NULL;
    free(dir);
    if (!gpath)
        return pf_errf(err, "%s: out of memory", path);
    /* Optional file: absent is fine; present, it is read like config.json (a FIFO or directory by that
     * name is an error, never an open() that waits for a writer). */
    struct stat gst;
    if (stat(gpath, &gst) == 0) {
        if (pf_read_file(gpath, CONFIG_MAX_BYTES, &text, &len, err) != 0) {
            free(gpath);
            return -1;
        }
        rc = pf_config_parse_generation(text, len, gpath, out, err);
        free(text);
    }
    free(gpath);
    return rc;
}

int pf_config_is_eos(const pf_config *c, int32_t id)
{
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == id)
            return 1;
    return 0;
}

int pf_config_layer_is_sliding(const pf_config *c, int layer)
{
    return c->text.kind == PF_TEXT_GEMMA2 && c->text.sliding_window > 0 && layer % 2 == 0;
}
