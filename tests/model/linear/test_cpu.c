/* CPU feature detection agrees with the kernel's view (/proc/cpuinfo); precision parsing, probing and
 * resolution behave on this machine, including under PALIFLOW_MAX_ISA caps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "model/linear/cpu.h"
#include "model/linear/precision_probe.h"

/* True if /proc/cpuinfo's first "flags" line holds the word; -1 if the file is unavailable. */
static int proc_flag(const char *flag)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return -1;
    char line[8192];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5) != 0)
            continue;
        found = 0;
        for (char *tok = strtok(strchr(line, ':') + 1, " \t\n"); tok; tok = strtok(NULL, " \t\n"))
            if (strcmp(tok, flag) == 0)
                found = 1;
        break;
    }
    fclose(f);
    return found;
}

static void test_detect_matches_proc_cpuinfo(void **state)
{
    (void)state;
    pf_cpu_features f;
    pf_cpu_detect(&f);
    struct {
        const char *flag;
        bool have;
    } checks[] = {
        {"avx2", f.avx2},           {"fma", f.fma},           {"f16c", f.f16c},
        {"avx512f", f.avx512f},     {"avx512bw", f.avx512bw}, {"avx512vl", f.avx512vl},
        {"avx512dq", f.avx512dq},   {"avx512_vnni", f.avx512_vnni}, {"avx512_bf16", f.avx512_bf16},
        {"avx_vnni", f.avx_vnni},   {"amx_tile", f.amx_tile}, {"amx_bf16", f.amx_bf16},
        {"amx_int8", f.amx_int8},   {"sse4_1", f.sse41},
    };
    if (proc_flag("sse2") < 0)
        skip();
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        int p = proc_flag(checks[i].flag);
        if (p != (int)checks[i].have)
            fail_msg("%s: cpuid says %d, /proc/cpuinfo says %d", checks[i].flag, checks[i].have, p);
    }
    assert_true(f.vendor[0] != '\0');
    /* AMX tile permission is asked for only where the CPU and the OS (XCR0) have AMX; where granted, the
     * kernel must say so again when asked (arch_prctl ARCH_GET_XCOMP_PERM, bit 18 = XTILEDATA). */
    if (!f.amx_tile)
        assert_false(f.amx_permitted);
    if (f.amx_permitted) {
        unsigned long perm = 0;
        assert_int_equal(syscall(SYS_arch_prctl, 0x1022, &perm), 0);
        assert_true((perm >> 18) & 1u);
    }
}

static void test_tier_consistent(void **state)
{
    (void)state;
    pf_cpu_features raw;
    pf_cpu_detect(&raw);
    const pf_cpu_features *f = pf_cpu();
    assert_true(f->tier <= raw.tier);
    if (f->tier >= PF_TIER_AVX2)
        assert_true(f->avx2 && f->fma);
    if (f->tier == PF_TIER_AVX512)
        assert_true(f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq);
    if (f->use_vnni512)
        assert_true(f->avx512_vnni && f->tier == PF_TIER_AVX512);
    if (f->use_bf16_512)
        assert_true(f->avx512_bf16 && f->tier == PF_TIER_AVX512);
    const char *cap = getenv("PALIFLOW_MAX_ISA");
    if (cap && strcmp(cap, "avx2") == 0) {
        assert_true(f->tier <= PF_TIER_AVX2);
        assert_false(f->use_vnni512 || f->use_bf16_512 || f->use_avx_vnni);
        if (raw.tier >= PF_TIER_AVX2)
            assert_string_equal(pf_cpu_dnnl_isa_name(), "avx2");
    }
    if (cap && strcmp(cap, "generic") == 0)
        assert_int_equal(f->tier, PF_TIER_GENERIC);
    char d[256];
    pf_cpu_describe(d, sizeof d);
    assert_non_null(strstr(d, pf_cpu_tier_name(f->tier)));
}

static void test_precision_parse(void **state)
{
    (void)state;
    pf_precision p;
    pf_err err;
    assert_int_equal(pf_precision_parse("auto", &p, &err), 0);
    assert_int_equal(p, PF_PREC_AUTO);
    assert_int_equal(pf_precision_parse("FP32", &p, &err), 0);
    assert_int_equal(p, PF_PREC_FP32);
    assert_int_equal(pf_precision_parse("bf16", &p, &err), 0);
    assert_int_equal(p, PF_PREC_BF16);
    assert_int_equal(pf_precision_parse("int8", &p, &err), 0);
    assert_int_equal(p, PF_PREC_INT8);
    assert_int_equal(pf_precision_parse("fp16", &p, &err), -1);
    assert_non_null(strstr(err.msg, "fp16"));
    assert_int_equal(pf_precision_parse("", &p, &err), -1);
    assert_int_equal(pf_precision_parse(NULL, &p, &err), -1);
    for (int i = PF_PREC_AUTO; i < PF_PREC_COUNT; i++) {
        assert_int_equal(pf_precision_parse(pf_precision_name((pf_precision)i), &p, &err), 0);
        assert_int_equal(p, i);
    }
}

static void test_probe_and_resolve(void **state)
{
    (void)state;
    const pf_precision_support *ps = pf_precision_probe();
    const pf_cpu_features *f = pf_cpu();
    assert_true(ps->ok[PF_PREC_FP32]); /* oneDNN always has a non-reference f32 matmul */
    for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++)
        assert_true(ps->impl[p][0] != '\0');
    if (ps->native_bf16)
        assert_true(f->use_bf16_512 || f->amx_bf16);
    /* oneDNN 2.6 refuses bf16 matmul below AVX-512 */
    if (f->tier < PF_TIER_AVX512)
        assert_false(ps->ok[PF_PREC_BF16]);

    pf_err err;
    pf_precision out;
    assert_int_equal(pf_precision_resolve(PF_PREC_AUTO, &out, &err), 0);
    assert_true(out > PF_PREC_AUTO && out < PF_PREC_COUNT && ps->ok[out]);
    /* auto is the measured choice (precision_probe.h; its own test feeds it tables). */
    const pf_probe_table *t = pf_probe_table_get(&err);
    assert_non_null(t);
    pf_precision chosen;
    assert_int_equal(pf_probe_choose(t, &chosen, NULL, 0, &err), 0);
    assert_int_equal(out, chosen);
    for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++) {
        int rc = pf_precision_resolve((pf_precision)p, &out, &err);
        if (ps->ok[p]) {
            assert_int_equal(rc, 0);
            assert_int_equal(out, p);
        } else {
            assert_int_equal(rc, -1);
            assert_non_null(strstr(err.msg, pf_precision_name((pf_precision)p)));
            assert_non_null(strstr(err.msg, "not supported"));
            assert_non_null(strstr(err.msg, "fp32")); /* names what is available */
        }
    }
}

int main(void)
{
    /* Resolving auto runs the precision probe: keep it out of the user's cache (test_precision_probe tests
     * the cache in a private directory). */
    setenv("PALIFLOW_PROBE_CACHE", "off", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect_matches_proc_cpuinfo),
        cmocka_unit_test(test_tier_consistent),
        cmocka_unit_test(test_precision_parse),
        cmocka_unit_test(test_probe_and_resolve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
