/* The preprocess stage against hostile files and images (issue 21): path-only items that are FIFOs,
 * directories, missing, or truncated and rewritten while being read give per-item errors (never a hang,
 * never SIGBUS); the decode memory budget refuses an image whose decoding needs more than the whole budget,
 * from its header, and serialises the ones that fit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "image/image.h"
#include "workers/stages.h"

#define PF_TEST_TMP_NAME "pf_test_safe_reads"
#include "tests/support/test_tmp.h"

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void chunk(uint8_t *out, size_t *k, const char *type, const uint8_t *data, uint32_t n)
{
    put32(out + *k, n);
    memcpy(out + *k + 4, type, 4);
    if (n)
        memcpy(out + *k + 8, data, n);
    put32(out + *k + 8 + n, (uint32_t)crc32(0, out + *k + 4, n + 4));
    *k += 12 + n;
}

/* A PNG of W x H, colour type CT (2 RGB, 6 RGBA), DEPTH 8|16, Adam7 if INTERLACED; pixels from a pattern
 * (NOISE: pseudo-random bytes, so the file is large and its decoding takes a while). malloc'd. */
static uint8_t *make_png(int w, int h, int ct, int depth, int interlaced, int noise, size_t *len)
{
    int ch = ct == 6 ? 4 : 3;
    size_t bpp = (size_t)ch * (size_t)depth / 8;
    static const int px0[7] = {0, 4, 0, 2, 0, 1, 0}, py0[7] = {0, 0, 4, 0, 2, 0, 1};
    static const int pdx[7] = {8, 8, 4, 4, 2, 2, 1}, pdy[7] = {8, 8, 8, 4, 4, 2, 2};
    size_t raw_n = 0;
    for (int p = 0; p < (interlaced ? 7 : 1); p++) {
        int pw = interlaced ? (w - px0[p] + pdx[p] - 1) / pdx[p] : w;
        int ph = interlaced ? (h - py0[p] + pdy[p] - 1) / pdy[p] : h;
        if (pw > 0 && ph > 0)
            raw_n += (size_t)ph * (1 + (size_t)pw * bpp);
    }
    uint8_t *raw = calloc(raw_n, 1);
    assert_non_null(raw);
    uint32_t x = 12345;
    if (noise)
        for (size_t i = 0; i < raw_n; i++) {
            x = x * 1103515245u + 12345u;
            raw[i] = (uint8_t)(x >> 16);
        }
    /* filter bytes must be valid (0..4): the pattern may have put anything there */
    size_t k = 0;
    for (int p = 0; p < (interlaced ? 7 : 1); p++) {
        int pw = interlaced ? (w - px0[p] + pdx[p] - 1) / pdx[p] : w;
        int ph = interlaced ? (h - py0[p] + pdy[p] - 1) / pdy[p] : h;
        if (pw <= 0 || ph <= 0)
            continue;
        for (int y = 0; y < ph; y++) {
            raw[k] = 0;
            k += 1 + (size_t)pw * bpp;
        }
    }
    uLongf zn = compressBound(raw_n);
    uint8_t *out = malloc(zn + 64);
    assert_non_null(out);
    uint8_t *z = malloc(zn);
    assert_non_null(z);
    assert_int_equal(compress2(z, &zn, raw, raw_n, 1), Z_OK);
    free(raw);
    size_t n = 0;
    memcpy(out, "\x89PNG\r\n\x1a\n", 8);
    n = 8;
    uint8_t ihdr[13];
    put32(ihdr, (uint32_t)w);
    put32(ihdr + 4, (uint32_t)h);
    ihdr[8] = (uint8_t)depth;
    ihdr[9] = (uint8_t)ct;
    ihdr[10] = ihdr[11] = 0;
    ihdr[12] = (uint8_t)interlaced;
    chunk(out, &n, "IHDR", ihdr, 13);
    chunk(out, &n, "IDAT", z, (uint32_t)zn);
    chunk(out, &n, "IEND", NULL, 0);
    free(z);
    *len = n;
    return out;
}

