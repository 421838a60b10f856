/* seg units: .npy / .npz parsing (valid, stored and deflated, and malformed files refused by name), the
 * decoder's key and shape checks with D read from the file, COCO RLE, answer parsing, the float resize. */
#include <archive.h>
#include <archive_entry.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/seg/answer.h"
#include "model/seg/decoder.h"
#include "model/seg/mask.h"
#include "model/seg/npy.h"
#include "model/seg/npz.h"
#include "model/seg/objects.h"
#include "model/seg/resize.h"
#include "model/seg/rle.h"
#include "pipeline/record.h"
#include "proto/proto.h"

/* ---------- building test files ---------- */

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *s, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

/* A version-1.0 .npy of DESCR with SHAPE (NDIM dims), DATA bytes after the header. */
static buf npy(const char *descr, int ndim, const int64_t *shape, const void *data, size_t nbytes)
{
    char dict[256];
    size_t k = (size_t)snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int i = 0; i < ndim; i++)
        k += (size_t)snprintf(dict + k, sizeof dict - k, "%lld,%s", (long long)shape[i], i + 1 < ndim ? " " : "");
    k += (size_t)snprintf(dict + k, sizeof dict - k, "), }");
    size_t total = 10 + k + 1;
    size_t pad = (64 - total % 64) % 64;
    buf b = {0};
    put(&b, "\x93NUMPY\x01\x00", 8);
    uint16_t hl = (uint16_t)(k + pad + 1);
    uint8_t le[2] = {(uint8_t)(hl & 0xff), (uint8_t)(hl >> 8)};
    put(&b, le, 2);
    put(&b, dict, k);
    for (size_t i = 0; i < pad; i++)
        put(&b, " ", 1);
    put(&b, "\n", 1);
    put(&b, data, nbytes);
    return b;
}

typedef struct member {
    char name[96];
    buf data;
} member;

/* A zip of MEMBERS written by libarchive; COMPRESSION "store" or "deflate". */
static buf zip(const member *m, size_t n, const char *compression)
{
    size_t cap = 64 << 20;
    uint8_t *out = malloc(cap);
    size_t used = 0;
    struct archive *a = archive_write_new();
    archive_write_set_format_zip(a);
    char opt[64];
    snprintf(opt, sizeof opt, "zip:compression=%s", compression);
    assert_int_equal(archive_write_set_options(a, opt), ARCHIVE_OK);
    assert_int_equal(archive_write_open_memory(a, out, cap, &used), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, m[i].name);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t)m[i].data.n);
        assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
        assert_int_equal(archive_write_data(a, m[i].data.p, m[i].data.n), (la_ssize_t)m[i].data.n);
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
    buf b = {out, used, cap};
    return b;
}

/* Deterministic small values (the decoder's numbers do not matter here, only that they are finite). */
static float val(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return ((float)(*s >> 8) / 16777216.0f - 0.5f) * 0.2f;
}

static void add_f32(member *m, size_t *n, const char *name, int ndim, const int64_t *shape, uint32_t *seed)
{
    size_t count = 1;
    for (int i = 0; i < ndim; i++)
        count *= (size_t)shape[i];
    float *v = malloc(count * sizeof *v);
    for (size_t i = 0; i < count; i++)
        v[i] = val(seed);
    snprintf(m[*n].name, sizeof m[*n].name, "%s.npy", name);
    m[*n].data = npy("<f4", ndim, shape, v, count * 4);
    free(v);
    (*n)++;
}

/* The members of a decoder with codebook [128, D]; SKIP (may be NULL) names one left out. */
static size_t decoder_members(member *m, int D, const char *skip)
{
    uint32_t seed = 7;
    size_t n = 0;
#define ADD(name, nd, ...)                                                                                         \
    do {                                                                                                           \
        if (!skip || strcmp(skip, name))                                                                           \
            add_f32(m, &n, name, nd, (const int64_t[]){__VA_ARGS__}, &seed);                                       \
    } while (0)
    ADD("_vq_vae._embedding", 2, 128, D);
    ADD("decoder.0.weight", 4, 128, D, 1, 1);
    ADD("decoder.0.bias", 1, 128);
    for (int r = 2; r <= 3; r++) {
        char nm[64];
        static const int idx[3] = {0, 2, 4}, k[3] = {3, 3, 1};
        for (int j = 0; j < 3; j++) {
            snprintf(nm, sizeof nm, "decoder.%d.net.%d.weight", r, idx[j]);
            ADD(nm, 4, 128, 128, k[j], k[j]);
            snprintf(nm, sizeof nm, "decoder.%d.net.%d.bias", r, idx[j]);
            ADD(nm, 1, 128);
        }
    }
    static const int io[4][2] = {{128, 128}, {128, 64}, {64, 32}, {32, 16}};
    for (int j = 0; j < 4; j++) {
        char nm[64];
        snprintf(nm, sizeof nm, "decoder.%d.weight", 4 + 2 * j);
        ADD(nm, 4, io[j][0], io[j][1], 4, 4);
        snprintf(nm, sizeof nm, "decoder.%d.bias", 4 + 2 * j);
        ADD(nm, 1, io[j][1]);
    }
    ADD("decoder.12.weight", 4, 1, 16, 1, 1);
    ADD("decoder.12.bias", 1, 1);
#undef ADD
    return n;
}

