/* HEIF/HEIC, AVIF and JPEG XL (issue 19), decoded through Debian's libvips modules (vips-heif.so,
 * vips-jxl.so in libvips42). The files are made here with libvips' own encoders (libheif + libaom/x265,
 * libjxl), so nothing binary is committed. Each format: sniffed by content, decoded close to (JPEG XL
 * lossless: equal to) the PNG of the same picture, refused per item when cut short, bounded by the pixel
 * limit from its header, and a HEIF's EXIF orientation never turns the image (libheif already applied
 * the container's transforms). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <vips/vips.h>

#include "image/image.h"

enum { W = 64, H = 48, S = 16 };

typedef struct blob {
    void *buf;
    size_t len;
} blob;

static blob g_png, g_avif, g_heic, g_jxl, g_jxl_lossy, g_heic_rot;

/* A picture with structure in both axes and all three channels. */
static VipsImage *picture(void)
{
    uint8_t *px = malloc((size_t)W * H * 3);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *p = px + ((size_t)y * W + x) * 3;
            p[0] = (uint8_t)(x * 4);
            p[1] = (uint8_t)(y * 5);
            p[2] = (uint8_t)((x / 8 + y / 8) % 2 ? 200 : 40);
        }
    VipsImage *im = vips_image_new_from_memory_copy(px, (size_t)W * H * 3, W, H, 3, VIPS_FORMAT_UCHAR);
    free(px);
    return im;
}

static int make_files(void **state)
{
    (void)state;
    pf_err e;
    if (pf_img_init(&e))
        return -1;
    /* the test writes JPEG XL: libvips 8.14 flags jxlsave untrusted, which pf_img_init blocks */
    vips_operation_block_set("VipsForeignSaveJxl", FALSE);
    VipsImage *im = picture();
    if (!im)
        return -1;
    int rc = vips_pngsave_buffer(im, &g_png.buf, &g_png.len, NULL);
    rc |= vips_heifsave_buffer(im, &g_avif.buf, &g_avif.len, "compression", VIPS_FOREIGN_HEIF_COMPRESSION_AV1, "Q",
                               90, NULL);
    rc |= vips_heifsave_buffer(im, &g_heic.buf, &g_heic.len, "compression", VIPS_FOREIGN_HEIF_COMPRESSION_HEVC, "Q",
                               90, NULL);
    rc |= vips_jxlsave_buffer(im, &g_jxl.buf, &g_jxl.len, "lossless", TRUE, NULL);
    rc |= vips_jxlsave_buffer(im, &g_jxl_lossy.buf, &g_jxl_lossy.len, "Q", 90, NULL);
    /* EXIF orientation 6 (a quarter turn) in a HEIC: must not turn it */
    VipsImage *rot = NULL;
    rc |= vips_copy(im, &rot, NULL);
    if (rot) {
        vips_image_set_int(rot, VIPS_META_ORIENTATION, 6);
        rc |= vips_heifsave_buffer(rot, &g_heic_rot.buf, &g_heic_rot.len, "compression",
                                   VIPS_FOREIGN_HEIF_COMPRESSION_HEVC, NULL);
        g_object_unref(rot);
    }
    g_object_unref(im);
    if (rc)
        fprintf(stderr, "making the test files: %s\n", vips_error_buffer());
    return rc ? -1 : 0;
}

static int free_files(void **state)
{
    (void)state;
    blob *all[] = {&g_png, &g_avif, &g_heic, &g_jxl, &g_jxl_lossy, &g_heic_rot};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        g_free(all[i]->buf);
    return 0;
}

static int load(const blob *b, size_t len, const pf_img_params *o, pf_img *img, pf_img_errkind *kind, pf_err *e)
{
    return pf_img_load_buffer(b->buf, len, "pic", o, img, kind, e);
}

/* Mean absolute difference per byte to the PNG's decode (same picture, same resize). */
static double diff_to_png(const blob *b)
{
    pf_img_params o = {.size = S};
    pf_img ref, got;
    pf_img_errkind kind;
    pf_err e = {{0}};
    assert_int_equal(load(&g_png, g_png.len, &o, &ref, &kind, &e), 0);
    if (load(b, b->len, &o, &got, &kind, &e))
        fail_msg("decoding failed: %s [%s]", e.msg, pf_img_errkind_name(kind));
    assert_int_equal(got.orig_width, W);
    assert_int_equal(got.orig_height, H);
    double sum = 0;
    for (size_t i = 0; i < (size_t)S * S * 3; i++)
        sum += abs((int)got.rgb[i] - (int)ref.rgb[i]);
    pf_img_free(&ref);
    pf_img_free(&got);
    return sum / (S * S * 3);
}

static void test_decode(void **state)
{
    (void)state;
    double d_avif = diff_to_png(&g_avif), d_heic = diff_to_png(&g_heic), d_jxl = diff_to_png(&g_jxl),
           d_lossy = diff_to_png(&g_jxl_lossy);
    printf("mean |diff| to PNG after resize to %d: AVIF %.2f, HEIC %.2f, JPEG XL lossless %.2f, lossy %.2f "
           "(files of %zu, %zu, %zu, %zu bytes)\n", S, d_avif, d_heic, d_jxl, d_lossy, g_avif.len, g_heic.len,
           g_jxl.len, g_jxl_lossy.len);
    assert_true(d_jxl == 0);   /* lossless: the same bytes */
    /* lossy at Q 90 (chroma subsampled): a few levels, not a wrong decode (swapped channels, rows, ~50+) */
    assert_true(d_avif < 6);
    assert_true(d_heic < 6);
    assert_true(d_lossy < 6);
}

