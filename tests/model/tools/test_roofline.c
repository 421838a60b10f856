/* Roofline measurements run and report sane, self-consistent numbers (never timed assertions: only that
 * the figures are finite, positive and agree with each other). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "model/tools/roofline.h"

static void test_triad(void **state)
{
    (void)state;
    pf_triad_result r;
    pf_err err;
    if (pf_roofline_triad(24u << 20, 3, &r, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(r.reps, 3);
    assert_true(r.bytes > (23u << 20) && r.bytes <= (24u << 20));
    assert_true(isfinite(r.gbs_median) && r.gbs_median > 0);
    assert_true(r.gbs_best >= r.gbs_median);
    assert_int_equal(pf_roofline_triad(100, 3, &r, &err), -1);
}

static void test_gemm(void **state)
{
    (void)state;
    pf_mm_params o = {.precision = PF_PREC_FP32};
    pf_mm_engine *e;
    pf_err err;
    if (pf_mm_engine_create(&o, &e, &err) != 0)
        fail_msg("%s", err.msg);
    const int64_t ms[] = {1, 8, 70};
    pf_gemm_result r[3];
    pf_gemm_params go = {.reps = 3, .rotate_bytes = 1u << 20};
    if (pf_roofline_gemm_multi(e, NULL, 96, 200, ms, 3, &go, r, &err) != 0)
        fail_msg("%s", err.msg);
    for (int i = 0; i < 3; i++) {
        assert_true(r[i].ms_best > 0 && r[i].ms_best <= r[i].ms_median);
        double flop = 2.0 * (double)ms[i] * 96 * 200;
        assert_true(fabs(r[i].gflops_median - flop / (r[i].ms_median * 1e6)) < 1e-6 * r[i].gflops_median);
        /* as stored: packed layouts pad N to their block (64) */
        assert_true(r[i].weight_bytes >= 96 * 200 * 4 && r[i].weight_bytes <= 96 * 256 * 4);
        assert_true(r[i].copies >= 2); /* 77 KB of weights rotate over >= 1 MB of copies */
        assert_null(strstr(r[i].impl, "ref"));
        assert_true(r[i].impl[0] != '\0' && r[i].layout[0] != '\0');
    }
    assert_int_equal(pf_roofline_gemm(e, NULL, 0, 96, 200, &go, r, &err), -1);
    pf_mm_engine_destroy(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_triad),
        cmocka_unit_test(test_gemm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
