/* The Pillow bicubic port: fixed values computed by Pillow 9.4, the streaming/vectorised path against the
 * straight scalar port on random images of many shapes, and recomputed coefficients against the table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image/resample.h"

/* Image.fromarray((np.arange(45) * 37 % 256).astype(np.uint8).reshape(3, 5, 3)).resize((W, H), BICUBIC) */
static const uint8_t pil_8x5[] = {
    0,   26,  63,  34,  85,  122, 115, 143, 180, 218, 35,  72,  199, 15,  61,  78,  103, 148, 133, 195,
    66,  193, 250, 0,   10,  42,  78,  56,  101, 143, 128, 159, 208, 147, 51,  92,  128, 35,  76,  89,
    123, 164, 162, 146, 82,  221, 150, 12,  35,  72,  109, 94,  131, 168, 152, 189, 226, 44,  81,  118,
    25,  70,  107, 113, 157, 194, 193, 75,  112, 239, 2,   39,  64,  102, 151, 124, 161, 124, 181, 219,
    91,  65,  111, 97,  51,  100, 149, 147, 187, 224, 123, 98,  142, 91,  20,  69,  81,  118, 175, 140,
    177, 92,  198, 235, 0,   90,  127, 80,  80,  116, 174, 167, 203, 240, 73,  121, 158, 0,   48,  85};
static const uint8_t pil_2x2[] = {87, 87, 134, 149, 111, 91, 109, 152, 120, 104, 109, 145};

static void test_pillow_values(void **state)
{
    (void)state;
    uint8_t in[45], out[8 * 5 * 3];
    for (int i = 0; i < 45; i++)
        in[i] = (uint8_t)(i * 37 % 256);
    pf_err err;
    assert_int_equal(pf_resample_rgb(in, 5, 3, 15, out, 8, 5, &err), 0);
    assert_memory_equal(out, pil_8x5, sizeof pil_8x5);
    assert_int_equal(pf_resample_rgb(in, 5, 3, 15, out, 2, 2, &err), 0);
    assert_memory_equal(out, pil_2x2, sizeof pil_2x2);
    assert_int_equal(pf_resample_rgb_reference(in, 5, 3, 15, out, 8, 5, &err), 0);
    assert_memory_equal(out, pil_8x5, sizeof pil_8x5);
}

static uint32_t g_rng = 12345;
static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 17;
    g_rng ^= g_rng << 5;
    return g_rng;
}

static void check_shape(int iw, int ih, int ow, int oh, int edges)
{
    size_t n = (size_t)iw * ih * 3;
    uint8_t *in = malloc(n), *a = malloc((size_t)ow * oh * 3), *b = malloc((size_t)ow * oh * 3);
    assert_non_null(in);
    for (size_t i = 0; i < n; i++)
        in[i] = edges ? (rnd() & 1 ? 255 : 0) : (uint8_t)rnd();
    pf_err err;
    assert_int_equal(pf_resample_rgb(in, iw, ih, (size_t)iw * 3, a, ow, oh, &err), 0);
    assert_int_equal(pf_resample_rgb_reference(in, iw, ih, (size_t)iw * 3, b, ow, oh, &err), 0);
    if (memcmp(a, b, (size_t)ow * oh * 3) != 0)
        fail_msg("%dx%d -> %dx%d: streaming path differs from the reference port", iw, ih, ow, oh);
    free(in);
    free(a);
    free(b);
}

static void test_streaming_equals_reference(void **state)
{
    (void)state;
    static const int shapes[][4] = {
        {1, 1, 224, 224}, {5, 3, 448, 448}, {3000, 2000, 224, 224}, {2000, 150, 896, 896}, {90, 1400, 448, 448},
        {224, 224, 224, 224}, {224, 300, 224, 224}, {300, 224, 224, 224}, {1, 5000, 7, 9}, {5000, 1, 9, 7},
        {641, 479, 448, 448}, {17, 4099, 224, 224}, {2, 2, 1, 1}, {1, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        check_shape(shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], (int)(i & 1));
    for (int i = 0; i < 60; i++)
        check_shape(1 + (int)(rnd() % 700), 1 + (int)(rnd() % 700), 1 + (int)(rnd() % 500), 1 + (int)(rnd() % 500),
                    i & 1);
}

/* Coefficients recomputed on the fly (used for absurd aspect ratios) equal the precomputed table. */
static void test_coeffs_on_the_fly(void **state)
{
    (void)state;
    static const int sizes[][2] = {{3000, 224}, {1, 896}, {150, 448}, {100000, 7}, {7, 100000 / 50}, {449, 448}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        pf_rs_axis t, f;
        pf_err err;
        assert_int_equal(pf_rs_axis_init(&t, sizes[s][0], sizes[s][1], SIZE_MAX, &err), 0);
        assert_int_equal(pf_rs_axis_init(&f, sizes[s][0], sizes[s][1], 0, &err), 0);
        assert_non_null(t.k);
        assert_null(f.k);
        int64_t worst = 0;
        for (int o = 0; o < t.out_size; o++) {
            int64_t sum = 0, abs_sum = 0;
            for (int k = 0; k < t.bounds[2 * o + 1]; k++) {
                int32_t c = pf_rs_axis_coeff(&t, o, k);
                assert_int_equal(c, pf_rs_axis_coeff(&f, o, k));
                sum += c;
                abs_sum += c < 0 ? -c : c;
            }
            /* normalised: sums to 1.0 in 22-bit fixed point up to rounding */
            assert_true(sum > (1 << 22) - t.bounds[2 * o + 1] && sum < (1 << 22) + t.bounds[2 * o + 1]);
            if (abs_sum > worst)
                worst = abs_sum;
        }
        /* int32 accumulation of u8 * coefficients cannot overflow */
        assert_true(worst * 255 + (1 << 21) < INT32_MAX);
        pf_rs_axis_free(&t);
        pf_rs_axis_free(&f);
    }
}

static void test_bad_sizes(void **state)
{
    (void)state;
    pf_resampler r;
    pf_err err;
    uint8_t out[3];
    assert_int_equal(pf_resampler_init(&r, 0, 5, 1, 1, out, &err), -1);
    assert_int_equal(pf_resampler_init(&r, 5, 5, 1, 0, out, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pillow_values),
        cmocka_unit_test(test_streaming_equals_reference),
        cmocka_unit_test(test_coeffs_on_the_fly),
        cmocka_unit_test(test_bad_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