/* Cut anywhere: one error for the item, never a crash or a grey image. */
static void test_truncated(void **state)
{
    (void)state;
    const blob *all[] = {&g_avif, &g_heic, &g_jxl, &g_jxl_lossy};
    const char *names[] = {"AVIF", "HEIF", "JPEG XL", "JPEG XL"};
    pf_img_params o = {.size = S};
    for (size_t i = 0; i < 4; i++) {
        const blob *b = all[i];
        for (size_t cut = 16; cut < b->len; cut += cut < 64 ? 7 : b->len / 9 + 1) {
            pf_img img;
            pf_img_errkind kind = PF_IMG_OK;
            pf_err e = {{0}};
            int rc = load(b, cut, &o, &img, &kind, &e);
            if (rc == 0)
                fail_msg("%s cut to %zu of %zu bytes decoded", names[i], cut, b->len);
            assert_true(kind != PF_IMG_OK && kind != PF_IMG_INTERNAL);
            assert_non_null(strstr(e.msg, "pic"));
            if (cut == b->len / 2)
                printf("%s cut to half: %s [%s]\n", names[i], e.msg, pf_img_errkind_name(kind));
        }
    }
    /* HEIF/AVIF whose boxes run past the end are reported truncated, not corrupt */
    pf_img img;
    pf_img_errkind kind;
    pf_err e = {{0}};
    assert_int_equal(load(&g_avif, g_avif.len / 2, &o, &img, &kind, &e), -1);
    assert_int_equal(kind, PF_IMG_TRUNCATED);
    assert_non_null(strstr(e.msg, "AVIF"));
    assert_int_equal(load(&g_heic, g_heic.len - 1, &o, &img, &kind, &e), -1);
    assert_int_equal(kind, PF_IMG_TRUNCATED);
    assert_non_null(strstr(e.msg, "HEIF"));
}

/* The pixel limit is checked from the header, before any pixel is decoded. */
static void test_pixel_limit(void **state)
{
    (void)state;
    const blob *all[] = {&g_avif, &g_heic, &g_jxl};
    pf_img_params o = {.size = S, .max_pixels = W * H - 1};
    for (size_t i = 0; i < 3; i++) {
        pf_img img;
        pf_img_errkind kind;
        pf_err e = {{0}};
        assert_int_equal(load(all[i], all[i]->len, &o, &img, &kind, &e), -1);
        assert_int_equal(kind, PF_IMG_TOO_MANY_PIXELS);
    }
}

/* HEIF ignores EXIF orientation (the container's irot/imir is applied by libheif), even with autorotate. */
static void test_heif_orientation(void **state)
{
    (void)state;
    pf_img_params o = {.size = S, .autorotate = 1};
    pf_img img;
    pf_img_errkind kind;
    pf_err e = {{0}};
    assert_int_equal(load(&g_heic_rot, g_heic_rot.len, &o, &img, &kind, &e), 0);
    assert_int_equal(img.orig_width, W);
    assert_int_equal(img.orig_height, H);
    pf_img_free(&img);
}

/* ISO BMFF that is not an image (an MP4's ftyp) and a lone JPEG XL signature stay per-item errors. */
static void test_not_images(void **state)
{
    (void)state;
    static const uint8_t mp4[] = {0, 0, 0, 0x18, 'f', 't', 'y', 'p', 'i', 's', 'o', 'm', 0, 0, 2, 0,
                                  'i', 's', 'o', 'm', 'm', 'p', '4', '1', 0, 0, 0, 8, 'f', 'r', 'e', 'e'};
    static const uint8_t jxl[] = {0xff, 0x0a, 0, 0, 0, 0, 0, 0};
    static const uint8_t heif_header_only[] = {0, 0, 0, 0x14, 'f', 't', 'y', 'p', 'm', 'i', 'f', '1',
                                               0, 0, 0, 0, 'h', 'e', 'i', 'c'};
    pf_img_params o = {.size = S};
    pf_img img;
    pf_img_errkind kind;
    pf_err e = {{0}};
    assert_int_equal(pf_img_load_buffer(mp4, sizeof mp4, "clip.mp4", &o, &img, &kind, &e), -1);
    assert_int_equal(kind, PF_IMG_UNSUPPORTED);
    assert_int_equal(pf_img_load_buffer(jxl, sizeof jxl, "x.jxl", &o, &img, &kind, &e), -1);
    assert_true(kind == PF_IMG_CORRUPT || kind == PF_IMG_TRUNCATED);
    assert_non_null(strstr(e.msg, "JPEG XL"));
    assert_int_equal(pf_img_load_buffer(heif_header_only, sizeof heif_header_only, "x.heic", &o, &img, &kind, &e),
                     -1);
    assert_true(kind == PF_IMG_CORRUPT || kind == PF_IMG_TRUNCATED);
    assert_non_null(strstr(e.msg, "HEIF"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode),          cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_pixel_limit),     cmocka_unit_test(test_heif_orientation),
        cmocka_unit_test(test_not_images),
    };
    return cmocka_run_group_tests(tests, make_files, free_files);
}