static void free_members(member *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(m[i].data.p);
}

/* ---------- npy ---------- */

static void test_npy(void **state)
{
    (void)state;
    float v[6] = {1, 2, 3, 4, 5, 6};
    pf_npy a;
    pf_err e;
    buf b = npy("<f4", 2, (const int64_t[]){2, 3}, v, sizeof v);
    assert_int_equal(pf_npy_parse(b.p, b.n, "x", &a, &e), 0);
    assert_int_equal(a.ndim, 2);
    assert_int_equal(a.count, 6);
    assert_true(pf_npy_is_f32(&a, 2, (const int64_t[]){2, 3}));
    assert_false(pf_npy_is_f32(&a, 2, (const int64_t[]){3, 2}));
    /* one byte short, one too many */
    assert_int_equal(pf_npy_parse(b.p, b.n - 1, "x", &a, &e), -1);
    assert_non_null(strstr(e.msg, "x: .npy shape [2, 3]"));
    free(b.p);
    b = npy("<f4", 2, (const int64_t[]){2, 3}, v, sizeof v + 0);
    put(&b, "\0", 1);
    assert_int_equal(pf_npy_parse(b.p, b.n, "x", &a, &e), -1);
    free(b.p);
    /* 0-d, bool, refused dtypes */
    b = npy("<f4", 0, NULL, v, 4);
    assert_int_equal(pf_npy_parse(b.p, b.n, "x", &a, &e), 0);
    assert_int_equal(a.count, 1);
    free(b.p);
    b = npy("|b1", 1, (const int64_t[]){3}, "\1\0\1", 3);
    assert_int_equal(pf_npy_parse(b.p, b.n, "x", &a, &e), 0);
    assert_int_equal(a.kind, 'b');
    free(b.p);
    static const char *refused[] = {">f4", "|O", "<U8", "<c8", "|f4", "<f3", "<b2"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        b = npy(refused[i], 1, (const int64_t[]){1}, v, 4);
        assert_int_equal(pf_npy_parse(b.p, b.n, "arr", &a, &e), -1);
        assert_non_null(strstr(e.msg, "arr"));
        free(b.p);
    }
    /* huge dims are refused before anything multiplies out */
    b = npy("<f4", 3, (const int64_t[]){1ll << 40, 1ll << 40, 1ll << 40}, v, 4);
    assert_int_equal(pf_npy_parse(b.p, b.n, "x", &a, &e), -1);
    free(b.p);
    /* header damage */
    static const char *bad[] = {"\x93NUMPX\x01\x00\x00\x00", "\x93NUMPY\x09\x00\x00\x00", "\x93NUMPY\x01\x00\xff\x00{",
                                "\x93NUMPY\x01\x00\x02\x00{}", "\x93NUMPY\x01\x00\x05\x00{'a':"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(pf_npy_parse((const uint8_t *)bad[i], 10 + (i >= 2 ? strlen(bad[i] + 10) : 0), "x", &a, &e),
                         -1);
}

/* ---------- npz and the decoder ---------- */

static void test_npz_and_decoder(void **state)
{
    (void)state;
    member m[40];
    pf_err e;
    pf_npz z;
    pf_seg_decoder *d;
    float out_store[64 * 64], out_deflate[64 * 64];
    const char *comp[2] = {"store", "deflate"};
    for (int c = 0; c < 2; c++) {
        size_t n = decoder_members(m, 5, NULL);   /* D = 5: read from the file, not assumed */
        buf zb = zip(m, n, comp[c]);
        assert_int_equal(pf_npz_read_memory(zb.p, zb.n, "t.npz", NULL, &z, &e), 0);
        assert_int_equal(z.n, n);
        assert_non_null(pf_npz_get(&z, "decoder.12.bias"));
        assert_int_equal(pf_seg_decoder_from_npz(&z, "t.npz", &d, &e), 0);
        assert_int_equal(pf_seg_decoder_dim(d), 5);
        int codes[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 127, 64};
        assert_int_equal(pf_seg_decode(d, codes, c ? out_deflate : out_store, &e), 0);
        codes[3] = 128;
        assert_int_equal(pf_seg_decode(d, codes, out_store, &e), -1);
        assert_non_null(strstr(e.msg, "code 3"));
        pf_seg_decoder_free(d);
        pf_npz_free(&z);
        /* Truncated archives and flipped bytes are refused, never crash. */
        for (size_t cut = 1; cut < zb.n; cut += zb.n / 7)
            if (pf_npz_read_memory(zb.p, cut, "t.npz", NULL, &z, &e) == 0)
                pf_npz_free(&z);
        for (size_t at = 0; at < zb.n; at += zb.n / 13 + 1) {
            zb.p[at] ^= 0x5a;
            if (pf_npz_read_memory(zb.p, zb.n, "t.npz", NULL, &z, &e) == 0) {
                if (pf_seg_decoder_from_npz(&z, "t.npz", &d, &e) == 0)
                    pf_seg_decoder_free(d);
                pf_npz_free(&z);
            }
            zb.p[at] ^= 0x5a;
        }
        free(zb.p);
        free_members(m, n);
    }
    assert_memory_equal(out_store, out_deflate, sizeof out_store);
    /* A flipped payload byte in a stored member fails its CRC. */
    size_t n = decoder_members(m, 5, NULL);
    buf zb = zip(m, n, "store");
    zb.p[200] ^= 1;
    assert_int_equal(pf_npz_read_memory(zb.p, zb.n, "t.npz", NULL, &z, &e), -1);
    assert_non_null(strstr(e.msg, "t.npz"));
    free(zb.p);
    /* Size limits are applied before allocating. */
    zb = zip(m, n, "store");
    pf_npz_limits lim = pf_npz_default_limits();
    lim.max_member_bytes = 1000;
    assert_int_equal(pf_npz_read_memory(zb.p, zb.n, "t.npz", &lim, &z, &e), -1);
    assert_non_null(strstr(e.msg, "above the limit"));
    free(zb.p);
    free_members(m, n);
    /* A missing key and a wrong shape are named. */
    n = decoder_members(m, 5, "decoder.8.weight");
    zb = zip(m, n, "store");
    assert_int_equal(pf_npz_read_memory(zb.p, zb.n, "t.npz", NULL, &z, &e), 0);
    assert_int_equal(pf_seg_decoder_from_npz(&z, "t.npz", &d, &e), -1);
    assert_non_null(strstr(e.msg, "t.npz: array 'decoder.8.weight' is missing"));
    pf_npz_free(&z);
    free(zb.p);
    free_members(m, n);
    n = decoder_members(m, 5, "decoder.6.weight");
    uint32_t seed = 1;
    add_f32(m, &n, "decoder.6.weight", 4, (const int64_t[]){64, 128, 4, 4}, &seed);   /* Conv2d layout: wrong */
    zb = zip(m, n, "store");
    assert_int_equal(pf_npz_read_memory(zb.p, zb.n, "t.npz", NULL, &z, &e), 0);
    assert_int_equal(pf_seg_decoder_from_npz(&z, "t.npz", &d, &e), -1);
    assert_non_null(strstr(e.msg, "'decoder.6.weight': want float32 [128, 64, 4, 4]"));
    pf_npz_free(&z);
    free(zb.p);
    free_members(m, n);
    /* Duplicate members, NaN weights. */
    n = decoder_members(m, 5, NULL);
    m[n].data = npy("<f4", 1, (const int64_t[]){1}, "\0\0\0\0", 4);
    snprintf(m[n].name, sizeof m[n].name, "decoder.0.bias.npy");
    n++;
    zb = zip(m, n, "store");
    assert_int_equal(pf_npz_read_memory(zb.p, zb.n, "t.npz", NULL, &z, &e), -1);
    assert_non_null(strstr(e.msg, "appears twice"));
    free(zb.p);
    free_members(m, n);
    n = decoder_members(m, 5, "decoder.12.bias");
    float nan = NAN;
    m[n].data = npy("<f4", 1, (const int64_t[]){1}, &nan, 4);
    snprintf(m[n].name, sizeof m[n].name, "decoder.12.bias.npy");
    n++;
    zb = zip(m, n, "deflate");
    assert_int_equal(pf_npz_read_memory(zb.p, zb.n, "t.npz", NULL, &z, &e), 0);
    assert_int_equal(pf_seg_decoder_from_npz(&z, "t.npz", &d, &e), -1);
    assert_non_null(strstr(e.msg, "'decoder.12.bias': element 0 is not finite"));
    pf_npz_free(&z);
    free(zb.p);
    free_members(m, n);
    /* Not a zip at all; a missing file. */
    assert_int_equal(pf_npz_read_memory("hello world, not a zip", 22, "x.npz", NULL, &z, &e), -1);
    assert_non_null(strstr(e.msg, "x.npz"));
    assert_int_equal(pf_seg_decoder_load("/nonexistent/vae-oid.npz", &d, &e), -1);
    assert_non_null(strstr(e.msg, "/nonexistent/vae-oid.npz"));
}

/* ---------- RLE ---------- */

static void test_rle(void **state)
{
    (void)state;
    pf_rle r;
    pf_err e;
    /* 3 rows x 2 columns, row-major:  1 0 / 1 1 / 0 0  -> column-major 1 1 0 | 0 1 0 */
    const uint8_t m[6] = {1, 0, 1, 1, 0, 0};
    assert_int_equal(pf_rle_encode(m, 2, 3, &r, &e), 0);
    const uint64_t want[] = {0, 2, 2, 1, 1};
    assert_int_equal(r.n, 5);
    assert_memory_equal(r.counts, want, sizeof want);
    assert_int_equal(r.height, 3);
    assert_int_equal(r.width, 2);
    uint8_t *back;
    assert_int_equal(pf_rle_decode(&r, &back, &e), 0);
    assert_memory_equal(back, m, 6);
    free(back);
    pf_rle_free(&r);
    /* empty and full */
    uint8_t z[12] = {0}, o[12];
    memset(o, 1, sizeof o);
    assert_int_equal(pf_rle_encode(z, 4, 3, &r, &e), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.counts[0], 12);
    pf_rle_free(&r);
    assert_int_equal(pf_rle_encode(o, 4, 3, &r, &e), 0);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.counts[0], 0);
    assert_int_equal(r.counts[1], 12);
    pf_rle_free(&r);
    /* A window equals the same full mask. */
    uint8_t full[7 * 5] = {0}, win[3 * 2] = {1, 0, 0, 1, 1, 1};
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 3; x++)
            full[(y + 2) * 7 + x + 4] = win[y * 3 + x];
    pf_rle a, b;
    assert_int_equal(pf_rle_encode(full, 7, 5, &a, &e), 0);
    assert_int_equal(pf_rle_from_window(7, 5, 4, 2, 3, 2, win, &b, &e), 0);
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.counts, b.counts, a.n * sizeof *a.counts);
    pf_rle_free(&a);
    pf_rle_free(&b);
    /* Out-of-image windows and inconsistent counts are refused. */
    assert_int_equal(pf_rle_from_window(7, 5, 5, 2, 3, 2, win, &b, &e), -1);
    uint64_t bad[] = {3, 4};
    pf_rle rb = {.height = 2, .width = 2, .counts = bad, .n = 2};
    assert_int_equal(pf_rle_decode(&rb, &back, &e), -1);
    uint64_t huge[] = {UINT64_MAX, 5};
    rb.counts = huge;
    assert_int_equal(pf_rle_decode(&rb, &back, &e), -1);
}