static void write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* One path-only item through the real preprocess stage. */
static int run_item(void *inst, const char *path, char *msg, size_t cap)
{
    pf_work w;
    memset(&w, 0, sizeof w);
    w.in.path = (char *)path;
    w.in.path_only = 1;
    w.in.image_size = 16;
    pf_stage_preprocess_ops.process(inst, &w);
    snprintf(msg, cap, "%s", w.message);
    free(w.rgb);
    return w.status;
}

static void *make_stage(pf_preprocess_params *cfg)
{
    pf_err err = {{0}};
    void *inst = pf_stage_preprocess_ops.create(cfg, &err);
    assert_non_null(inst);
    return inst;
}

/* A FIFO (no writer: opening it the old way waits forever), a directory, a missing file. */
static void test_not_files(void **state)
{
    (void)state;
    pf_preprocess_params cfg = {0};
    void *inst = make_stage(&cfg);
    char fifo[256], msg[512], missing[256];
    snprintf(fifo, sizeof fifo, "%s/swapped.png", g_tmp);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(run_item(inst, fifo, msg, sizeof msg), PF_WORK_FAILED);
    assert_non_null(strstr(msg, "swapped.png"));
    assert_non_null(strstr(msg, "is a FIFO"));
    assert_int_equal(run_item(inst, g_tmp, msg, sizeof msg), PF_WORK_FAILED);
    assert_non_null(strstr(msg, "is a directory"));
    snprintf(missing, sizeof missing, "%s/missing.png", g_tmp);
    assert_int_equal(run_item(inst, missing, msg, sizeof msg), PF_WORK_RETRY); /* maybe this host lacks the mount */
    /* the file API too */
    pf_img img;
    pf_img_errkind kind;
    pf_err err;
    pf_img_params o = {.size = 16};
    assert_int_equal(pf_img_load_file(fifo, &o, &img, &kind, &err), -1);
    assert_int_equal(kind, PF_IMG_NOT_A_FILE);
    unlink(fifo);
    pf_stage_preprocess_ops.destroy(inst);
}

typedef struct churn {
    const char *path;
    const uint8_t *png;
    size_t len;
    atomic_int stop;
    int rounds;
} churn;

/* Cut the file to a few bytes and write it back, in place (same inode: what a mapping sees), until told. */
static void *churn_main(void *arg)
{
    churn *c = arg;
    int fd = open(c->path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    while (!atomic_load(&c->stop)) {
        if (ftruncate(fd, 100) != 0)
            break;
        usleep(200);
        if (pwrite(fd, c->png, c->len, 0) != (ssize_t)c->len)
            break;
        usleep(300);
        c->rounds++;
    }
    close(fd);
    return NULL;
}

/* Truncated while being read, many times over: each item is a result or a per-item error, the process lives
 * (a mapped file would raise SIGBUS here and kill the test). */
static void test_truncated_while_reading(void **state)
{
    (void)state;
    size_t len;
    uint8_t *png = make_png(700, 700, 2, 8, 0, 1, &len); /* ~1.5 MB of noise: decoding takes a while */
    char path[256], msg[512];
    snprintf(path, sizeof path, "%s/churn.png", g_tmp);
    write_file(path, png, len);
    pf_preprocess_params cfg = {0};
    void *inst = make_stage(&cfg);
    assert_int_equal(run_item(inst, path, msg, sizeof msg), PF_WORK_OK); /* whole, it is a good image */
    churn c = {.path = path, .png = png, .len = len};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, churn_main, &c), 0);
    int ok = 0, retry = 0, failed = 0;
    for (int i = 0; i < 150; i++) {
        int st = run_item(inst, path, msg, sizeof msg);
        ok += st == PF_WORK_OK;
        retry += st == PF_WORK_RETRY;
        failed += st == PF_WORK_FAILED;
        if (st != PF_WORK_OK)
            assert_non_null(strstr(msg, "churn.png"));
    }
    atomic_store(&c.stop, 1);
    pthread_join(t, NULL);
    print_message("truncated while reading: %d ok, %d retry, %d failed, %d rewrites\n", ok, retry, failed, c.rounds);
    assert_int_equal(ok + retry + failed, 150);
    assert_true(c.rounds > 0);
    pf_stage_preprocess_ops.destroy(inst);
    free(png);
}

