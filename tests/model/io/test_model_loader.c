/* Checkpoint loader: golden checkpoints load with the right config (defaults, layouts, shards, dtypes);
 * broken checkpoints made here in a temp dir (never committed) are refused with a clear message.
 * The broken ones are edits of a random checkpoint written here (pf_rc_write, the shapes of the golden case
 * eos_early_stop), so they run in a clone without the golden data; `test_model_loader golden` runs the checks
 * that load the golden checkpoints themselves (tests/golden_split.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../golden_split.h"
#include "base/file.h"
#include "model/io/checkpoint.h"
#include "model/io/model.h"
#include "model/tools/random_ckpt.h"

/* g_src: the intact checkpoint the broken ones are made from; g_dir: where they are written. */
static char g_src[256], g_dir[256];

/* The intact checkpoint: tiny-gemma widened to the golden case eos_early_stop's shapes (text 64 wide, 4 heads
 * of 16, 1 kv head, MLP 128; vision 32 wide; projection 64), F32, one file: the messages below name them. */
static int make_src(void)
{
    pf_rc_spec s;
    pf_err err;
    if (pf_rc_spec_lookup("tiny-gemma", &s, &err))
        goto fail;
    s.hidden = 64;
    s.head_dim = 16;
    s.intermediate = 128;
    s.projection_dim = 64;
    pf_rc_params o = {.seed = 11, .f32 = true};
    snprintf(g_src, sizeof g_src, "/tmp/pf_loader_src_XXXXXX");
    if (!mkdtemp(g_src)) {
        snprintf(err.msg, sizeof err.msg, "mkdtemp %s failed", g_src);
        goto fail;
    }
    if (pf_rc_spec_check(&s, &err) || pf_rc_write(&s, g_src, &o, &err))
        goto fail;
    return 0;
fail:
    fprintf(stderr, "test_model_loader: cannot make the source checkpoint: %s\n", err.msg);
    g_src[0] = '\0';
    return -1;
}

static void remove_src(void)
{
    const char *names[] = {"config.json", "generation_config.json", "model.safetensors"};
    char p[512];
    if (!g_src[0])
        return;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", g_src, names[i]);
        unlink(p);
    }
    rmdir(g_src);
}

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", g_dir, name); }

