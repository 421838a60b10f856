/* --precision auto by measurement (model/linear/precision_probe.h): the choice as a pure function of a table
 * (made-up tables: int8 where bf16 measures slower, the accuracy contract, the margin), one real probe on
 * this machine (a valid choice that oneDNN runs here), the cache's round trip and its refusal of bad files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/file.h"
#include "model/linear/precision_probe.h"

static pf_probe_table table3(double fp32, double bf16, double int8)
{
    pf_probe_table t = {.key = "test cpu|isa|avx512|paliflow test"};
    double g[PF_PREC_COUNT] = {0, fp32, bf16, int8};
    for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++) {
        t.row[p].supported = g[p] > 0;
        t.row[p].gflops = g[p];
        t.row[p].rel_err = pf_probe_tolerance((pf_precision)p) / 4;
        snprintf(t.row[p].impl, sizeof t.row[p].impl, "made up");
    }
    return t;
}

static pf_precision choose(const pf_probe_table *t)
{
    pf_precision p = PF_PREC_AUTO;
    pf_err err;
    char why[512];
    assert_int_equal(pf_probe_choose(t, &p, why, sizeof why, &err), 0);
    assert_non_null(strstr(why, pf_precision_name(p)));
    return p;
}

static void test_choose_int8_where_bf16_is_slower(void **state)
{
    (void)state;
    /* The Xeon: oneDNN fp32 290, bf16 166, int8 1045 GFLOP/s; the old rule said bf16. */
    pf_probe_table t = table3(290, 166, 1045);
    assert_int_equal(choose(&t), PF_PREC_INT8);
    /* bf16 slower than fp32 and int8 not runnable: fp32, not bf16. */
    t = table3(290, 166, 0);
    assert_int_equal(choose(&t), PF_PREC_FP32);
}

static void test_choose_fastest_with_margin(void **state)
{
    (void)state;
    pf_probe_table t = table3(375, 753, 700); /* the AMD host: bf16 2x fp32, int8 a bit slower than bf16 */
    assert_int_equal(choose(&t), PF_PREC_BF16);
    t = table3(375, 753, 1291);
    assert_int_equal(choose(&t), PF_PREC_INT8);
    /* Within the margin a less exact precision is not worth it. */
    t = table3(300, 300 * PF_PROBE_MARGIN * 0.99, 300 * PF_PROBE_MARGIN * 0.99);
    assert_int_equal(choose(&t), PF_PREC_FP32);
    t = table3(300, 300 * PF_PROBE_MARGIN * 1.01, 0);
    assert_int_equal(choose(&t), PF_PREC_BF16);
    /* fp32 unsupported (never happens with oneDNN, but the rule must not assume it). */
    t = table3(0, 100, 90);
    assert_int_equal(choose(&t), PF_PREC_BF16);
}

static void test_choose_respects_contract(void **state)
{
    (void)state;
    pf_probe_table t = table3(290, 400, 1045);
    t.row[PF_PREC_INT8].rel_err = pf_probe_tolerance(PF_PREC_INT8) * 2; /* e.g. saturating u8s8 sums */
    assert_int_equal(choose(&t), PF_PREC_BF16);
    t.row[PF_PREC_BF16].rel_err = NAN;
    assert_int_equal(choose(&t), PF_PREC_FP32);
    t = table3(290, 400, 1045);
    t.row[PF_PREC_INT8].gflops = NAN;
    assert_int_equal(choose(&t), PF_PREC_BF16);
}

static void test_choose_nothing_qualifies(void **state)
{
    (void)state;
    pf_probe_table t = table3(0, 0, 0);
    pf_precision p = PF_PREC_AUTO;
    pf_err err;
    assert_int_equal(pf_probe_choose(&t, &p, NULL, 0, &err), -1);
    assert_int_equal(p, PF_PREC_AUTO);
    assert_non_null(strstr(err.msg, "fp32: not supported"));
    assert_non_null(strstr(err.msg, "int8: not supported"));
}

static char g_dir[256];

static void cache_path(char *buf, size_t len)
{
    pf_err err;
    assert_int_equal(pf_probe_cache_path(buf, len, &err), 0);
    assert_non_null(strstr(buf, g_dir));
}

static void test_real_probe_and_cache_round_trip(void **state)
{
    (void)state;
    pf_probe_table t;
    pf_err err;
    assert_int_equal(pf_probe_measure(&t, &err), 0);
    pf_probe_print(&t, stdout);
    pf_precision p;
    assert_int_equal(pf_probe_choose(&t, &p, NULL, 0, &err), 0);
    assert_true(p > PF_PREC_AUTO && p < PF_PREC_COUNT);
    const pf_precision_support *ps = pf_precision_probe();
    assert_true(ps->ok[p]);
    assert_true(t.row[PF_PREC_FP32].supported);
    for (int q = PF_PREC_FP32; q < PF_PREC_COUNT; q++) {
        assert_int_equal(t.row[q].supported, ps->ok[q]);
        if (t.row[q].supported) {
            assert_true(t.row[q].gflops > 0);
            /* Every precision oneDNN runs here keeps its contract on the probe's GEMM. */
            assert_true(t.row[q].rel_err <= pf_probe_tolerance((pf_precision)q));
        }
    }
    char path[512];
    cache_path(path, sizeof path);
    assert_int_equal(pf_probe_cache_store(path, &t, &err), 0);
    pf_probe_table u;
    assert_int_equal(pf_probe_cache_load(path, t.key, &u, &err), 1);
    assert_true(u.from_cache);
    assert_string_equal(u.key, t.key);
    for (int q = PF_PREC_FP32; q < PF_PREC_COUNT; q++) {
        assert_int_equal(u.row[q].supported, t.row[q].supported);
        assert_true(fabs(u.row[q].gflops - t.row[q].gflops) <= 1e-5 * t.row[q].gflops);
        assert_string_equal(u.row[q].impl, t.row[q].impl);
    }
    pf_precision pu;
    assert_int_equal(pf_probe_choose(&u, &pu, NULL, 0, &err), 0);
    assert_int_equal(pu, p);
    /* Another CPU's rows in the same file survive a store, and are not taken for ours. */
    pf_probe_table other = table3(1, 2, 3);
    snprintf(other.key, sizeof other.key, "another cpu|avx2|avx2|paliflow 0.0.1");
    assert_int_equal(pf_probe_cache_store(path, &other, &err), 0);
    assert_int_equal(pf_probe_cache_store(path, &t, &err), 0);
    assert_int_equal(pf_probe_cache_load(path, other.key, &u, &err), 1);
    assert_true(u.row[PF_PREC_INT8].gflops == 3);
    assert_int_equal(pf_probe_cache_load(path, t.key, &u, &err), 1);
    assert_int_equal(pf_probe_cache_load(path, "no such cpu", &u, &err), 0);
}

