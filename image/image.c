/* image.c - the image preprocessor's entry points: file access, format dispatch, limits, streaming resize.
 * See image.h for the semantics; the pieces live in image_sniff.c (formats), image_vips.c (libvips),
 * image_gif.c / image_bmp.c / image_pnm.c (our readers), image_colour.c (convert("RGB")),
 * image_orient.c (EXIF autorotate) and resample*.c (Pillow's bicubic resize).
 */
#include "image/image.h"

#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <vips/vips.h>

#include "base/file.h"
#include "base/log.h"
#include "image/image_internal.h"
#include "image/resample.h"

/* ---- init ---------------------------------------------------------------------------------------- */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_init_rc = -1;
static char g_init_msg[PF_ERR_MAX];

static void vips_log_to_debug(const gchar *domain, GLogLevelFlags level, const gchar *msg, gpointer data)
{
    (void)domain;
    (void)level;
    (void)data;
    /* libvips and the codec libraries report per-file problems as warnings; we report them as errors
     * with the file name instead, so keep stderr to one line per failed file. */
    pf_debug("image", "libvips: %s", msg);
    pf_img_vips_note_warning(msg);
}

static void do_init(void)
{
    if (VIPS_INIT("paliflow")) {
        char msg[512];
        pf_img_vips_error(msg, sizeof msg);
        snprintf(g_init_msg, sizeof g_init_msg, "libvips failed to start: %s", msg);
        return;
    }
    /* We load from caller-owned buffers: an operation cache keyed on buffer addresses could hand one
     * thread's image to another, and it would hold memory. Off. */
    vips_cache_set_max(0);
    vips_cache_set_max_mem(0);
    vips_cache_set_max_files(0);
    /* Decoding runs in the calling thread (sequential access, region by region); no worker pool. */
    vips_concurrency_set(1);
    /* libvips (calloc) and the codecs allocate and free buffers of 100 KB to a few MB for every image.
     * With glibc's defaults those are fresh mappings or trimmed heap, so every image pays a page fault
     * per 4 KB touched: measured 30-45% of the time on the golden corpus. Keep them in the heap: buffers
     * below 32 MB come from the arenas, and up to 64 MB of free heap is kept instead of returned to the
     * kernel (memory stays bounded by the largest image in flight per thread). */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    /* Only the loaders we call by name may run; everything else (SVG, PDF, ImageMagick, ...) is blocked,
     * untrusted ones twice over. */
    vips_block_untrusted_set(TRUE);
    vips_operation_block_set("VipsForeignLoad", TRUE);
    /* libvips 8.14 flags its JPEG XL loader untrusted (libjxl was young); it is allowed here by name, as
     * the others, behind the same guards: sniffed content, the pixel limit from the header before any
     * pixel is decoded, fail_on errors, and fuzz/fuzz_image.c. Only the buffer loaders run. */
    static const char *const allow[] = {"VipsForeignLoadJpeg", "VipsForeignLoadPng", "VipsForeignLoadWebp",
                                        "VipsForeignLoadTiff", "VipsForeignLoadHeif", "VipsForeignLoadJxlBuffer"};
    for (size_t i = 0; i < sizeof allow / sizeof allow[0]; i++)
        vips_operation_block_set(allow[i], FALSE);
    g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO | G_LOG_LEVEL_DEBUG,
                      vips_log_to_debug, NULL);
    g_init_rc = 0;
}

int pf_img_init(pf_err *err)
{
    pthread_once(&g_once, do_init);
    if (g_init_rc)
        return pf_errf(err, "%s", g_init_msg);
    return 0;
}