/* ---------- answers ---------- */

static const char *SEGS = "<seg001><seg002><seg003><seg004><seg005><seg006><seg007><seg008><seg009><seg010>"
                          "<seg011><seg012><seg013><seg014><seg015><seg016>";

static void test_answer(void **state)
{
    (void)state;
    char t[1024];
    pf_seg_object *o;
    size_t n;
    pf_err e;
    snprintf(t, sizeof t, "junk <loc0010><loc0020><loc0030><loc0040>%s big cat ; <loc0001><loc0002><loc0003>"
                          "<loc0004> dog; <loc0005><loc0006><loc0007>", SEGS);
    assert_int_equal(pf_seg_answer_parse(t, strlen(t), &o, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_string_equal(o[0].label, "big cat");
    assert_int_equal(o[0].loc[3], 40);
    assert_true(o[0].has_codes && o[0].tokens_valid && o[0].box_valid);
    assert_int_equal(o[0].codes[15], 16);
    assert_string_equal(o[1].label, "dog");
    assert_false(o[1].has_codes);
    assert_true(o[1].box_valid);
    assert_false(o[1].tokens_valid);
    pf_seg_objects_free(o, n);
    /* Out-of-vocabulary values parse but are invalid; 15 segs are no codes; y1 <= y0 is invalid. */
    snprintf(t, sizeof t, "<loc0010><loc0020><loc1024><loc0040> a<loc0050><loc0020><loc0040><loc0040>%s b "
                          "<loc0001><loc0002><loc0003><loc0004><seg200>%s c", SEGS, SEGS + 8);
    assert_int_equal(pf_seg_answer_parse(t, strlen(t), &o, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_false(o[0].box_valid);
    assert_true(o[1].has_codes);
    assert_false(o[1].box_valid);
    assert_false(o[1].tokens_valid);
    assert_true(o[2].has_codes);
    assert_true(o[2].box_valid);
    assert_false(o[2].tokens_valid);   /* <seg200> */
    pf_seg_objects_free(o, n);
    /* NUL bytes and a text cut mid-token. */
    const char nul[] = "<loc0001><loc0002>\0<loc0003><loc0004> x <loc0001><loc0002><loc0003><loc00";
    assert_int_equal(pf_seg_answer_parse(nul, sizeof nul - 1, &o, &n, &e), 0);
    assert_int_equal(n, 0);
    pf_seg_objects_free(o, n);
}

static void test_objects_json(void **state)
{
    (void)state;
    char t[512];
    pf_err e;
    snprintf(t, sizeof t, "<loc0000><loc0000><loc1023><loc1023>%s cat ; <loc0100><loc0100><loc0200><loc0200> dog",
             SEGS);
    int missing;
    json_t *j = pf_seg_objects_json(t, strlen(t), 40, 30, NULL, &missing, &e);
    assert_non_null(j);
    assert_true(missing);
    assert_int_equal(json_array_size(j), 2);
    assert_true(json_is_null(json_object_get(json_array_get(j, 0), "mask")));
    assert_null(json_object_get(json_array_get(j, 1), "mask"));   /* no seg codes: no mask key */
    assert_true(fabs(json_real_value(json_object_get(json_array_get(j, 0), "x1")) - 40.0) < 1e-9);
    json_decref(j);
    /* With a decoder: a full-image RLE on a 40x30 image. */
    member m[40];
    size_t n = decoder_members(m, 3, NULL);
    buf zb = zip(m, n, "store");
    pf_npz z;
    pf_seg_decoder *d;
    assert_int_equal(pf_npz_read_memory(zb.p, zb.n, "t.npz", NULL, &z, &e), 0);
    assert_int_equal(pf_seg_decoder_from_npz(&z, "t.npz", &d, &e), 0);
    j = pf_seg_objects_json(t, strlen(t), 40, 30, d, &missing, &e);
    assert_non_null(j);
    assert_false(missing);
    json_t *mask = json_object_get(json_array_get(j, 0), "mask");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(mask, "size"), 0)), 30);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(mask, "size"), 1)), 40);
    json_int_t sum = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(mask, "counts"), i, c) sum += json_integer_value(c);
    assert_int_equal(sum, 1200);
    json_decref(j);
    assert_null(pf_seg_objects_json(t, strlen(t), 0, 30, d, &missing, &e));
    pf_seg_decoder_free(d);
    pf_npz_free(&z);
    free(zb.p);
    free_members(m, n);
    assert_true(pf_seg_prompt_is_segment("segment cat"));
    assert_true(pf_seg_prompt_is_segment("segment"));
    assert_false(pf_seg_prompt_is_segment("segmentation"));
    assert_false(pf_seg_prompt_is_segment("detect cat"));
}