/* The process-wide table behind --precision auto: measured once, written to the cache, resolved. */
static void test_auto_resolves_through_the_cache(void **state)
{
    (void)state;
    char path[512];
    cache_path(path, sizeof path);
    unlink(path);
    pf_err err;
    pf_precision p;
    assert_int_equal(pf_precision_resolve(PF_PREC_AUTO, &p, &err), 0);
    const pf_probe_table *t = pf_probe_table_get(&err);
    assert_non_null(t);
    pf_precision q;
    assert_int_equal(pf_probe_choose(t, &q, NULL, 0, &err), 0);
    assert_int_equal(p, q);
    pf_probe_table u;
    assert_int_equal(pf_probe_cache_load(path, t->key, &u, &err), 1);
}

static void write_text(const char *path, const char *text)
{
    pf_err err;
    assert_int_equal(pf_write_file_atomic(path, text, strlen(text), &err), 0);
}

static void test_corrupt_cache_is_refused_and_replaced(void **state)
{
    (void)state;
    char path[512];
    cache_path(path, sizeof path);
    const char *key = "k";
    pf_probe_table t;
    pf_err err;
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"k\tfp32\t1\t100\n", "want 6 tab-separated fields"},
        {"k\tfp64\t1\t100\t0\tx\n", "precision 'fp64'"},
        {"k\tauto\t1\t100\t0\tx\n", "precision 'auto'"},
        {"k\tfp32\t2\t100\t0\tx\n", "supported '2'"},
        {"k\tfp32\t1\t-5\t0\tx\n", "gflops '-5'"},
        {"k\tfp32\t1\tnan\t0\tx\n", "gflops 'nan'"},
        {"k\tfp32\t1\t100\t1e999\tx\n", "rel_err"},
        {"k\tfp32\t1\t100\t0\tx\nk\tfp32\t1\t100\t0\tx\n", "line 2: fp32 listed twice"},
        {"# ok\n\nother\tbf16\t1\t1\t0\tx\nother\tint8\t1\t1\t0\tx\tEXTRA\n", "line 4"},
        {"k\tfp32\t1\t100\t0\tx\r\n", "carriage return"},
        {"\tfp32\t1\t100\t0\tx\n", "key: empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(path, bad[i].text);
        err.msg[0] = '\0';
        assert_int_equal(pf_probe_cache_load(path, key, &t, &err), -1);
        if (!strstr(err.msg, bad[i].want) || !strstr(err.msg, path))
            fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, bad[i].want);
    }
    const char nul[] = "k\tfp32\t1\t1\t0\tx\n\0garbage";
    assert_int_equal(pf_probe_cache_parse(nul, sizeof nul - 1, key, &t, &err), -1);
    assert_non_null(strstr(err.msg, "NUL"));
    /* Incomplete for this key: measured again (0), not an error. */
    write_text(path, "k\tfp32\t1\t100\t0\tx\n");
    assert_int_equal(pf_probe_cache_load(path, key, &t, &err), 0);
    /* A store over a corrupt file replaces it with a sound one. */
    write_text(path, "garbage without tabs\n");
    pf_probe_table good = table3(10, 20, 30);
    assert_int_equal(pf_probe_cache_store(path, &good, &err), 0);
    assert_int_equal(pf_probe_cache_load(path, good.key, &t, &err), 1);
    assert_true(t.row[PF_PREC_BF16].gflops == 20);
}

int main(void)
{
    /* A private cache directory: the test must neither read nor disturb the user's. */
    snprintf(g_dir, sizeof g_dir, "/tmp/pf_probe_test_%d", (int)getpid());
    setenv("XDG_CACHE_HOME", g_dir, 1);
    /* Cache even when the shared test machine is busy (else the table is used for the run only). */
    setenv("PALIFLOW_PROBE_CACHE", "always", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_choose_int8_where_bf16_is_slower),
        cmocka_unit_test(test_choose_fastest_with_margin),
        cmocka_unit_test(test_choose_respects_contract),
        cmocka_unit_test(test_choose_nothing_qualifies),
        cmocka_unit_test(test_real_probe_and_cache_round_trip),
        cmocka_unit_test(test_auto_resolves_through_the_cache),
        cmocka_unit_test(test_corrupt_cache_is_refused_and_replaced),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    return rc;
}
