/* random_ckpt.c - see random_ckpt.h. */
#include "model/tools/random_ckpt.h"

#include <errno.h>
#include <stdarg.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/file.h"
#include "base/grow.h"
#include "model/io/safetensors.h"

/* Shapes from transformers' convert_paligemma_weights_to_hf.py / convert_paligemma2_weights_to_hf.py and the
 * configs google published on the Hugging Face hub (text vocab 257152 + 64 padding rows = 257216). */
#define PG2(size, tag, H, L, NH, NKV, HD, I, QS)                                                                 \
    {.name = "paligemma2-" tag "-pt-" #size, .gemma2 = true, .vocab = 257216, .hidden = H, .layers = L,               \
     .heads = NH, .kv_heads = NKV, .head_dim = HD, .intermediate = I, .query_pre_attn_scalar = QS,                 \
     .sliding_window = 4096, .attn_softcap = 50.0, .final_softcap = 30.0, .image_size = size, .patch = 14,         \
     .v_hidden = 1152, .v_layers = 27, .v_heads = 16, .v_intermediate = 4304, .projection_dim = H,                 \
     .image_token_index = 257152, .top_vocab = 257152}
#define PG2_3B(size) PG2(size, "3b", 2304, 26, 8, 4, 256, 9216, 256)
#define PG2_10B(size) PG2(size, "10b", 3584, 42, 16, 8, 256, 14336, 256)
#define PG2_28B(size) PG2(size, "28b", 4608, 46, 32, 16, 128, 36864, 144)

static const pf_rc_spec g_specs[] = {
    {.name = "paligemma-3b-pt-224", .vocab = 257216, .hidden = 2048, .layers = 18, .heads = 8, .kv_heads = 1,
     .head_dim = 256, .intermediate = 16384, .image_size = 224, .patch = 14, .v_hidden = 1152, .v_layers = 27,
     .v_heads = 16, .v_intermediate = 4304, .projection_dim = 2048, .image_token_index = 257152,
     .top_vocab = 257152},
    {.name = "paligemma-3b-pt-448", .vocab = 257216, .hidden = 2048, .layers = 18, .heads = 8, .kv_heads = 1,
     .head_dim = 256, .intermediate = 16384, .image_size = 448, .patch = 14, .v_hidden = 1152, .v_layers = 27,
     .v_heads = 16, .v_intermediate = 4304, .projection_dim = 2048, .image_token_index = 257152,
     .top_vocab = 257152},
    {.name = "paligemma-3b-pt-896", .vocab = 257216, .hidden = 2048, .layers = 18, .heads = 8, .kv_heads = 1,
     .head_dim = 256, .intermediate = 16384, .image_size = 896, .patch = 14, .v_hidden = 1152, .v_layers = 27,
     .v_heads = 16, .v_intermediate = 4304, .projection_dim = 2048, .image_token_index = 257152,
     .top_vocab = 257152},
    /* PaliGemma 2: Gemma 2 2B / 9B / 27B text models (hidden 2304 / 3584 / 4608, layers 26 / 42 / 46, heads
     * 8 / 16 / 32 over 4 / 8 / 16 kv heads, head_dim 256 / 256 / 128, MLP 9216 / 14336 / 36864,
     * query_pre_attn_scalar 256 / 256 / 144 = hidden / heads for 27B), sliding window 4096, soft-caps 50 / 30;
     * the same SigLIP-So400m tower at 224 / 448 / 896 px. */
    PG2_3B(224), PG2_3B(448), PG2_3B(896),
    PG2_10B(224), PG2_10B(448), PG2_10B(896),
    PG2_28B(224), PG2_28B(448), PG2_28B(896),
    /* Test models: small everything, 56 px (16 image tokens), image token = vocab - 24 as in the goldens. */
    {.name = "tiny-gemma", .vocab = 1024, .hidden = 32, .layers = 2, .heads = 4, .kv_heads = 1, .head_dim = 8,
     .intermediate = 64, .image_size = 56, .patch = 14, .v_hidden = 32, .v_layers = 2, .v_heads = 4,
     .v_intermediate = 64, .projection_dim = 32, .image_token_index = 1000, .top_vocab = 1024},
    {.name = "tiny-gemma2", .gemma2 = true, .vocab = 1024, .hidden = 32, .layers = 2, .heads = 4, .kv_heads = 2,
     .head_dim = 8, .intermediate = 64, .query_pre_attn_scalar = 8, .sliding_window = 16, .attn_softcap = 50.0,
     .final_softcap = 30.0, .image_size = 56, .patch = 14, .v_hidden = 32, .v_layers = 2, .v_heads = 4,
     .v_intermediate = 64, .projection_dim = 32, .image_token_index = 1000, .top_vocab = 1024},
};
#define NSPECS (sizeof g_specs / sizeof g_specs[0])

