/* Image preprocessing through the API: every golden at every golden size bit-exact (and autorotate),
 * every hostile file refused with its category and the file named, from files and from buffers, alone,
 * mixed and from several threads; the normalisation table; options. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../golden_split.h"
#include "base/file.h"
#include "image_test_util.h"
#include "image/image.h"

static void load_ok(const char *path, const pf_img_params *o, pf_img *img)
{
    pf_err err = {{0}};
    pf_img_errkind kind;
    if (pf_img_load_file(path, o, img, &kind, &err) != 0)
        fail_msg("%s: %s [%s]", path, err.msg, pf_img_errkind_name(kind));
    assert_int_equal(kind, PF_IMG_OK);
    assert_non_null(img->rgb);
}

static void test_goldens_exact(void **state)
{
    (void)state;
    golden_case *cs;
    size_t n = golden_cases(&cs);
    assert_true(n >= 70); /* 33 files x 2 sizes + 896 + autorotate */
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof path, IMG_DIR "/%s", cs[i].name);
        pf_img_params o = {.size = cs[i].size, .autorotate = cs[i].autorotate};
        pf_img img;
        load_ok(path, &o, &img);
        uint8_t *want = golden_expected(&cs[i]);
        if (!want)
            fail_msg("%s: cannot read the expected image", cs[i].name);
        int mx;
        double mean;
        diff_stats(img.rgb, want, (size_t)o.size * o.size * 3, &mx, &mean);
        printf("%-28s %s%4d: max %d mean %.4f\n", cs[i].name, cs[i].autorotate ? "autorotate " : "", o.size, mx,
               mean);
        if (mx)
            nonzero++;
        assert_int_equal(img.size, o.size);
        free(want);
        pf_img_free(&img);
    }
    free(cs);
    printf("%zu golden comparisons, %d with any difference\n", n, nonzero);
    assert_int_equal(nonzero, 0);
}

/* The decoded size (what detection boxes map onto) is the stored size, or rotated with autorotate. */
static void test_orig_size(void **state)
{
    (void)state;
    pf_img img;
    pf_img_params o = {.size = 64};
    load_ok(IMG_DIR "/receipt_2000x150.png", &o, &img);
    assert_int_equal(img.orig_width, 2000);
    assert_int_equal(img.orig_height, 150);
    pf_img_free(&img);
    load_ok(IMG_DIR "/grace_exif_o6.jpg", &o, &img);
    int w = img.orig_width, h = img.orig_height;
    pf_img_free(&img);
    o.autorotate = 1;
    load_ok(IMG_DIR "/grace_exif_o6.jpg", &o, &img);
    assert_int_equal(img.orig_width, h);
    assert_int_equal(img.orig_height, w);
    pf_img_free(&img);
}

static void expect_refused_file(const char *path, pf_img_errkind want)
{
    pf_err err = {{0}};
    pf_img_errkind kind = PF_IMG_OK;
    pf_img img;
    pf_img_params o = {.size = 224};
    assert_int_equal(pf_img_load_file(path, &o, &img, &kind, &err), -1);
    assert_null(img.rgb);
    if (kind != want)
        fail_msg("%s: category %s, want %s (%s)", path, pf_img_errkind_name(kind), pf_img_errkind_name(want), err.msg);
    if (!strstr(err.msg, path))
        fail_msg("%s: message does not name the file: %s", path, err.msg);
    if (strchr(err.msg, '\n'))
        fail_msg("%s: message is not one line: %s", path, err.msg);
}

static void test_bad_files(void **state)
{
    (void)state;
    char path[512];
    for (size_t i = 0; i < g_bad_count; i++) {
        snprintf(path, sizeof path, IMG_DIR "/bad/%s", g_bad_cases[i].name);
        expect_refused_file(path, g_bad_cases[i].kind);
    }
    const char *loop = make_symlink_loop();
    assert_non_null(loop);
    expect_refused_file(loop, PF_IMG_NOT_A_FILE);
    remove_symlink_loop(loop);
    expect_refused_file("/nonexistent/dir/x.jpg", PF_IMG_IO);
}

