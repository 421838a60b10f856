/* Random checkpoints: the files open with the safetensors reader and hold exactly the tensors, shapes,
 * dtypes and values the spec says (sharded and not), deterministically; configs carry the real numbers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/file.h"
#include "model/tools/random_ckpt.h"
#include "model/io/safetensors.h"

#define PF_TEST_TMP_NAME "pf_rc_test"
#include "tests/support/test_tmp.h"

static json_t *load_json(const char *path)
{
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        fail_msg("%s: %s", path, je.text);
    return j;
}

static int64_t jint(json_t *o, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = o;
    for (char *tok = strtok(buf, "."); tok; tok = strtok(NULL, "."))
        cur = json_object_get(cur, tok);
    if (!json_is_integer(cur))
        return -1;
    return (int64_t)json_integer_value(cur);
}

/* Open every tensor through the weight map (or model.safetensors) and compare with the spec. */
static void verify_dir(const char *dir, const pf_rc_spec *s, uint64_t seed, bool sharded)
{
    pf_rc_tensor *ts;
    size_t nt;
    pf_err err;
    if (pf_rc_tensors(s, &ts, &nt, &err))
        fail_msg("%s", err.msg);
    char path[600];
    json_t *index = NULL, *wmap = NULL;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (sharded) {
        index = load_json(path);
        wmap = json_object_get(index, "weight_map");
        assert_true(json_is_object(wmap));
        assert_int_equal(json_object_size(wmap), nt);
    } else {
        assert_int_not_equal(access(path, F_OK), 0);
    }
    uint64_t total = 0;
    size_t nfiles = 0;
    for (size_t i = 0; i < nt; i++) {
        const char *file = sharded ? json_string_value(json_object_get(wmap, ts[i].name)) : "model.safetensors";
        assert_non_null(file);
        snprintf(path, sizeof path, "%s/%s", dir, file);
        pf_st_file f;
        if (pf_st_open(path, &f, &err))
            fail_msg("%s", err.msg);
        const pf_st_tensor *t = pf_st_find(&f, ts[i].name);
        if (!t)
            fail_msg("%s: %s missing", path, ts[i].name);
        assert_int_equal(t->dtype, PF_DT_BF16);
        assert_int_equal(t->ndim, ts[i].ndim);
        for (int d = 0; d < t->ndim; d++)
            assert_int_equal(t->shape[d], ts[i].shape[d]);
        uint64_t probe[] = {0, t->numel / 2, t->numel - 1};
        for (int p = 0; p < 3; p++) {
            uint16_t v;
            memcpy(&v, t->data + probe[p] * 2, 2);
            assert_int_equal(v, pf_f32_to_bf16(pf_rc_value(seed, &ts[i], probe[p])));
            assert_true(isfinite(pf_bf16_to_f32(v)));
        }
        total += t->nbytes;
        assert_null(pf_st_find(&f, "language_model.lm_head.weight"));
        if (i == 0)
            nfiles = f.count;
        pf_st_close(&f);
    }
    (void)nfiles;
    if (sharded) {
        assert_int_equal(jint(index, "metadata.total_size"), (int64_t)total);
        json_decref(index);
    }
    free(ts);
}

static void test_tiny_sharded_roundtrip(void **state)
{
    (void)state;
    pf_rc_spec s;
    pf_err err;
    assert_int_equal(pf_rc_spec_lookup("tiny-gemma2", &s, &err), 0);
    pf_rc_params o = {.seed = 42, .max_shard_bytes = 40000};
    if (pf_rc_write(&s, tmp_path("sharded"), &o, &err))
        fail_msg("%s", err.msg);
    verify_dir(tmp_path("sharded"), &s, 42, true);
    assert_int_equal(access(tmp_path("sharded/model-00001-of-00005.safetensors"), F_OK) == 0 ||
                         access(tmp_path("sharded/model-00001-of-00004.safetensors"), F_OK) == 0 ||
                         access(tmp_path("sharded/model-00001-of-00006.safetensors"), F_OK) == 0 ||
                         access(tmp_path("sharded/model-00001-of-00003.safetensors"), F_OK) == 0,
                     1);
    json_t *cfg = load_json(tmp_path("sharded/config.json"));
    assert_string_equal(json_string_value(json_object_get(json_object_get(cfg, "text_config"), "model_type")), "gemma2");
    assert_int_equal(jint(cfg, "text_config.sliding_window"), 16);
    assert_int_equal(jint(cfg, "text_config.num_key_value_heads"), 2);
    assert_int_equal(jint(cfg, "vision_config.image_size"), 56);
    assert_int_equal(jint(cfg, "text_config.num_image_tokens"), 16);
    assert_int_equal(jint(cfg, "image_token_index"), 1000);
    json_decref(cfg);
    json_t *gen = load_json(tmp_path("sharded/generation_config.json"));
    assert_int_equal(jint(gen, "eos_token_id"), 1);
    json_decref(gen);
}