/* ---------- records: worker -> result message -> sink ---------- */

/* M (a result) through the wire and into a record. */
static json_t *through_wire(const pf_msg *m)
{
    uint8_t *wire;
    size_t len;
    pf_err e;
    assert_int_equal(pf_msg_encode(m, &wire, &len, &e), 0);
    pf_msg d;
    pf_proto_limits lim = pf_proto_default_limits();
    assert_int_equal(pf_msg_decode(wire, len, &lim, &d, &e), 0);
    memset(wire, 0, len);   /* the record must not depend on the receive buffer */
    free(wire);
    json_t *rec = pf_record_make(&d);
    pf_msg_free(&d);
    return rec;
}

static void test_record(void **state)
{
    (void)state;
    char t[512];
    pf_err e;
    snprintf(t, sizeof t, "<loc0100><loc0100><loc0900><loc0800>%s cat ; <loc0200><loc0200><loc0100><loc0900>%s bad",
             SEGS, SEGS);
    member mem[40];
    size_t nm = decoder_members(mem, 4, NULL);
    buf zb = zip(mem, nm, "deflate");
    pf_npz z;
    pf_seg_decoder *d;
    assert_int_equal(pf_npz_read_memory(zb.p, zb.n, "t.npz", NULL, &z, &e), 0);
    assert_int_equal(pf_seg_decoder_from_npz(&z, "t.npz", &d, &e), 0);
    json_t *objs = pf_seg_objects_json(t, strlen(t), 50, 40, d, NULL, &e);
    assert_non_null(objs);
    assert_int_equal(json_array_size(objs), 1);   /* the second box is out of order */
    char *made = json_dumps(objs, JSON_COMPACT);

    pf_msg m;
    pf_msg_init(&m, PF_MSG_RESULT);
    m.id = 3;
    m.key = "k";
    m.path = "a.png";
    m.has_task = 1;
    m.task.prompt = "segment cat";
    m.text = t;
    m.text_len = strlen(t);
    m.width = 50;
    m.height = 40;
    m.objects = made;
    m.objects_len = strlen(made);
    json_t *rec = through_wire(&m);
    assert_true(json_equal(json_object_get(rec, "objects"), objs));
    assert_null(json_object_get(rec, "note"));
    json_decref(rec);
    /* No decoder on the worker: label and box, mask null, and a note saying why. */
    m.objects = NULL;
    m.objects_len = 0;
    rec = through_wire(&m);
    json_t *o0 = json_array_get(json_object_get(rec, "objects"), 0);
    assert_string_equal(json_string_value(json_object_get(o0, "label")), "cat");
    assert_true(json_is_null(json_object_get(o0, "mask")));
    assert_true(json_equal(json_object_get(o0, "loc"), json_object_get(json_array_get(objs, 0), "loc")));
    assert_string_equal(json_string_value(json_object_get(rec, "note")), PF_SEG_NO_DECODER_NOTE);
    json_decref(rec);
    /* Garbage from a worker: no crash, objects without masks, a note. */
    m.objects = "{\"not\": \"an array\"}";
    m.objects_len = strlen(m.objects);
    rec = through_wire(&m);
    assert_int_equal(json_array_size(json_object_get(rec, "objects")), 1);
    assert_non_null(strstr(json_string_value(json_object_get(rec, "note")), "not a JSON array"));
    json_decref(rec);
    /* Other prompts get no objects. */
    m.task.prompt = "detect cat";
    m.objects = NULL;
    rec = through_wire(&m);
    assert_null(json_object_get(rec, "objects"));
    assert_non_null(json_object_get(rec, "boxes"));
    json_decref(rec);
    free(made);
    json_decref(objs);
    pf_seg_decoder_free(d);
    pf_npz_free(&z);
    free(zb.p);
    free_members(mem, nm);
}