static void write_bytes(const char *name, const void *data, size_t n)
{
    char p[512];
    path_in(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static char *read_src(const char *name, size_t *len)
{
    char p[512], *text;
    snprintf(p, sizeof p, "%s/%s", g_src, name);
    pf_err err;
    if (pf_read_file(p, 1u << 30, &text, len, &err) != 0)
        fail_msg("%s", err.msg);
    return text;
}

static void clean_dir(void)
{
    const char *names[] = {"config.json", "model.safetensors", "model.safetensors.index.json", "a.safetensors",
                           "b.safetensors", "generation_config.json"};
    char p[512];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        path_in(p, sizeof p, names[i]);
        unlink(p);
    }
}

/* config.json: the golden one, optionally edited (key path "text_config.hidden_size" style). */
static void write_config(const char *key, json_t *value)
{
    size_t len;
    char *text = read_src("config.json", &len);
    json_t *root = json_loads(text, 0, NULL);
    free(text);
    assert_non_null(root);
    if (key) {
        json_t *obj = root;
        char k[128];
        snprintf(k, sizeof k, "%s", key);
        char *dot = strchr(k, '.');
        if (dot) {
            *dot = '\0';
            obj = json_object_get(root, k);
            memmove(k, dot + 1, strlen(dot + 1) + 1);
        }
        json_object_set_new(obj, k, value);
    }
    char *out = json_dumps(root, JSON_INDENT(1));
    write_bytes("config.json", out, strlen(out));
    free(out);
    json_decref(root);
}

/* model.safetensors from the golden one with its header edited by fn; data bytes kept, optionally cut. */
typedef void (*header_edit)(json_t *hdr);
static void write_weights(header_edit fn, size_t cut)
{
    size_t len;
    char *raw = read_src("model.safetensors", &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | (uint8_t)raw[i];
    json_t *hdr = json_loadb(raw + 8, (size_t)hlen, 0, NULL);
    assert_non_null(hdr);
    if (fn)
        fn(hdr);
    char *h = json_dumps(hdr, JSON_COMPACT);
    size_t nh = strlen(h), dsize = len - 8 - (size_t)hlen - cut;
    char *out = malloc(8 + nh + dsize);
    for (int i = 0; i < 8; i++)
        out[i] = (char)((uint64_t)nh >> (8 * i));
    memcpy(out + 8, h, nh);
    memcpy(out + 8 + nh, raw + 8 + hlen, dsize);
    write_bytes("model.safetensors", out, 8 + nh + dsize);
    free(out);
    free(h);
    json_decref(hdr);
    free(raw);
}

static void expect_load_fails(const char *needle1, const char *needle2)
{
    pf_model *m = NULL;
    pf_err err = {{0}};
    int rc = pf_model_load(g_dir, &m, &err);
    if (rc == 0) {
        pf_model_free(m);
        fail_msg("load succeeded; expected an error with \"%s\"", needle1);
    }
    assert_null(m);
    if (!strstr(err.msg, needle1) || (needle2 && !strstr(err.msg, needle2)))
        fail_msg("message \"%s\" lacks \"%s\" / \"%s\"", err.msg, needle1, needle2 ? needle2 : "");
}

static pf_model *load_ok(const char *dir)
{
    pf_model *m = NULL;
    pf_err err;
    if (pf_model_load(dir, &m, &err) != 0)
        fail_msg("%s", err.msg);
    return m;
}

#define QW "language_model.model.layers.0.self_attn.q_proj.weight"

/* ---- golden checkpoints load ---- */

static void test_hub_minimal_defaults(void **state)
{
    (void)state;
    pf_model *m = load_ok(PF_GOLDEN_DIR "/model/hub_minimal_config/checkpoint");
    const pf_config *c = pf_model_config(m);
    assert_int_equal(c->text.kind, PF_TEXT_GEMMA);
    assert_int_equal(c->text.head_dim, 256); /* default, not hidden/heads = 32 */
    assert_int_equal(c->vision.image_size, 224);
    assert_int_equal(c->vision.channels, 3);
    assert_int_equal(c->num_image_tokens, 256);
    assert_int_equal(c->text.max_position_embeddings, 8192);
    assert_true(c->text.rope_theta == 10000.0f);
    assert_true(c->text.rms_norm_eps == 1e-6f);
    assert_true(c->vision.layer_norm_eps == 1e-6f);
    assert_int_equal(c->text.vocab_size, 1024); /* top-level 257152 is ignored */
    assert_int_equal(c->vision.act, PF_ACT_GELU_TANH);
    assert_int_equal(c->n_eos, 1);
    assert_int_equal(c->eos_ids[0], 1);
    assert_int_equal(m->layout, PF_LAYOUT_V1);
    assert_ptr_equal(m->lm_head, m->embed); /* tied */
    pf_model_free(m);
}

static void test_layouts_and_dtypes(void **state)
{
    (void)state;
    pf_model *m = load_ok(PF_GOLDEN_DIR "/model/new_layout_f16/checkpoint");
    assert_int_equal(m->layout, PF_LAYOUT_V2);
    assert_ptr_not_equal(m->lm_head, m->embed); /* explicit lm_head.weight */
    assert_memory_equal(m->lm_head, m->embed, sizeof(float) * 1024 * 64);
    assert_true(m->arena_floats > 0); /* F16 converted */
    assert_non_null(pf_model_find_tensor(m, "language_model.model.norm.weight"));
    pf_model_free(m);

    m = load_ok(PF_GOLDEN_DIR "/model/score_bf16_sharded/checkpoint");
    assert_int_equal(m->ckpt.n_files, 3);
    const pf_st_tensor *t = pf_model_find_tensor(m, "language_model.model.embed_tokens.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, PF_DT_BF16); /* the stored bytes stay available to engines */
    pf_model_free(m);

    m = load_ok(PF_GOLDEN_DIR "/model/pg2_gemma2_window/checkpoint");
    const pf_config *c = pf_model_config(m);
    assert_int_equal(c->text.kind, PF_TEXT_GEMMA2);
    assert_int_equal(c->text.sliding_window, 24);
    assert_true(c->text.query_pre_attn_scalar == 32.0f);
    assert_true(c->text.attn_logit_softcapping == 5.0f);
    assert_true(c->text.final_logit_softcapping == 4.0f);
    assert_true(pf_config_layer_is_sliding(c, 0) && !pf_config_layer_is_sliding(c, 1) &&
                pf_config_layer_is_sliding(c, 2));
    assert_non_null(m->tlayers[3].post_ff_norm);
    assert_int_equal(m->arena_floats, 0); /* F32: weights used in place from the mapping */
    pf_model_free(m);
}

static void test_eos_list_and_generation_config(void **state)
{
    (void)state;
    clean_dir();
    json_t *list = json_pack("[i,i]", 1, 107);
    write_config("eos_token_id", list);
    write_weights(NULL, 0);
    pf_model *m = load_ok(g_dir);
    assert_int_equal(m->cfg.n_eos, 2);
    assert_true(pf_config_is_eos(&m->cfg, 107) && pf_config_is_eos(&m->cfg, 1) && !pf_config_is_eos(&m->cfg, 2));
    pf_model_free(m);
    const char *gen = "{\"eos_token_id\": [1, 5, 9]}";
    write_bytes("generation_config.json", gen, strlen(gen));
    m = load_ok(g_dir);
    assert_int_equal(m->cfg.n_eos, 3);
    assert_true(pf_config_is_eos(&m->cfg, 9) && !pf_config_is_eos(&m->cfg, 107));
    pf_model_free(m);
}

/* ---- broken checkpoints ---- */

static void test_truncated(void **state)
{
    (void)state;
    clean_dir();
    write_config(NULL, NULL);
    write_weights(NULL, 1000);
    expect_load_fails("model.safetensors", "data_offsets");
    /* cut inside the header */
    write_bytes("model.safetensors", "\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":", 13);
    expect_load_fails("model.safetensors", "header length");
    write_bytes("model.safetensors", "", 0);
    expect_load_fails("model.safetensors", "too short");
}

static void edit_lying(json_t *h)
{
    json_t *off = json_object_get(json_object_get(h, QW), "data_offsets");
    json_array_set_new(off, 1, json_integer(json_integer_value(json_array_get(off, 1)) + (1 << 30)));
}
static void edit_overlap(json_t *h)
{
    json_t *a = json_object_get(json_object_get(h, "language_model.model.layers.0.input_layernorm.weight"), "data_offsets");
    json_object_set(json_object_get(h, "language_model.model.layers.1.input_layernorm.weight"), "data_offsets", a);
}
static void edit_missing(json_t *h) { json_object_del(h, "language_model.model.layers.1.mlp.up_proj.weight"); }
static void edit_shape(json_t *h)
{
    json_object_set_new(json_object_get(h, QW), "shape", json_pack("[i,i]", 32, 128));
}
static void edit_unknown_dtype(json_t *h) { json_object_set_new(json_object_get(h, QW), "dtype", json_string("Q4_K")); }
static void edit_int_dtype(json_t *h) { json_object_set_new(json_object_get(h, QW), "dtype", json_string("I32")); }
static void edit_not_object(json_t *h) { json_object_set_new(h, QW, json_integer(3)); }

static void test_bad_headers(void **state)
{
    (void)state;
    clean_dir();
    write_config(NULL, NULL);
    write_weights(edit_lying, 0);
    expect_load_fails(QW, "data_offsets");
    write_weights(edit_overlap, 0);
    expect_load_fails("overlap", NULL);
    write_weights(edit_missing, 0);
    expect_load_fails("language_model.model.layers.1.mlp.up_proj.weight", "missing");
    write_weights(edit_shape, 0);
    expect_load_fails(QW, "shape [32, 128], but the config implies [64, 64]");
    write_weights(edit_unknown_dtype, 0);
    expect_load_fails(QW, "unknown dtype \"Q4_K\"");
    write_weights(edit_int_dtype, 0);
    expect_load_fails(QW, "dtype I32 is not supported");
    write_weights(edit_not_object, 0);
    expect_load_fails(QW, "not an object");
    const char junk[] = "\x08\x00\x00\x00\x00\x00\x00\x00not json";
    write_bytes("model.safetensors", junk, sizeof junk - 1);
    expect_load_fails("not valid JSON", NULL);
}

static void test_bad_configs(void **state)
{
    (void)state;
    clean_dir();
    write_weights(NULL, 0);
    write_config("model_type", json_string("llava"));
    expect_load_fails("model_type", "llava");
    write_config("text_config.model_type", json_string("gemma3"));
    expect_load_fails("text_config.model_type", "gemma3");
    write_config("vision_config.model_type", json_string("clip_vision_model"));
    expect_load_fails("vision_config.model_type", "clip_vision_model");
    write_config("text_config.hidden_size", json_integer(1000000000));
    expect_load_fails("text_config.hidden_size", "out of range");
    write_config("text_config.num_hidden_layers", json_integer(-1));
    expect_load_fails("text_config.num_hidden_layers", "out of range");
    write_config("text_config.hidden_size", json_string("big"));
    expect_load_fails("text_config.hidden_size", "integer");
    /* in range, but far more parameters than the file holds: refused before any tensor is sized */
    write_config("text_config.vocab_size", json_integer(16000000));
    expect_load_fails("config implies", "bytes");
    write_config("text_config.num_hidden_layers", json_integer(1000));
    expect_load_fails("config implies", NULL);
    write_config("text_config.num_key_value_heads", json_integer(3));
    expect_load_fails("num_key_value_heads", NULL);
    write_config("vision_config.patch_size", json_integer(1000));
    expect_load_fails("patch_size", NULL);
    write_config("projection_dim", json_integer(32));
    expect_load_fails("projection_dim", NULL);
    write_config("eos_token_id", json_integer(5000));
    expect_load_fails("eos_token_id", NULL);
    write_config("text_config.rms_norm_eps", json_string("x"));
    expect_load_fails("rms_norm_eps", NULL);
    /* an extra layer in the config: the tensor for it is missing (named) */
    write_config("text_config.num_hidden_layers", json_integer(3));
    expect_load_fails("language_model.model.layers.2.", "missing");
    write_bytes("config.json", "{", 1);
    expect_load_fails("config.json", "not valid JSON");
    write_bytes("config.json", "[1]", 3);
    expect_load_fails("config.json", "not a JSON object");
    clean_dir();
    write_weights(NULL, 0);
    expect_load_fails("config.json", "No such file");
}

static void edit_keep_norm(json_t *h)
{
    const char *key;
    json_t *v, *tmp;
    json_object_foreach_safe(h, tmp, key, v)
    {
        if (strcmp(key, "language_model.model.norm.weight") != 0)
            json_object_del(h, key);
    }
}

static void test_bad_shards(void **state)
{
    (void)state;
    clean_dir();
    write_config(NULL, NULL);
    expect_load_fails("neither model.safetensors nor", NULL);
    const char *bad_name = "{\"weight_map\": {\"x\": \"../model.safetensors\"}}";
    write_bytes("model.safetensors.index.json", bad_name, strlen(bad_name));
    expect_load_fails("plain file name", NULL);
    const char *absent = "{\"weight_map\": {\"x\": \"a.safetensors\"}}";
    write_bytes("model.safetensors.index.json", absent, strlen(absent));
    expect_load_fails("a.safetensors", "No such file");
    const char *no_map = "{\"metadata\": {}}";
    write_bytes("model.safetensors.index.json", no_map, strlen(no_map));
    expect_load_fails("weight_map", NULL);
    /* a valid index over a shard that lacks most tensors: the first missing one is named */
    const char *one = "{\"weight_map\": {\"language_model.model.norm.weight\": \"a.safetensors\"}}";
    write_bytes("model.safetensors.index.json", one, strlen(one));
    write_weights(edit_keep_norm, 0);
    char from[512], to[512];
    path_in(from, sizeof from, "model.safetensors");
    path_in(to, sizeof to, "a.safetensors");
    assert_int_equal(rename(from, to), 0);
    expect_load_fails("vision_tower.vision_model.embeddings.patch_embedding.weight", "missing");
}

static void test_index_parser(void **state)
{
    (void)state;
    pf_ckpt_index ix;
    pf_err err;
    const char *ok = "{\"weight_map\": {\"b\": \"s2\", \"a\": \"s1\", \"c\": \"s2\"}}";
    assert_int_equal(pf_ckpt_index_parse(ok, strlen(ok), "idx", &ix, &err), 0);
    assert_int_equal(ix.n_shards, 2);
    assert_int_equal(ix.n_entries, 3);
    assert_string_equal(ix.entries[0].name, "a");
    assert_string_equal(ix.shards[ix.entries[0].shard], "s1");
    pf_ckpt_index_free(&ix);
    const char *dup = "{\"weight_map\": {\"a\": \"s1\", \"a\": \"s2\"}}";
    assert_int_equal(pf_ckpt_index_parse(dup, strlen(dup), "idx", &ix, &err), -1);
    const char *empty = "{\"weight_map\": {}}";
    assert_int_equal(pf_ckpt_index_parse(empty, strlen(empty), "idx", &ix, &err), -1);
    const char *nonstr = "{\"weight_map\": {\"a\": 3}}";
    assert_int_equal(pf_ckpt_index_parse(nonstr, strlen(nonstr), "idx", &ix, &err), -1);
}

int main(int argc, char **argv)
{
    int golden = pf_test_golden_group(&argc, &argv);
    if (argc != 1) {
        fprintf(stderr, "usage: %s [golden]\n", argv[0]);
        return 2;
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/pf_loader_XXXXXX");
    if (!mkdtemp(g_dir))
        return 1;
    const struct CMUnitTest core[] = {
        cmocka_unit_test(test_eos_list_and_generation_config), cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_bad_headers), cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_bad_shards), cmocka_unit_test(test_index_parser),
    };
    const struct CMUnitTest with_golden[] = {
        cmocka_unit_test(test_hub_minimal_defaults),
        cmocka_unit_test(test_layouts_and_dtypes),
    };
    int rc;
    if (golden)
        rc = cmocka_run_group_tests_name("golden", with_golden, NULL, NULL);
    else
        rc = make_src() ? 1 : cmocka_run_group_tests_name("core", core, NULL, NULL);
    remove_src();
    clean_dir();
    rmdir(g_dir);
    return rc;
}