static void test_single_file_and_determinism(void **state)
{
    (void)state;
    pf_rc_spec s;
    pf_err err;
    assert_int_equal(pf_rc_spec_lookup("paligemma-3b-pt-224", &s, &err), 0);
    pf_rc_spec_tiny(&s, 8);
    pf_rc_params o = {.seed = 7};
    if (pf_rc_write(&s, tmp_path("a"), &o, &err) || pf_rc_write(&s, tmp_path("b"), &o, &err))
        fail_msg("%s", err.msg);
    o.seed = 8;
    if (pf_rc_write(&s, tmp_path("c"), &o, &err))
        fail_msg("%s", err.msg);
    verify_dir(tmp_path("a"), &s, 7, false);
    char *fa, *fb, *fc;
    size_t la, lb, lc;
    if (pf_read_file(tmp_path("a/model.safetensors"), 64u << 20, &fa, &la, &err) ||
        pf_read_file(tmp_path("b/model.safetensors"), 64u << 20, &fb, &lb, &err) ||
        pf_read_file(tmp_path("c/model.safetensors"), 64u << 20, &fc, &lc, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(la, lb);
    assert_memory_equal(fa, fb, la);
    assert_int_equal(la, lc);
    assert_memory_not_equal(fa, fc, la);
    /* the demo model keeps the real vocabulary and vision geometry and stays a few MB */
    assert_true(la > 4000000 && la < 6000000);
    free(fa), free(fb), free(fc);
    json_t *cfg = load_json(tmp_path("a/config.json"));
    assert_int_equal(jint(cfg, "text_config.vocab_size"), 257216);
    assert_int_equal(jint(cfg, "text_config.num_image_tokens"), 256);
    assert_int_equal(jint(cfg, "vision_config.patch_size"), 14);
    assert_int_equal(jint(cfg, "image_token_index"), 257152);
    json_decref(cfg);
    /* rewriting with shards removes the stale single file */
    o.max_shard_bytes = 1000000;
    if (pf_rc_write(&s, tmp_path("a"), &o, &err))
        fail_msg("%s", err.msg);
    assert_int_not_equal(access(tmp_path("a/model.safetensors"), F_OK), 0);
    verify_dir(tmp_path("a"), &s, 8, true);
}

static const pf_rc_tensor *find(const pf_rc_tensor *ts, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ts[i].name, name) == 0)
            return &ts[i];
    fail_msg("no tensor %s", name);
    return NULL;
}

static void expect_shape(const pf_rc_tensor *ts, size_t n, const char *name, int64_t d0, int64_t d1)
{
    const pf_rc_tensor *t = find(ts, n, name);
    assert_int_equal(t->shape[0], d0);
    if (d1)
        assert_int_equal(t->shape[1], d1);
}

static void test_real_shapes(void **state)
{
    (void)state;
    pf_rc_spec s;
    pf_rc_tensor *ts;
    size_t n;
    pf_err err;
    assert_int_equal(pf_rc_spec_lookup("paligemma-3b-pt-224", &s, &err), 0);
    assert_int_equal(pf_rc_tensors(&s, &ts, &n, &err), 0);
    assert_int_equal(n, 1 + 18 * 9 + 1 + 2 + 3 + 27 * 16 + 2);
    expect_shape(ts, n, "language_model.model.embed_tokens.weight", 257216, 2048);
    expect_shape(ts, n, "language_model.model.layers.17.self_attn.k_proj.weight", 256, 2048);
    expect_shape(ts, n, "language_model.model.layers.0.mlp.down_proj.weight", 2048, 16384);
    expect_shape(ts, n, "vision_tower.vision_model.embeddings.position_embedding.weight", 256, 1152);
    expect_shape(ts, n, "vision_tower.vision_model.encoder.layers.26.mlp.fc1.weight", 4304, 1152);
    expect_shape(ts, n, "multi_modal_projector.linear.weight", 2048, 1152);
    const pf_rc_tensor *pe = find(ts, n, "vision_tower.vision_model.embeddings.patch_embedding.weight");
    assert_int_equal(pe->ndim, 4);
    assert_int_equal(pe->shape[1], 3);
    assert_int_equal(pe->shape[3], 14);
    /* the sampled values follow the requested scale: std of q_proj ~ 1/sqrt(2048) */
    const pf_rc_tensor *q = find(ts, n, "language_model.model.layers.3.self_attn.q_proj.weight");
    double s1 = 0, s2 = 0, mx = 0;
    for (uint64_t i = 0; i < 200000; i++) {
        double v = pf_rc_value(1, q, i * 13);
        s1 += v, s2 += v * v, mx = fmax(mx, fabs(v));
    }
    double mean = s1 / 200000, sd = sqrt(s2 / 200000 - mean * mean);
    assert_true(fabs(sd * sqrt(2048.0) - 1.0) < 0.02);
    assert_true(fabs(mean) < 0.01 / sqrt(2048.0) * 10);
    assert_true(mx <= 3.5 / sqrt(2048.0));
    free(ts);

    assert_int_equal(pf_rc_spec_lookup("paligemma-3b-pt-896", &s, &err), 0);
    assert_int_equal(pf_rc_tensors(&s, &ts, &n, &err), 0);
    expect_shape(ts, n, "vision_tower.vision_model.embeddings.position_embedding.weight", 4096, 1152);
    free(ts);

    assert_int_equal(pf_rc_spec_lookup("paligemma2-10b-pt-224", &s, &err), 0);
    assert_int_equal(pf_rc_tensors(&s, &ts, &n, &err), 0);
    assert_int_equal(n, 1 + 42 * 11 + 1 + 2 + 3 + 27 * 16 + 2);
    expect_shape(ts, n, "language_model.model.layers.41.self_attn.q_proj.weight", 4096, 3584);
    expect_shape(ts, n, "language_model.model.layers.0.self_attn.v_proj.weight", 2048, 3584);
    expect_shape(ts, n, "language_model.model.layers.0.self_attn.o_proj.weight", 3584, 4096);
    expect_shape(ts, n, "language_model.model.layers.0.mlp.up_proj.weight", 14336, 3584);
    expect_shape(ts, n, "language_model.model.layers.0.post_feedforward_layernorm.weight", 3584, 0);
    expect_shape(ts, n, "multi_modal_projector.linear.weight", 3584, 1152);
    free(ts);
}