/* ---------- resize ---------- */

static void test_resize(void **state)
{
    (void)state;
    float in[64 * 64], out[200 * 3];
    pf_err e;
    for (int i = 0; i < 64 * 64; i++)
        in[i] = 0.25f;
    /* A constant stays constant (weights sum to 1) up- and downscaling, 1-px wide included. */
    int sizes[][2] = {{200, 3}, {1, 64}, {64, 1}, {1, 1}, {3, 200}};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        assert_int_equal(pf_seg_resize_bilinear(in, 64, 64, out, sizes[s][0], sizes[s][1], &e), 0);
        for (int i = 0; i < sizes[s][0] * sizes[s][1]; i++)
            assert_true(fabsf(out[i] - 0.25f) < 1e-6f);
    }
    /* Same size: a copy. */
    float big[64 * 64];
    for (int i = 0; i < 64 * 64; i++)
        in[i] = (float)i;
    assert_int_equal(pf_seg_resize_bilinear(in, 64, 64, big, 64, 64, &e), 0);
    assert_memory_equal(big, in, sizeof in);
    assert_int_equal(pf_seg_resize_bilinear(in, 64, 64, big, 0, 64, &e), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_npy),    cmocka_unit_test(test_npz_and_decoder), cmocka_unit_test(test_rle),
        cmocka_unit_test(test_answer), cmocka_unit_test(test_objects_json),    cmocka_unit_test(test_resize),
        cmocka_unit_test(test_record),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
