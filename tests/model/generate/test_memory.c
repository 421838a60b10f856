/* Memory need from shapes (model/generate/memory.h) for every published PaliGemma size, against the engine's
 * measured weight bytes where known; the budget; the refusal before loading, made deterministic with
 * PALIFLOW_MEMORY_BUDGET. Prints the size x precision table model/README.md shows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/generate/memory.h"
#include "model/tools/random_ckpt.h"
#include "model/generate/session.h"

static pf_config config_of(const char *name)
{
    pf_rc_spec s;
    pf_err err;
    pf_config c;
    if (pf_rc_spec_lookup(name, &s, &err) != 0)
        fail_msg("%s", err.msg);
    char *json = pf_rc_config_json(&s, PF_DT_BF16);
    assert_non_null(json);
    if (pf_config_parse(json, strlen(json), name, &c, &err) != 0)
        fail_msg("%s: %s", name, err.msg);
    free(json);
    return c;
}

static void test_weights_match_the_engine(void **state)
{
    (void)state;
    /* model/README "Memory": the engine's converted weights for paligemma-3b, 11.7 / 5.9 / 2.9 GB. */
    pf_config c = config_of("paligemma-3b-pt-224");
    const struct {
        pf_precision p;
        double gb;
    } want[] = {{PF_PREC_FP32, 11.7}, {PF_PREC_BF16, 5.9}, {PF_PREC_INT8, 2.9}};
    for (size_t i = 0; i < 3; i++) {
        pf_mem_need n;
        pf_mem_estimate(&c, want[i].p, 0, 1, PF_MEM_TEXT_TOKENS, &n);
        double gb = (double)n.weights / 1e9;
        if (gb < want[i].gb * 0.97 || gb > want[i].gb * 1.03)
            fail_msg("%s: %.2f GB, engine measured %.1f", pf_precision_name(want[i].p), gb, want[i].gb);
        assert_true(n.total == n.weights + n.kv + n.activations + n.overhead);
    }
    /* KV: 18 layers x 2 x 1 kv head x 256 x 4 bytes per token, 256 + 256 tokens (whole pages) */
    pf_mem_need n;
    pf_mem_estimate(&c, PF_PREC_FP32, 0, 3, 256, &n);
    assert_true(n.kv == 3ull * 512 * 18 * 2 * 256 * 4);
    /* The reference holds everything in f32, the embedding included once. */
    pf_mem_need r;
    pf_mem_estimate(&c, PF_PREC_INT8, 1, 1, 256, &r);
    pf_mem_estimate(&c, PF_PREC_FP32, 0, 1, 256, &n);
    assert_true(r.weights == n.weights);
}

static void test_print_table(void **state)
{
    (void)state;
    static const char *names[] = {"paligemma-3b-pt-224", "paligemma-3b-pt-896", "paligemma2-3b-pt-224",
                                  "paligemma2-3b-pt-448", "paligemma2-3b-pt-896", "paligemma2-10b-pt-224",
                                  "paligemma2-10b-pt-448", "paligemma2-10b-pt-896", "paligemma2-28b-pt-224",
                                  "paligemma2-28b-pt-448", "paligemma2-28b-pt-896"};
    printf("| model | KV per sequence (image + 256 tokens) | fp32: weights / one sequence | bf16 | int8 |\n");
    printf("|---|---|---|---|---|\n");
    double prev = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        pf_config c = config_of(names[i]);
        pf_mem_need n[PF_PREC_COUNT];
        for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++)
            pf_mem_estimate(&c, (pf_precision)p, 0, 1, PF_MEM_TEXT_TOKENS, &n[p]);
        printf("| %s | %.2f GB |", names[i], n[PF_PREC_FP32].kv / 1e9);
        for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++)
            printf(" %.1f / %.1f GB |", n[p].weights / 1e9, n[p].total / 1e9);
        printf("\n");
        /* Each precision halves the big matrices; larger images only add KV and activations. */
        assert_true(n[PF_PREC_BF16].weights < n[PF_PREC_FP32].weights * 0.51);
        assert_true(n[PF_PREC_INT8].weights < n[PF_PREC_BF16].weights * 0.52);
        if (strstr(names[i], "-448") || strstr(names[i], "-896"))
            assert_true(n[PF_PREC_FP32].total > prev);
        prev = n[PF_PREC_FP32].total;
    }
    /* The figures: 10B fp32 ~39 GB, 28B int8 ~28 GB of weights. */
    pf_config c10 = config_of("paligemma2-10b-pt-224"), c28 = config_of("paligemma2-28b-pt-224");
    pf_mem_need a, b;
    pf_mem_estimate(&c10, PF_PREC_FP32, 0, 1, 256, &a);
    pf_mem_estimate(&c28, PF_PREC_INT8, 0, 1, 256, &b);
    assert_true(a.weights > 37e9 && a.weights < 41e9);
    assert_true(b.weights > 26e9 && b.weights < 30e9);
}