const char *const *pf_rc_spec_names(void)
{
    static const char *names[NSPECS + 1];
    for (size_t i = 0; i < NSPECS; i++)
        names[i] = g_specs[i].name;
    names[NSPECS] = NULL;
    return names;
}

int pf_rc_spec_lookup(const char *name, pf_rc_spec *out, pf_err *err)
{
    for (size_t i = 0; i < NSPECS; i++)
        if (name && strcmp(name, g_specs[i].name) == 0) {
            *out = g_specs[i];
            return 0;
        }
    char list[1024] = "";
    size_t used = 0;
    for (size_t i = 0; i < NSPECS && used + 70 < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%.60s", i ? ", " : "", g_specs[i].name);
    return pf_errf(err, "model '%s': unknown (known: %s)", name ? name : "(null)", list);
}

void pf_rc_spec_tiny(pf_rc_spec *s, int64_t hidden)
{
    if (hidden <= 0)
        hidden = 8;
    char name[64];
    snprintf(name, sizeof name, "%.50s-tiny", s->name);
    memcpy(s->name, name, sizeof s->name);
    s->hidden = hidden;
    s->projection_dim = hidden;
    s->layers = 2;
    s->heads = 2;
    s->kv_heads = 1;
    s->head_dim = hidden;
    s->intermediate = 4 * hidden;
    if (s->gemma2) {
        s->query_pre_attn_scalar = hidden;
        s->sliding_window = 128;
    }
    s->v_hidden = 16;
    s->v_layers = 2;
    s->v_heads = 2;
    s->v_intermediate = 32;
}

int pf_rc_spec_check(const pf_rc_spec *s, pf_err *err)
{
    struct {
        const char *what;
        int64_t v, max;
    } pos[] = {{"vocab_size", s->vocab, 1 << 22},         {"hidden_size", s->hidden, 1 << 16},
               {"num_hidden_layers", s->layers, 1024},    {"num_attention_heads", s->heads, 1024},
               {"num_key_value_heads", s->kv_heads, 1024}, {"head_dim", s->head_dim, 4096},
               {"intermediate_size", s->intermediate, 1 << 18}, {"image_size", s->image_size, 8192},
               {"patch_size", s->patch, 1024},            {"vision hidden_size", s->v_hidden, 1 << 16},
               {"vision num_hidden_layers", s->v_layers, 1024}, {"vision num_attention_heads", s->v_heads, 1024},
               {"vision intermediate_size", s->v_intermediate, 1 << 18}};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
        if (pos[i].v < 1 || pos[i].v > pos[i].max)
            return pf_errf(err, "%s: %s %lld out of range 1..%lld", s->name, pos[i].what, (long long)pos[i].v,
                           (long long)pos[i].max);
    if (s->heads % s->kv_heads != 0)
        return pf_errf(err, "%s: num_attention_heads %lld not a multiple of num_key_value_heads %lld", s->name,
                       (long long)s->heads, (long long)s->kv_heads);
    if (s->v_hidden % s->v_heads != 0)
        return pf_errf(err, "%s: vision hidden_size %lld not a multiple of its heads %lld", s->name,
                       (long long)s->v_hidden, (long long)s->v_heads);
    if (s->image_size % s->patch != 0)
        return pf_errf(err, "%s: image_size %lld not a multiple of patch_size %lld", s->name,
                       (long long)s->image_size, (long long)s->patch);
    if (s->image_token_index < 0 || s->image_token_index >= s->vocab)
        return pf_errf(err, "%s: image_token_index %lld outside the vocabulary (%lld)", s->name,
                       (long long)s->image_token_index, (long long)s->vocab);
    if (s->projection_dim != s->hidden)
        return pf_errf(err, "%s: projection_dim %lld must equal the text hidden_size %lld", s->name,
                       (long long)s->projection_dim, (long long)s->hidden);
    return 0;
}

/* ---------------------------------------------------------------- tensors */

typedef struct tlist {
    pf_rc_tensor *t;
    size_t n, cap;
    bool oom;
} tlist;

static void add(tlist *l, float mean, float std, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                const char *fmt, ...) __attribute__((format(printf, 9, 10)));

static void add(tlist *l, float mean, float std, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                const char *fmt, ...)
{
    if (l->oom)
        return;
    if (PF_GROW(l->t, l->cap, l->n, 1, 256)) {
        l->oom = true;
        return;
    }
    pf_rc_tensor *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->ndim = ndim;
    int64_t d[4] = {d0, d1, d2, d3};
    for (int i = 0; i < ndim; i++)
        t->shape[i] = d[i];
    t->mean = mean;
    t->std = std;
}

#define NORM_STD 0.02f
#define BIAS_STD 0.02f

static float inv_sqrt(int64_t n)
{
    return (float)(1.0 / sqrt((double)n));
}

int pf_rc_tensors(const pf_rc_spec *s, pf_rc_tensor **out, size_t *count, pf_err *err)
{
    *out = NULL;
    *count = 0;
    if (pf_rc_spec_check(s, err) != 0)
        return -1;
    tlist l = {0};
    const int64_t H = s->hidden, Q = s->heads * s->head_dim, KV = s->kv_heads * s->head_dim, I = s->intermediate;
    const char *lm = "language_model.model";
    add(&l, 0, inv_sqrt(H), 2, s->vocab, H, 0, 0, "%s.embed_tokens.weight", lm);
    for (int64_t i = 0; i < s->layers; i++) {
        add(&l, 0, NORM_STD, 1, H, 0, 0, 0, "%s.layers.%lld.input_layernorm.weight", lm, (long long)i);
        add(&l, 0, inv_sqrt(H), 2, Q, H, 0, 0, "%s.layers.%lld.self_attn.q_proj.weight", lm, (long long)i);
        add(&l, 0, inv_sqrt(H), 2, KV, H, 0, 0, "%s.layers.%lld.self_attn.k_proj.weight", lm, (long long)i);
        add(&l, 0, inv_sqrt(H), 2, KV, H, 0, 0, "%s.layers.%lld.self_attn.v_proj.weight", lm, (long long)i);
        add(&l, 0, inv_sqrt(Q), 2, H, Q, 0, 0, "%s.layers.%lld.self_attn.o_proj.weight", lm, (long long)i);
        add(&l, 0, NORM_STD, 1, H, 0, 0, 0, "%s.layers.%lld.post_attention_layernorm.weight", lm, (long long)i);
        if (s->gemma2) {
            add(&l, 0, NORM_STD, 1, H, 0, 0, 0, "%s.layers.%lld.pre_feedforward_layernorm.weight", lm, (long long)i);
            add(&l, 0, NORM_STD, 1, H, 0, 0, 0, "%s.layers.%lld.post_feedforward_layernorm.weight", lm, (long long)i);
        }
        add(&l, 0, inv_sqrt(H), 2, I, H, 0, 0, "%s.layers.%lld.mlp.gate_proj.weight", lm, (long long)i);
        add(&l, 0, inv_sqrt(H), 2, I, H, 0, 0, "%s.layers.%lld.mlp.up_proj.weight", lm, (long long)i);
        add(&l, 0, inv_sqrt(I), 2, H, I, 0, 0, "%s.layers.%lld.mlp.down_proj.weight", lm, (long long)i);
    }
    add(&l, 0, NORM_STD, 1, H, 0, 0, 0, "%s.norm.weight", lm);

    const int64_t D = s->v_hidden, VI = s->v_intermediate, P = s->patch, G = s->image_size / s->patch;
    add(&l, 0, inv_sqrt(D), 2, s->projection_dim, D, 0, 0, "multi_modal_projector.linear.weight");
    add(&l, 0, BIAS_STD, 1, s->projection_dim, 0, 0, 0, "multi_modal_projector.linear.bias");

    const char *vm = "vision_tower.vision_model";
    add(&l, 0, inv_sqrt(3 * P * P), 4, D, 3, P, P, "%s.embeddings.patch_embedding.weight", vm);
    add(&l, 0, BIAS_STD, 1, D, 0, 0, 0, "%s.embeddings.patch_embedding.bias", vm);
    add(&l, 0, 0.1f, 2, G * G, D, 0, 0, "%s.embeddings.position_embedding.weight", vm);
    static const char *attn[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    for (int64_t i = 0; i < s->v_layers; i++) {
        const long long li = (long long)i;
        add(&l, 1, NORM_STD, 1, D, 0, 0, 0, "%s.encoder.layers.%lld.layer_norm1.weight", vm, li);
        add(&l, 0, BIAS_STD, 1, D, 0, 0, 0, "%s.encoder.layers.%lld.layer_norm1.bias", vm, li);
        for (int a = 0; a < 4; a++) {
            add(&l, 0, inv_sqrt(D), 2, D, D, 0, 0, "%s.encoder.layers.%lld.self_attn.%s.weight", vm, li, attn[a]);
            add(&l, 0, BIAS_STD, 1, D, 0, 0, 0, "%s.encoder.layers.%lld.self_attn.%s.bias", vm, li, attn[a]);
        }
        add(&l, 1, NORM_STD, 1, D, 0, 0, 0, "%s.encoder.layers.%lld.layer_norm2.weight", vm, li);
        add(&l, 0, BIAS_STD, 1, D, 0, 0, 0, "%s.encoder.layers.%lld.layer_norm2.bias", vm, li);
        add(&l, 0, inv_sqrt(D), 2, VI, D, 0, 0, "%s.encoder.layers.%lld.mlp.fc1.weight", vm, li);
        add(&l, 0, BIAS_STD, 1, VI, 0, 0, 0, "%s.encoder.layers.%lld.mlp.fc1.bias", vm, li);
        add(&l, 0, inv_sqrt(VI), 2, D, VI, 0, 0, "%s.encoder.layers.%lld.mlp.fc2.weight", vm, li);
        add(&l, 0, BIAS_STD, 1, D, 0, 0, 0, "%s.encoder.layers.%lld.mlp.fc2.bias", vm, li);
    }
    add(&l, 1, NORM_STD, 1, D, 0, 0, 0, "%s.post_layernorm.weight", vm);
    add(&l, 0, BIAS_STD, 1, D, 0, 0, 0, "%s.post_layernorm.bias", vm);
    if (l.oom) {
        free(l.t);
        return pf_errf(err, "%s: out of memory listing tensors", s->name);
    }
    *out = l.t;
    *count = l.n;
    return 0;
}

static uint64_t numel(const pf_rc_tensor *t)
{
    uint64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (uint64_t)t->shape[i];
    return n;
}

/* ---------------------------------------------------------------- values */

static inline uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t tensor_key(uint64_t seed, const char *name)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return splitmix64(seed ^ splitmix64(h));
}

/* Irwin-Hall with 4 terms, rescaled to unit variance: sum of four 16-bit uniforms. */
static inline float unit_normalish(uint64_t key, uint64_t i)
{
    uint64_t r = splitmix64(key + i * 0xd1342543de82ef95ull);
    float s = (float)(r & 0xffff) + (float)((r >> 16) & 0xffff) + (float)((r >> 32) & 0xffff) + (float)(r >> 48);
    /* mean 4 * 32767.5, variance 4 * (65536^2 - 1) / 12 */
    return (s - 131070.0f) * (1.0f / 37837.23f);
}

float pf_rc_value(uint64_t seed, const pf_rc_tensor *t, uint64_t i)
{
    return t->mean + t->std * unit_normalish(tensor_key(seed, t->name), i);
}

/* ---------------------------------------------------------------- config */

static void set_int(json_t *o, const char *k, int64_t v)
{
    json_object_set_new(o, k, json_integer((json_int_t)v));
}

/* transformers' to_diff_dict keeps a sub-config field unless it equals both PaliGemmaConfig's default
 * sub-config and the sub-config class's own default. */
static void set_diff(json_t *o, const char *k, int64_t v, int64_t pg_default, int64_t class_default)
{
    if (v != pg_default || v != class_default)
        set_int(o, k, v);
}

char *pf_rc_config_json(const pf_rc_spec *s, pf_dtype dtype)
{
    json_t *root = json_object(), *text = json_object(), *vis = json_object();
    if (!root || !text || !vis) {
        json_decref(root);
        json_decref(text);
        json_decref(vis);
        return NULL;
    }
    set_int(root, "_vocab_size", s->top_vocab);
    json_object_set_new(root, "architectures", json_pack("[s]", "PaliGemmaForConditionalGeneration"));
    set_int(root, "bos_token_id", 2);
    set_int(root, "eos_token_id", 1);
    set_int(root, "hidden_size", s->hidden);
    set_int(root, "image_token_index", s->image_token_index);
    json_object_set_new(root, "model_type", json_string("paligemma"));
    set_int(root, "pad_token_id", 0);
    set_int(root, "projection_dim", s->projection_dim);
    json_object_set_new(root, "torch_dtype", json_string(dtype == PF_DT_F32 ? "float32" : "bfloat16"));
    json_object_set_new(root, "transformers_version", json_string("4.47.0"));
    /* transformers ignores unknown keys; paliflow warns loudly that this model's output is noise */
    json_object_set_new(root, "paliflow_random_weights", json_true());

    /* PaliGemma's default text config: GemmaConfig(hidden 2048, 18 layers, 16384, 8 heads, 1 kv, vocab 257152).
     * Class defaults: GemmaConfig 3072/28/24576/16/16/256000, Gemma2Config 2304/26/9216/8/4/256000. */
    int64_t c_hidden = s->gemma2 ? 2304 : 3072, c_layers = s->gemma2 ? 26 : 28, c_inter = s->gemma2 ? 9216 : 24576;
    int64_t c_heads = s->gemma2 ? 8 : 16, c_kv = s->gemma2 ? 4 : 16;
    json_object_set_new(text, "hidden_activation", json_string("gelu_pytorch_tanh"));
    set_diff(text, "hidden_size", s->hidden, 2048, c_hidden);
    set_diff(text, "intermediate_size", s->intermediate, 16384, c_inter);
    json_object_set_new(text, "model_type", json_string(s->gemma2 ? "gemma2" : "gemma"));
    set_diff(text, "num_attention_heads", s->heads, 8, c_heads);
    set_diff(text, "num_hidden_layers", s->layers, 18, c_layers);
    set_int(text, "num_image_tokens", (s->image_size / s->patch) * (s->image_size / s->patch));
    set_diff(text, "num_key_value_heads", s->kv_heads, 1, c_kv);
    set_diff(text, "head_dim", s->head_dim, 256, 256);
    set_diff(text, "vocab_size", s->vocab, 257152, 256000);
    if (s->gemma2) { /* fields GemmaConfig lacks are always written */
        json_object_set_new(text, "attn_logit_softcapping", json_real(s->attn_softcap));
        json_object_set_new(text, "cache_implementation", json_string("hybrid"));
        json_object_set_new(text, "final_logit_softcapping", json_real(s->final_softcap));
        set_int(text, "query_pre_attn_scalar", s->query_pre_attn_scalar);
        set_int(text, "sliding_window", s->sliding_window);
    }
    json_object_set_new(root, "text_config", text);

    /* PaliGemma's default vision config: 1152 / 4096 / patch 14 / 224 px / 27 layers / 16 heads;
     * SiglipVisionConfig's: 768 / 3072 / 16 / 224 / 12 / 12. */
    set_diff(vis, "hidden_size", s->v_hidden, 1152, 768);
    set_diff(vis, "image_size", s->image_size, 224, 224);
    set_diff(vis, "intermediate_size", s->v_intermediate, 4096, 3072);
    json_object_set_new(vis, "model_type", json_string("siglip_vision_model"));
    set_diff(vis, "num_attention_heads", s->v_heads, 16, 12);
    set_diff(vis, "num_hidden_layers", s->v_layers, 27, 12);
    set_int(vis, "num_image_tokens", (s->image_size / s->patch) * (s->image_size / s->patch));
    set_diff(vis, "patch_size", s->patch, 14, 16);
    set_int(vis, "projection_dim", s->projection_dim);
    json_object_set_new(vis, "vision_use_head", json_false());
    json_object_set_new(root, "vision_config", vis);

    char *txt = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (!txt)
        return NULL;
    size_t n = strlen(txt);
    char *out = realloc(txt, n + 2);
    if (!out) {
        free(txt);
        return NULL;
    }
    out[n] = '\n';
    out[n + 1] = '\0';
    return out;
}

/* ---------------------------------------------------------------- writing */

typedef struct progress {
    bool on;
    const char *file;
    uint64_t done, total, next;
    double t0;
} progress;

typedef struct fill_ctx {
    const pf_rc_tensor *t;
    uint64_t key;
    pf_dtype dtype;
    progress *prog;
} fill_ctx;

static int fill(void *vctx, uint8_t *dst, size_t offset, size_t n, pf_err *err)
{
    fill_ctx *c = vctx;
    size_t esz = pf_dtype_size(c->dtype);
    if (offset % esz || n % esz)
        return pf_errf(err, "chunk [%zu, +%zu) not aligned to %zu-byte elements", offset, n, esz);
    const int64_t e0 = (int64_t)(offset / esz), cnt = (int64_t)(n / esz);
    const float mean = c->t->mean, std = c->t->std;
#pragma omp parallel for schedule(static) if (cnt >= (1 << 16))
    for (int64_t j = 0; j < cnt; j++) {
        float v = mean + std * unit_normalish(c->key, (uint64_t)(e0 + j));
        if (c->dtype == PF_DT_BF16) {
            uint16_t b = pf_f32_to_bf16(v);
            memcpy(dst + j * 2, &b, 2);
        } else {
            memcpy(dst + j * 4, &v, 4);
        }
    }
    progress *p = c->prog;
    p->done += n;
    if (p->on && p->done >= p->next) {
        double dt = pf_now() - p->t0;
        fprintf(stderr, "make-random-checkpoint: %s %3.0f%% (%.1f of %.1f MB, %.0f MB/s)\n", p->file,
                100.0 * (double)p->done / (double)p->total, (double)p->done / 1e6, (double)p->total / 1e6,
                dt > 0 ? (double)p->done / dt / 1e6 : 0.0);
        p->next = p->done + p->total / 10 + 1;
    }
    return 0;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp((*(const pf_rc_tensor *const *)a)->name, (*(const pf_rc_tensor *const *)b)->name);
}

static int mkdir_p(const char *dir, pf_err *err)
{
    char *p = strdup(dir);
    if (!p)
        return pf_errf(err, "%s: out of memory", dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            free(p);
            return pf_errf(err, "%s: mkdir: %s", dir, strerror(e));
        }
        *s = '/';
    }
    int rc = 0;
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
        rc = pf_errf(err, "%s: mkdir: %s", dir, strerror(errno));
    struct stat st;
    if (rc == 0 && (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)))
        rc = pf_errf(err, "%s: not a directory", dir);
    free(p);
    return rc;
}

