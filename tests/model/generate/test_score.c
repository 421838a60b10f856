/* Scoring: per-token NLL and loss of the score_bf16_sharded case against its expected values; the
 * prefix-LM mask (suffix tokens never influence prefix positions); label validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "model/ref/ref.h"
#include "model/generate/score.h"
#include "../test_util.h"

#define CASE "score_bf16_sharded"

static void test_nll_and_loss(void **state)
{
    (void)state;
    pf_model *m = test_load_model(CASE);
    test_rows r;
    test_load_rows(CASE, m, &r);
    char p[1024];
    snprintf(p, sizeof p, "%s/model/%s/expected.safetensors", PF_GOLDEN_DIR, CASE);
    pf_st_file ef;
    pf_err err;
    assert_int_equal(pf_st_open(p, &ef, &err), 0);
    const pf_st_tensor *tn = pf_st_find(&ef, "token_nll"), *tl = pf_st_find(&ef, "loss");
    float *exp_nll = malloc(tn->numel * sizeof(float)), exp_loss;
    pf_st_read_f32(tn, exp_nll, &err);
    pf_st_read_f32(tl, &exp_loss, &err);
    double sum = 0;
    size_t count = 0;
    for (int b = 0; b < r.B; b++) {
        size_t n = r.n[b], pad = (size_t)r.T - n;
        float *nll = malloc(n * sizeof(float));
        double s;
        size_t c;
        if (pf_score(m, r.pixels + (size_t)b * r.img, 1, r.ids[b], r.tt[b], r.labels[b], n, nll, &s, &c, &err) != 0)
            fail_msg("%s", err.msg);
        size_t labelled = 0;
        for (size_t t = 0; t + 1 < n; t++) {
            float want = exp_nll[(size_t)b * (size_t)(r.T - 1) + pad + t];
            if (r.labels[b][t + 1] == PF_IGNORE_INDEX) {
                assert_true(nll[t] == 0.0f);
                continue;
            }
            labelled++;
            if (fabsf(nll[t] - want) > 2.4e-4f) /* the case's token_nll atol */
                fail_msg("row %d position %zu: nll %g, expected %g", b, t, nll[t], want);
        }
        assert_int_equal(c, labelled);
        assert_true(c > 0);
        sum += s;
        count += c;

        /* The inference mask (no token types) scores differently: the mask matters. */
        double s2;
        size_t c2;
        assert_int_equal(pf_score(m, r.pixels + (size_t)b * r.img, 1, r.ids[b], NULL, r.labels[b], n, nll, &s2, &c2,
                                  &err), 0);
        assert_int_equal(c2, c);
        assert_true(fabs(s2 - s) > 1e-3);
        free(nll);
    }
    if (fabs(sum / (double)count - exp_loss) > 5.5e-5)
        fail_msg("loss %g, expected %g", sum / (double)count, exp_loss);
    free(exp_nll);
    pf_st_close(&ef);
    test_free_rows(&r);
    pf_model_free(m);
}

/* Prefix-LM: changing a suffix token leaves every prefix position's hidden state bitwise unchanged, and
 * changes the positions after it. */
static void test_prefix_isolated_from_suffix(void **state)
{
    (void)state;
    pf_model *m = test_load_model(CASE);
    test_rows r;
    test_load_rows(CASE, m, &r);
    size_t n = r.n[0], D = (size_t)m->cfg.text.hidden, first_suffix = 0;
    while (r.tt[0][first_suffix] == 0)
        first_suffix++;
    assert_true(first_suffix + 2 < n);
    float *h1 = malloc(n * D * sizeof(float)), *h2 = malloc(n * D * sizeof(float));
    pf_err err;
    assert_int_equal(pf_ref_forward(m, r.pixels, 1, r.ids[0], n, r.tt[0], NULL, h1, NULL, &err), 0);
    int32_t *ids = malloc(n * sizeof *ids);
    memcpy(ids, r.ids[0], n * sizeof *ids);
    size_t changed = first_suffix + 1;
    ids[changed] = ids[changed] == 5 ? 6 : 5;
    assert_int_equal(pf_ref_forward(m, r.pixels, 1, ids, n, r.tt[0], NULL, h2, NULL, &err), 0);
    assert_memory_equal(h1, h2, changed * D * sizeof(float));
    assert_memory_not_equal(h1 + changed * D, h2 + changed * D, D * sizeof(float));
    assert_memory_not_equal(h1 + (n - 1) * D, h2 + (n - 1) * D, D * sizeof(float));
    free(ids);
    free(h1);
    free(h2);
    test_free_rows(&r);
    pf_model_free(m);
}

static void test_bad_labels(void **state)
{
    (void)state;
    pf_model *m = test_load_model(CASE);
    test_rows r;
    test_load_rows(CASE, m, &r);
    size_t n = r.n[1];
    float *nll = malloc(n * sizeof(float));
    double s;
    size_t c;
    pf_err err;
    r.labels[1][n - 1] = 99999;
    assert_int_equal(pf_score(m, r.pixels + r.img, 1, r.ids[1], r.tt[1], r.labels[1], n, nll, &s, &c, &err), -1);
    assert_non_null(strstr(err.msg, "99999"));
    r.labels[1][n - 1] = 1;
    r.ids[1][n - 2] = -7;
    assert_int_equal(pf_score(m, r.pixels + r.img, 1, r.ids[1], r.tt[1], r.labels[1], n, nll, &s, &c, &err), -1);
    assert_non_null(strstr(err.msg, "-7"));
    free(nll);
    test_free_rows(&r);
    pf_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nll_and_loss),
        cmocka_unit_test(test_prefix_isolated_from_suffix),
        cmocka_unit_test(test_bad_labels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