static void test_real_configs(void **state)
{
    (void)state;
    pf_rc_spec s;
    pf_err err;
    assert_int_equal(pf_rc_spec_lookup("paligemma2-3b-pt-448", &s, &err), 0);
    char *txt = pf_rc_config_json(&s, PF_DT_BF16);
    json_error_t je;
    json_t *cfg = json_loads(txt, 0, &je);
    assert_non_null(cfg);
    json_t *t = json_object_get(cfg, "text_config");
    assert_int_equal(jint(cfg, "text_config.hidden_size"), 2304);
    assert_int_equal(jint(cfg, "text_config.num_hidden_layers"), 26);
    assert_int_equal(jint(cfg, "text_config.num_key_value_heads"), 4);
    assert_int_equal(jint(cfg, "text_config.intermediate_size"), 9216);
    assert_int_equal(jint(cfg, "text_config.query_pre_attn_scalar"), 256);
    assert_int_equal(jint(cfg, "text_config.sliding_window"), 4096);
    assert_int_equal(jint(cfg, "text_config.num_image_tokens"), 1024);
    assert_int_equal(jint(cfg, "text_config.vocab_size"), 257216);
    assert_true(json_real_value(json_object_get(t, "attn_logit_softcapping")) == 50.0);
    assert_true(json_real_value(json_object_get(t, "final_logit_softcapping")) == 30.0);
    /* 8 heads and head_dim 256 are Gemma2Config's defaults: save_pretrained leaves them out */
    assert_null(json_object_get(t, "num_attention_heads"));
    assert_null(json_object_get(t, "head_dim"));
    assert_int_equal(jint(cfg, "vision_config.image_size"), 448);
    assert_int_equal(jint(cfg, "projection_dim"), 2304);
    assert_string_equal(json_string_value(json_object_get(cfg, "torch_dtype")), "bfloat16");
    json_decref(cfg);
    free(txt);

    assert_int_equal(pf_rc_spec_lookup("paligemma-3b-pt-224", &s, &err), 0);
    txt = pf_rc_config_json(&s, PF_DT_BF16);
    cfg = json_loads(txt, 0, &je);
    assert_int_equal(jint(cfg, "text_config.num_attention_heads"), 8);
    assert_int_equal(jint(cfg, "text_config.num_key_value_heads"), 1);
    assert_null(json_object_get(json_object_get(cfg, "vision_config"), "image_size")); /* 224 is the default */
    assert_int_equal(jint(cfg, "vision_config.intermediate_size"), 4304);
    assert_string_equal(json_string_value(json_object_get(json_object_get(cfg, "text_config"), "model_type")), "gemma");
    json_decref(cfg);
    free(txt);

    assert_int_equal(pf_rc_spec_lookup("paligemma-7b", &s, &err), -1);
    assert_non_null(strstr(err.msg, "paligemma-7b"));
    s.heads = 3;
    s.kv_heads = 2;
    assert_int_equal(pf_rc_spec_check(&s, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_sharded_roundtrip),
        cmocka_unit_test(test_single_file_and_determinism),
        cmocka_unit_test(test_real_shapes),
        cmocka_unit_test(test_real_configs),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