static int write_text(const char *dir, const char *name, const char *text, pf_err *err)
{
    char *path = pf_path_join(dir, name);
    if (!path)
        return pf_errf(err, "%s: out of memory", dir);
    int rc = pf_write_file_atomic(path, text, strlen(text), err);
    free(path);
    return rc;
}

static int write_shard(const char *path, const char *fname, pf_rc_tensor **ts, size_t n, uint64_t seed,
                       pf_dtype dtype, progress *prog, pf_err *err)
{
    pf_st_entry *e = calloc(n, sizeof *e);
    fill_ctx *fc = calloc(n, sizeof *fc);
    int rc = -1;
    if (!e || !fc) {
        pf_errf(err, "%s: out of memory", path);
        goto done;
    }
    prog->file = fname;
    prog->done = 0;
    prog->total = 0;
    for (size_t i = 0; i < n; i++) {
        fc[i] = (fill_ctx){.t = ts[i], .key = tensor_key(seed, ts[i]->name), .dtype = dtype, .prog = prog};
        e[i].name = ts[i]->name;
        e[i].dtype = dtype;
        e[i].ndim = ts[i]->ndim;
        memcpy(e[i].shape, ts[i]->shape, sizeof ts[i]->shape);
        e[i].fill = fill;
        e[i].fill_ctx = &fc[i];
        prog->total += numel(ts[i]) * pf_dtype_size(dtype);
    }
    prog->next = prog->total / 10;
    prog->t0 = pf_now();
    rc = pf_st_write(path, e, n, "{\"format\":\"pt\"}", err);
done:
    free(e);
    free(fc);
    return rc;
}