const char *pf_img_errkind_name(pf_img_errkind k)
{
    switch (k) {
    case PF_IMG_OK: return "ok";
    case PF_IMG_EMPTY: return "empty";
    case PF_IMG_NOT_A_FILE: return "not-a-file";
    case PF_IMG_TRUNCATED: return "truncated";
    case PF_IMG_CORRUPT: return "corrupt";
    case PF_IMG_UNSUPPORTED: return "unsupported-format";
    case PF_IMG_TOO_MANY_PIXELS: return "too-many-pixels";
    case PF_IMG_IO: return "io";
    case PF_IMG_INTERNAL: return "internal";
    }
    return "internal";
}

void pf_img_free(pf_img *img)
{
    if (!img)
        return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}

/* ---- decode + resize ----------------------------------------------------------------------------- */

static int open_decoder(pf_img_format f, const uint8_t *buf, size_t len, pf_img_dec *d, pf_img_errkind *kind,
                        pf_err *err)
{
    switch (f) {
    case PF_FMT_PNG:
        if (pf_img_png_check(buf, len, kind, err))
            return -1;
        return pf_img_vips_open(f, buf, len, d, kind, err);
    case PF_FMT_JPEG:
    case PF_FMT_WEBP:
    case PF_FMT_TIFF:
    case PF_FMT_HEIF:
    case PF_FMT_AVIF:
    case PF_FMT_JXL:
        return pf_img_vips_open(f, buf, len, d, kind, err);
    case PF_FMT_GIF:
        return pf_img_gif_open(buf, len, d, kind, err);
    case PF_FMT_BMP:
        return pf_img_bmp_open(buf, len, d, kind, err);
    case PF_FMT_PNM:
        return pf_img_pnm_open(buf, len, d, kind, err);
    case PF_FMT_SVG:
    case PF_FMT_PDF:
        *kind = PF_IMG_UNSUPPORTED;
        return pf_errf(err, "%s documents are not accepted (only raster images: JPEG, PNG, GIF, WebP, TIFF, BMP, "
                            "PNM, HEIF/HEIC, AVIF, JPEG XL)", pf_img_format_name(f));
    case PF_FMT_UNKNOWN:
        break;
    }
    *kind = PF_IMG_UNSUPPORTED;
    return pf_errf(err, "not an image in a supported format (JPEG, PNG, GIF, WebP, TIFF, BMP, PNM, HEIF/HEIC, "
                        "AVIF, JPEG XL)");
}

/* Pull every strip from the decoder and hand each row to `row(ctx, y, data)`. */
typedef void (*row_fn)(void *ctx, int y, const uint8_t *row);

static int pump_rows(pf_img_dec *d, row_fn fn, void *ctx, pf_img_errkind *kind, pf_err *err)
{
    int y = 0;
    while (y < d->height) {
        const uint8_t *rows = NULL;
        size_t stride = 0;
        int n = 0;
        if (d->next(d, &rows, &stride, &n, kind, err))
            return -1;
        if (n <= 0 || n > d->height - y) {
            *kind = PF_IMG_INTERNAL;
            return pf_errf(err, "decoder delivered %d rows at row %d of %d", n, y, d->height);
        }
        for (int i = 0; i < n; i++)
            fn(ctx, y + i, rows + (size_t)i * stride);
        y += n;
    }
    return 0;
}

static void push_to_resampler(void *ctx, int y, const uint8_t *row)
{
    (void)y;
    pf_resampler_push(ctx, row);
}

typedef struct full_image {
    uint8_t *px;
    size_t stride;
} full_image;

static void store_row(void *ctx, int y, const uint8_t *row)
{
    full_image *f = ctx;
    memcpy(f->px + (size_t)y * f->stride, row, f->stride);
}

/* The orientation to apply. Pillow 9.4 ignores EXIF orientation on open, except for TIFF: its
 * TiffImagePlugin.load_end transposes by the Orientation tag (274) on every load. ImageOps.exif_transpose
 * (autorotate) then applies the orientation once more, so a TIFF gets it twice: identity for the flips,
 * 180 degrees for the quarter turns (6, 8). Mirrored exactly, since the reference is Pillow. */