static void test_budget_env_and_refusal(void **state)
{
    (void)state;
    pf_config c = config_of("paligemma2-3b-pt-224");
    pf_err err;
    uint64_t b;
    char src[256];
    setenv("PALIFLOW_MEMORY_BUDGET", "5G", 1);
    assert_int_equal(pf_mem_budget(&b, src, sizeof src, &err), 0);
    assert_true(b == 5ull << 30);
    assert_string_equal(src, "PALIFLOW_MEMORY_BUDGET");
    /* 5 GiB: fp32 (~12 GB) and bf16 (~6.5 GB) do not fit, int8 does. */
    assert_int_equal(pf_mem_check(&c, PF_PREC_FP32, 0, &err), -1);
    assert_non_null(strstr(err.msg, "not enough memory for precision fp32"));
    assert_non_null(strstr(err.msg, "would fit: --precision int8"));
    assert_null(strstr(err.msg, "--precision bf16"));
    assert_non_null(strstr(err.msg, "--no-memory-check"));
    assert_non_null(strstr(err.msg, "PALIFLOW_MEMORY_BUDGET"));
    assert_int_equal(pf_mem_check(&c, PF_PREC_INT8, 0, &err), 0);
    assert_int_equal(pf_mem_check(&c, PF_PREC_INT8, 1, &err), -1); /* the reference is fp32 */
    assert_non_null(strstr(err.msg, "reference backend"));
    setenv("PALIFLOW_MEMORY_BUDGET", "100M", 1);
    assert_int_equal(pf_mem_check(&c, PF_PREC_INT8, 0, &err), -1);
    assert_non_null(strstr(err.msg, "no precision fits"));
    static const char *bad[] = {"", "-1", "12X", "G", "99999999999999999999", "20000000000T"};
    for (size_t i = 1; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("PALIFLOW_MEMORY_BUDGET", bad[i], 1);
        assert_int_equal(pf_mem_budget(&b, src, sizeof src, &err), -1);
        assert_non_null(strstr(err.msg, "PALIFLOW_MEMORY_BUDGET"));
    }
    /* The real budget of this process: positive, from the cgroup or /proc/meminfo. */
    unsetenv("PALIFLOW_MEMORY_BUDGET");
    assert_int_equal(pf_mem_budget(&b, src, sizeof src, &err), 0);
    assert_true(b > (64ull << 20));
    printf("budget here: %.1f GB (%s)\n", b / 1e9, src);
}

/* Through pf_session_open on a real (tiny) checkpoint: an explicit precision that does not fit is refused
 * before loading; auto takes the fastest precision that fits. */