int pf_rc_write(const pf_rc_spec *s, const char *out_dir, const pf_rc_params *o, pf_err *err)
{
    pf_dtype dtype = o->f32 ? PF_DT_F32 : PF_DT_BF16;
    uint64_t max_shard = o->max_shard_bytes ? o->max_shard_bytes : 5000000000ull;
    pf_rc_tensor *ts = NULL;
    size_t nt = 0;
    if (pf_rc_tensors(s, &ts, &nt, err) != 0)
        return -1;
    if (mkdir_p(out_dir, err) != 0) {
        free(ts);
        return -1;
    }
    /* Shards in writing order, a new one whenever the next tensor would overflow (one tensor larger than
     * the limit gets a shard of its own), as transformers does. */
    size_t *shard_of = calloc(nt, sizeof *shard_of);
    pf_rc_tensor **sorted = calloc(nt, sizeof *sorted);
    json_t *index = json_object(), *wmap = json_object();
    char *cfg = pf_rc_config_json(s, dtype);
    int rc = -1;
    if (!shard_of || !sorted || !index || !wmap || !cfg) {
        pf_errf(err, "%s: out of memory", out_dir);
        goto done;
    }
    size_t nshards = 0;
    uint64_t cur = 0, total = 0;
    for (size_t i = 0; i < nt; i++) {
        uint64_t b = numel(&ts[i]) * pf_dtype_size(dtype);
        if (nshards == 0 || (cur > 0 && cur + b > max_shard)) {
            nshards++;
            cur = 0;
        }
        shard_of[i] = nshards - 1;
        cur += b;
        total += b;
    }
    if (nshards > 99999) {
        pf_errf(err, "%s: %zu shards: --max-shard-size too small", out_dir, nshards);
        goto done;
    }
    progress prog = {.on = o->progress, .t0 = pf_now()};
    for (size_t sh = 0; sh < nshards; sh++) {
        char fname[64];
        if (nshards == 1)
            snprintf(fname, sizeof fname, "model.safetensors");
        else
            snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", sh + 1, nshards);
        size_t n = 0;
        for (size_t i = 0; i < nt; i++)
            if (shard_of[i] == sh) {
                sorted[n++] = &ts[i];
                json_object_set_new(wmap, ts[i].name, json_string(fname));
            }
        qsort(sorted, n, sizeof *sorted, cmp_tensor_name);
        char *path = pf_path_join(out_dir, fname);
        if (!path) {
            pf_errf(err, "%s: out of memory", out_dir);
            goto done;
        }
        int wrc = write_shard(path, fname, sorted, n, o->seed, dtype, &prog, err);
        free(path);
        if (wrc != 0)
            goto done;
    }
    if (nshards > 1) {
        json_t *meta = json_object();
        json_object_set_new(meta, "total_size", json_integer((json_int_t)total));
        json_object_set_new(index, "metadata", meta);
        json_object_set(index, "weight_map", wmap);
        char *txt = json_dumps(index, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (!txt) {
            pf_errf(err, "%s: out of memory", out_dir);
            goto done;
        }
        size_t len = strlen(txt);
        char *t2 = realloc(txt, len + 2);
        if (!t2) {
            free(txt);
            pf_errf(err, "%s: out of memory", out_dir);
            goto done;
        }
        memcpy(t2 + len, "\n", 2);
        int irc = write_text(out_dir, "model.safetensors.index.json", t2, err);
        free(t2);
        if (irc != 0)
            goto done;
    }
    /* A previous checkpoint in the same folder must not leave a stale index or single file behind. */
    char *stale = pf_path_join(out_dir, nshards > 1 ? "model.safetensors" : "model.safetensors.index.json");
    if (stale)
        unlink(stale);
    free(stale);
    if (write_text(out_dir, "config.json", cfg, err) != 0 ||
        write_text(out_dir, "generation_config.json",
                   "{\n  \"_from_model_config\": true,\n  \"bos_token_id\": 2,\n  \"eos_token_id\": 1,\n"
                   "  \"pad_token_id\": 0,\n  \"transformers_version\": \"4.47.0\"\n}\n",
                   err) != 0)
        goto done;
    rc = 0;
done:
    free(cfg);
    json_decref(wmap);
    json_decref(index);
    free(sorted);
    free(shard_of);
    free(ts);
    return rc;
}