static int effective_orientation(pf_img_format f, int stored, int autorotate)
{
    int o = stored >= 2 && stored <= 8 ? stored : 1;
    if (f != PF_FMT_TIFF)
        return autorotate ? o : 1;
    if (!autorotate)
        return o;
    return o == 6 || o == 8 ? 3 : 1; /* o applied twice */
}

/* Rows in flight while streaming: libvips' sequential pipeline keeps a few hundred rows of the decoded
 * layout (measured: a 13000-pixel-wide PNG streams in ~21 MB, 8 bytes a pixel in ~55 MB, i.e. about 530
 * rows), plus our strips and the resampler's rows. Charged for every image, at the widest layout. */
#define PF_IMG_STREAM_ROWS 640
#define PF_IMG_STREAM_BPP 8
#define PF_IMG_FIXED_BYTES ((uint64_t)4 << 20) /* output image, resampler tables, libvips objects */

uint64_t pf_img_decode_estimate(uint64_t len, int width, int height, uint64_t frame_bytes, int oriented)
{
    uint64_t w = width > 0 ? (uint64_t)width : 0, h = height > 0 ? (uint64_t)height : 0;
    uint64_t need = len + frame_bytes + PF_IMG_FIXED_BYTES + w * PF_IMG_STREAM_BPP * PF_IMG_STREAM_ROWS;
    if (oriented)
        need += w * h * 3; /* the stored image, kept whole to read it in another order */
    return need;
}

static int decode_resize(const uint8_t *buf, size_t len, const pf_img_params *opts, pf_img *out,
                         pf_img_errkind *kind, pf_err *err)
{
    pf_img_dec d;
    pf_img_format fmt = pf_img_sniff(buf, len);
    if (open_decoder(fmt, buf, len, &d, kind, err))
        return -1;
    int rc = -1;
    uint8_t *full = NULL, *row = NULL;
    pf_resampler rs;
    int rs_live = 0;
    uint64_t reserved = 0;
    uint64_t limit = opts->max_pixels ? opts->max_pixels : PF_IMG_DEFAULT_MAX_PIXELS;
    uint64_t pixels = (uint64_t)d.width * (uint64_t)d.height;
    if (pixels > limit) {
        *kind = PF_IMG_TOO_MANY_PIXELS;
        pf_errf(err, "%dx%d = %llu pixels is more than the limit of %llu (decompression bomb? --max-pixels)", d.width, d.height,
                (unsigned long long)pixels, (unsigned long long)limit);
        goto done;
    }
    int o = effective_orientation(fmt, d.orientation, opts->autorotate);
    uint64_t need = pf_img_decode_estimate(len, d.width, d.height, d.frame_bytes, o != 1);
    if (pf_img_budget_acquire(opts->budget, need)) {
        *kind = PF_IMG_TOO_MANY_PIXELS;
        pf_errf(err, "%dx%d image needs about %llu MiB to decode%s, more than the decode memory budget of %llu MiB "
                     "(--decode-memory-mb)", d.width, d.height, (unsigned long long)(need >> 20),
                d.frame_bytes ? " (this layout is decoded whole, not row by row)" : "",
                (unsigned long long)(pf_img_budget_total(opts->budget) >> 20));
        goto done;
    }
    reserved = need;
    int ow, oh, S = opts->size;
    pf_img_oriented_size(o, d.width, d.height, &ow, &oh);
    out->rgb = malloc((size_t)S * (size_t)S * 3);
    if (!out->rgb) {
        *kind = PF_IMG_INTERNAL;
        pf_errf(err, "out of memory for the %dx%d output", S, S);
        goto done;
    }
    if (pf_resampler_init(&rs, ow, oh, S, S, out->rgb, err)) {
        *kind = PF_IMG_INTERNAL;
        goto done;
    }
    rs_live = 1;
    if (o == 1) {
        if (pump_rows(&d, push_to_resampler, &rs, kind, err))
            goto done;
    } else {
        /* a rotation needs the whole stored image (bounded by the pixel limit), never a rotated copy */
        full_image f = {malloc((size_t)pixels * 3), (size_t)d.width * 3};
        full = f.px;
        row = malloc((size_t)ow * 3);
        if (!full || !row) {
            *kind = PF_IMG_INTERNAL;
            pf_errf(err, "out of memory for a %dx%d image", d.width, d.height);
            goto done;
        }
        if (pump_rows(&d, store_row, &f, kind, err))
            goto done;
        for (int y = 0; y < oh; y++) {
            pf_img_oriented_row(o, full, d.width, d.height, y, row);
            pf_resampler_push(&rs, row);
        }
    }
    if (!pf_resampler_finished(&rs)) {
        *kind = PF_IMG_INTERNAL;
        pf_errf(err, "resampler did not complete");
        goto done;
    }
    out->size = S;
    out->orig_width = ow;
    out->orig_height = oh;
    rc = 0;
done:
    if (rs_live)
        pf_resampler_free(&rs);
    free(full);
    free(row);
    d.close(&d);
    pf_img_budget_release(opts->budget, reserved);
    if (rc) {
        free(out->rgb);
        out->rgb = NULL;
    }
    return rc;
}