/* Bytes received over the wire get the same verdicts (the name is only for messages). */
static void test_bad_buffers(void **state)
{
    (void)state;
    for (size_t i = 0; i < g_bad_count; i++) {
        if (g_bad_cases[i].kind == PF_IMG_NOT_A_FILE)
            continue;
        char path[512];
        snprintf(path, sizeof path, IMG_DIR "/bad/%s", g_bad_cases[i].name);
        char *data = NULL;
        size_t len = 0;
        pf_err err = {{0}};
        assert_int_equal(pf_read_file(path, 1 << 24, &data, &len, &err), 0);
        pf_img img;
        pf_img_errkind kind;
        pf_img_params o = {.size = 224};
        assert_int_equal(pf_img_load_buffer(data, len, "wire:item-7", &o, &img, &kind, &err), -1);
        if (kind != g_bad_cases[i].kind)
            fail_msg("%s: category %s, want %s", path, pf_img_errkind_name(kind), pf_img_errkind_name(g_bad_cases[i].kind));
        assert_non_null(strstr(err.msg, "wire:item-7"));
        assert_null(img.rgb);
        free(data);
    }
}

/* Good and bad files interleaved across threads: each result as if alone. */
typedef struct thread_arg {
    int id, failures;
} thread_arg;

static const char *const g_mix[] = {"chelsea.png", "bad/garbage_middle.jpg", "coffee_single.gif", "bad/bomb_screen.gif",
                                    "color_24.bmp", "bad/truncated_half.png", "rocket_cmyk_adobe.jpg",
                                    "bad/text_named.jpg", "horse_1bit.png", "bad/tile_huge.tif"};

static void *mix_worker(void *p)
{
    thread_arg *a = p;
    pf_img ref[10] = {{0}};
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < 10; k++) {
            int i = (k + a->id * 3) % 10;
            char path[512];
            snprintf(path, sizeof path, IMG_DIR "/%s", g_mix[i]);
            pf_img img;
            pf_img_errkind kind;
            pf_err err;
            pf_img_params o = {.size = 96};
            int rc = pf_img_load_file(path, &o, &img, &kind, &err);
            int bad = strncmp(g_mix[i], "bad/", 4) == 0;
            if ((rc == 0) == bad || (bad && !strstr(err.msg, g_mix[i]))) {
                a->failures++;
                continue;
            }
            if (bad)
                continue;
            if (!ref[i].rgb)
                ref[i] = img;
            else {
                if (memcmp(ref[i].rgb, img.rgb, 96 * 96 * 3) != 0)
                    a->failures++;
                pf_img_free(&img);
            }
        }
    }
    for (int i = 0; i < 10; i++)
        pf_img_free(&ref[i]);
    return NULL;
}

static void test_threads_mixed(void **state)
{
    (void)state;
    pthread_t t[4];
    thread_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (thread_arg){.id = i};
        assert_int_equal(pthread_create(&t[i], NULL, mix_worker, &a[i]), 0);
    }
    /* Join them all before judging: a failed assertion leaves this function (longjmp), and threads still
     * running then read their thread_arg from its dead stack frame (a garbage id -> index out of g_mix):
     * a SIGSEGV instead of a failure, as seen when the images were missing. */
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(a[i].failures, 0);
}

static void test_max_pixels_option(void **state)
{
    (void)state;
    pf_img img;
    pf_img_errkind kind;
    pf_err err;
    /* receipt is 2000 x 150 = 300000 pixels */
    pf_img_params o = {.size = 32, .max_pixels = 299999};
    assert_int_equal(pf_img_load_file(IMG_DIR "/receipt_2000x150.png", &o, &img, &kind, &err), -1);
    assert_int_equal(kind, PF_IMG_TOO_MANY_PIXELS);
    o.max_pixels = 300000;
    load_ok(IMG_DIR "/receipt_2000x150.png", &o, &img);
    pf_img_free(&img);
    o.size = 0;
    assert_int_equal(pf_img_load_file(IMG_DIR "/receipt_2000x150.png", &o, &img, &kind, &err), -1);
    assert_null(img.rgb);
    o.size = PF_IMG_MAX_SIZE + 1;
    assert_int_equal(pf_img_load_file(IMG_DIR "/receipt_2000x150.png", &o, &img, &kind, &err), -1);
}

/* transformers: float32(float64(u8) * 0.00392156862745098), then (x - 0.5f) / 0.5f in float32. */
static void test_pixel_values(void **state)
{
    (void)state;
    for (int v = 0; v < 256; v++) {
        volatile float x = (float)((double)v * 0.00392156862745098);
        volatile float want = (x - 0.5f) / 0.5f;
        float got = pf_img_pixel_value((uint8_t)v);
        if (memcmp(&got, (const void *)&want, sizeof got) != 0)
            fail_msg("u8 %d: got %.9g want %.9g", v, got, want);
    }
    assert_true(pf_img_pixel_value(0) == -1.0f && pf_img_pixel_value(255) == 1.0f);
    /* layout: HWC u8 in, CHW float out */
    uint8_t rgb[2 * 2 * 3];
    for (int i = 0; i < 12; i++)
        rgb[i] = (uint8_t)(i * 20);
    float chw[12];
    pf_img_to_pixels(rgb, 2, chw);
    for (int c = 0; c < 3; c++)
        for (int p = 0; p < 4; p++)
            assert_true(chw[c * 4 + p] == pf_img_pixel_value(rgb[p * 3 + c]));
}