/* The 169-megapixel-PNG case at test scale: an interlaced 16-bit RGBA PNG is decoded whole (8 bytes a
 * pixel), whatever its file size; refused from its header when that is more than the budget. The same
 * pixels not interlaced stream in rows and fit. */
static void test_budget_refuses_whole_frame(void **state)
{
    (void)state;
    pf_img_budget *b = pf_img_budget_new((uint64_t)40 << 20);
    assert_non_null(b);
    size_t len_i, len_s;
    uint8_t *inter = make_png(2400, 2400, 6, 16, 1, 0, &len_i); /* 46 MB decoded, a small file */
    uint8_t *seq = make_png(2400, 2400, 6, 16, 0, 0, &len_s);
    assert_true(len_i < (1u << 20));
    pf_img_params o = {.size = 16, .budget = b};
    pf_img img;
    pf_img_errkind kind;
    pf_err err = {{0}};
    assert_int_equal(pf_img_load_buffer(inter, len_i, "inter.png", &o, &img, &kind, &err), -1);
    assert_int_equal(kind, PF_IMG_TOO_MANY_PIXELS);
    assert_non_null(strstr(err.msg, "inter.png"));
    assert_non_null(strstr(err.msg, "decode memory budget of 40 MiB"));
    assert_int_equal(pf_img_budget_used(b), 0);
    assert_int_equal(pf_img_load_buffer(seq, len_s, "seq.png", &o, &img, &kind, &err), 0);
    assert_int_equal(img.size, 16);
    pf_img_free(&img);
    assert_int_equal(pf_img_budget_used(b), 0);
    /* without a budget the interlaced one decodes (it is a legal image) */
    o.budget = NULL;
    assert_int_equal(pf_img_load_buffer(inter, len_i, "inter.png", &o, &img, &kind, &err), 0);
    pf_img_free(&img);
    /* the estimate charges the whole frame for it, rows only for the other */
    uint64_t whole = (uint64_t)2400 * 2400 * 8;
    assert_true(pf_img_decode_estimate(len_i, 2400, 2400, whole, 0) > whole);
    assert_true(pf_img_decode_estimate(len_s, 2400, 2400, 0, 0) < ((uint64_t)40 << 20));
    free(inter);
    free(seq);
    pf_img_budget_free(b);
}

typedef struct racer {
    const uint8_t *png;
    size_t len;
    pf_img_budget *b;
    int ok;
} racer;

static void *racer_main(void *arg)
{
    racer *r = arg;
    pf_img_params o = {.size = 16, .budget = r->b};
    for (int i = 0; i < 3; i++) {
        pf_img img;
        pf_img_errkind kind;
        pf_err err;
        if (pf_img_load_buffer(r->png, r->len, "x.png", &o, &img, &kind, &err) == 0) {
            r->ok++;
            pf_img_free(&img);
        }
    }
    return NULL;
}

/* Four threads, a budget with room for one image at a time: all images come out (they wait their turn, none
 * is refused), and every reservation is given back. */
static void test_budget_shared_by_threads(void **state)
{
    (void)state;
    size_t len;
    uint8_t *png = make_png(1500, 1500, 2, 8, 1, 0, &len); /* interlaced: 6.75 MB decoded whole */
    uint64_t need = pf_img_decode_estimate(len, 1500, 1500, (uint64_t)1500 * 1500 * 3, 0);
    pf_img_budget *b = pf_img_budget_new(need + need / 2);
    racer r[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (racer){png, len, b, 0};
        assert_int_equal(pthread_create(&t[i], NULL, racer_main, &r[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(r[i].ok, 3);
    }
    assert_int_equal(pf_img_budget_used(b), 0);
    pf_img_budget_free(b);
    free(png);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_not_files),
        cmocka_unit_test(test_truncated_while_reading),
        cmocka_unit_test(test_budget_refuses_whole_frame),
        cmocka_unit_test(test_budget_shared_by_threads),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