int pf_img_load_buffer(const void *buf, size_t len, const char *name, const pf_img_params *opts, pf_img *out,
                       pf_img_errkind *kind, pf_err *err)
{
    pf_img_errkind k_ignored;
    if (!kind)
        kind = &k_ignored;
    *kind = PF_IMG_OK;
    memset(out, 0, sizeof *out);
    if (!name)
        name = "<buffer>";
    if (pf_img_init(err)) {
        *kind = PF_IMG_INTERNAL;
        return pf_err_prefix(err, "%s", name);
    }
    if (!opts || opts->size < 1 || opts->size > PF_IMG_MAX_SIZE) {
        *kind = PF_IMG_INTERNAL;
        return pf_errf(err, "%s: image size must be 1..%d, got %d", name, PF_IMG_MAX_SIZE, opts ? opts->size : 0);
    }
    if (len == 0 || !buf) {
        *kind = PF_IMG_EMPTY;
        return pf_errf(err, "%s: empty (0 bytes)", name);
    }
    if (decode_resize(buf, len, opts, out, kind, err))
        return pf_err_prefix(err, "%s", name);
    return 0;
}

int pf_img_load_file(const char *path, const pf_img_params *opts, pf_img *out, pf_img_errkind *kind, pf_err *err)
{
    pf_img_errkind k_ignored;
    if (!kind)
        kind = &k_ignored;
    *kind = PF_IMG_OK;
    memset(out, 0, sizeof *out);
    char *data = NULL;
    size_t len = 0;
    pf_file_fault fault;
    /* Read, never mapped: a mapped file truncated under us kills the process with SIGBUS. pf_read_file_safe
     * opens without blocking (a FIFO waits for no writer) and refuses anything but a regular file. */
    if (pf_read_file_safe(path, PF_IMG_MAX_FILE_BYTES, &data, &len, &fault, err)) {
        *kind = pf_img_file_fault_kind(fault);
        return -1;
    }
    int rc = pf_img_load_buffer(data, len, path, opts, out, kind, err);
    free(data);
    return rc;
}

pf_img_errkind pf_img_file_fault_kind(pf_file_fault fault)
{
    switch (fault) {
    case PF_FILE_OK: return PF_IMG_OK;
    case PF_FILE_NOT_REGULAR: return PF_IMG_NOT_A_FILE;
    case PF_FILE_TOO_BIG: return PF_IMG_TOO_MANY_PIXELS;
    case PF_FILE_NO_MEMORY: return PF_IMG_INTERNAL;
    case PF_FILE_IO:
    case PF_FILE_CHANGED: break;
    }
    return PF_IMG_IO;
}