/* Found by fuzz_image: a PNG cut 11 bytes into a chunk header made the CRC walk read past the end. */
static void test_fuzz_regressions(void **state)
{
    (void)state;
    static const uint8_t png_cut_in_chunk[] = {
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0xfd, 0xe8, 0x00, 0x00, 0xfd, 0xe8, 0x08, 0x00, 0x00, 0x00, 0x00, 0x87,
        0x3c, 0x86, 0xd6, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x0c, 0x6a, 0x82};
    pf_img img;
    pf_img_errkind kind;
    pf_err err;
    pf_img_params o = {.size = 16};
    assert_int_equal(pf_img_load_buffer(png_cut_in_chunk, sizeof png_cut_in_chunk, "fuzz", &o, &img, &kind, &err), -1);
    assert_int_equal(kind, PF_IMG_TRUNCATED);
}

/* Every format cut at many lengths: refused (never a crash, never "internal"), or decoded. */
static void test_prefixes(void **state)
{
    (void)state;
    static const char *const files[] = {"tiny_3x5.png", "foo_5x3_indexed.png", "grace_icc.jpg", "no_time_anim.gif",
                                        "coffee_lossy_alpha.webp", "ihc_lzw.tif", "color_24.bmp",
                                        "horse_1bit.png", "coffee_prog_444.jpg"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char path[512], *data;
        size_t len;
        pf_err err;
        snprintf(path, sizeof path, IMG_DIR "/%s", files[f]);
        assert_int_equal(pf_read_file(path, 1 << 24, &data, &len, &err), 0);
        size_t step = len / 97 + 1;
        for (size_t cut = 0; cut < len; cut += cut < 256 ? 1 : step) {
            pf_img img;
            pf_img_errkind kind;
            pf_img_params o = {.size = 8, .autorotate = (int)(cut & 1)};
            if (pf_img_load_buffer(data, cut, "cut", &o, &img, &kind, &err) == 0) {
                pf_img_free(&img);
                continue;
            }
            if (kind == PF_IMG_OK || kind == PF_IMG_INTERNAL || !strstr(err.msg, "cut"))
                fail_msg("%s cut at %zu: kind %s, %s", files[f], cut, pf_img_errkind_name(kind), err.msg);
        }
        free(data);
    }
}

static void test_errkind_names(void **state)
{
    (void)state;
    assert_string_equal(pf_img_errkind_name(PF_IMG_EMPTY), "empty");
    assert_string_equal(pf_img_errkind_name(PF_IMG_NOT_A_FILE), "not-a-file");
    assert_string_equal(pf_img_errkind_name(PF_IMG_TRUNCATED), "truncated");
    assert_string_equal(pf_img_errkind_name(PF_IMG_CORRUPT), "corrupt");
    assert_string_equal(pf_img_errkind_name(PF_IMG_UNSUPPORTED), "unsupported-format");
    assert_string_equal(pf_img_errkind_name(PF_IMG_TOO_MANY_PIXELS), "too-many-pixels");
}

static int setup(void **state)
{
    (void)state;
    pf_err err;
    if (pf_img_init(&err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return pf_img_init(&err); /* idempotent */
}

int main(int argc, char **argv)
{
    int golden = pf_test_golden_group(&argc, &argv);
    if (argc != 1) {
        fprintf(stderr, "usage: %s [golden]\n", argv[0]);
        return 2;
    }
    const struct CMUnitTest core[] = {
        cmocka_unit_test(test_pixel_values),
        cmocka_unit_test(test_errkind_names),
        cmocka_unit_test(test_fuzz_regressions),
    };
    const struct CMUnitTest with_golden[] = {
        cmocka_unit_test(test_goldens_exact),   cmocka_unit_test(test_orig_size),
        cmocka_unit_test(test_bad_files),       cmocka_unit_test(test_bad_buffers),
        cmocka_unit_test(test_threads_mixed),   cmocka_unit_test(test_max_pixels_option),
        cmocka_unit_test(test_prefixes),
    };
    return golden ? cmocka_run_group_tests_name("golden", with_golden, setup, NULL)
                  : cmocka_run_group_tests_name("core", core, setup, NULL);
}