static void test_session_refuses_and_auto_falls_back(void **state)
{
    (void)state;
    /* a tiny random checkpoint written here (no golden data needed) */
    char dir[] = "/tmp/pf_test_memory_XXXXXX", cfg[64];
    assert_non_null(mkdtemp(dir));
    pf_err err;
    pf_rc_spec spec;
    pf_rc_params ro = {.seed = 5, .f32 = true};
    assert_int_equal(pf_rc_spec_lookup("tiny-gemma", &spec, &err), 0);
    assert_int_equal(pf_rc_write(&spec, dir, &ro, &err), 0);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    pf_config c;
    assert_int_equal(pf_config_load(cfg, &c, &err), 0);
    pf_mem_need n8, n16;
    pf_mem_estimate(&c, PF_PREC_INT8, 0, 1, PF_MEM_TEXT_TOKENS, &n8);
    pf_mem_estimate(&c, PF_PREC_BF16, 0, 1, PF_MEM_TEXT_TOKENS, &n16);
    assert_true(n8.total < n16.total);
    char budget[32];
    snprintf(budget, sizeof budget, "%llu", (unsigned long long)n8.total); /* int8 fits exactly, nothing else */
    setenv("PALIFLOW_MEMORY_BUDGET", budget, 1);
    setenv("PALIFLOW_PROBE_CACHE", "off", 1);
    pf_session s;
    pf_session_params so = {.precision = PF_PREC_FP32};
    assert_int_equal(pf_session_open(dir, &so, &s, &err), -1);
    assert_non_null(strstr(err.msg, "not enough memory for precision fp32"));
    assert_non_null(strstr(err.msg, "would fit: --precision int8"));
    assert_non_null(strstr(err.msg, dir));
    so.no_memory_check = 1;
    assert_int_equal(pf_session_open(dir, &so, &s, &err), 0);
    assert_int_equal(s.precision, PF_PREC_FP32);
    pf_session_close(&s);
    pf_precision p;
    if (pf_precision_resolve(PF_PREC_INT8, &p, &err) == 0) { /* int8 runs on every CPU oneDNN supports */
        so = (pf_session_params){.precision = PF_PREC_AUTO, .auto_ok = 1};
        assert_int_equal(pf_session_open(dir, &so, &s, &err), 0);
        assert_int_equal(s.precision, PF_PREC_INT8);
        pf_session_close(&s);
    }
    unsetenv("PALIFLOW_MEMORY_BUDGET");
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char cmd[600], path[600];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* The cgroup walk on a fake /sys/fs/cgroup: v2 limits on the cgroup and its parents (the smallest binds),
 * "max" is none; v1's memory controller and its no-limit value. */
static void test_cgroup_limits(void **state)
{
    (void)state;
    char root[256], dir[400], src[600];
    snprintf(root, sizeof root, "/tmp/pf_memtest_%d", (int)getpid());
    snprintf(dir, sizeof dir, "%s/user.slice/job", root);
    write_file(dir, "memory.max", "max\n");
    assert_true(pf_mem_cgroup_limit("0::/user.slice/job\n", root, src, sizeof src) == 0);
    snprintf(dir, sizeof dir, "%s/user.slice", root);
    write_file(dir, "memory.max", "8589934592\n");
    assert_true(pf_mem_cgroup_limit("0::/user.slice/job\n", root, src, sizeof src) == 8589934592ull);
    assert_non_null(strstr(src, "user.slice/memory.max"));
    snprintf(dir, sizeof dir, "%s/user.slice/job", root);
    write_file(dir, "memory.max", "4294967296\n");
    assert_true(pf_mem_cgroup_limit("0::/user.slice/job\n", root, src, sizeof src) == 4294967296ull);
    assert_non_null(strstr(src, "job/memory.max"));
    write_file(dir, "memory.max", "garbage\n"); /* unreadable value: no limit from it, the parent's holds */
    assert_true(pf_mem_cgroup_limit("0::/user.slice/job\n", root, src, sizeof src) == 8589934592ull);
    /* v1: the memory controller line; the huge "unlimited" value is none */
    snprintf(dir, sizeof dir, "%s/memory/docker/abc", root);
    write_file(dir, "memory.limit_in_bytes", "9223372036854771712\n");
    assert_true(pf_mem_cgroup_limit("5:cpu:/x\n4:memory:/docker/abc\n", root, src, sizeof src) == 0);
    write_file(dir, "memory.limit_in_bytes", "2147483648\n");
    assert_true(pf_mem_cgroup_limit("5:cpu:/x\n4:memory:/docker/abc\n", root, src, sizeof src) == 2147483648ull);
    assert_non_null(strstr(src, "memory.limit_in_bytes"));
    /* both present: the smaller */
    assert_true(pf_mem_cgroup_limit("4:memory:/docker/abc\n0::/user.slice/job\n", root, src, sizeof src) ==
                2147483648ull);
    assert_true(pf_mem_cgroup_limit("", root, src, sizeof src) == 0);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weights_match_the_engine),
        cmocka_unit_test(test_print_table),
        cmocka_unit_test(test_budget_env_and_refusal),
        cmocka_unit_test(test_cgroup_limits),
        cmocka_unit_test(test_session_refuses_and_auto_falls_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
