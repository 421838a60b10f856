/* image_vips.c - decoding JPEG, PNG, WebP, TIFF, HEIF/AVIF and JPEG XL with libvips, strip by strip in the
 * calling thread.
 *
 * The loader is chosen by our own sniffing (image_sniff.c) and called by name, with sequential access
 * (libvips then decodes on demand as we pull rows: no full-resolution copy) and `fail_on` so damaged data
 * is an error:
 *   - JPEG: VIPS_FAIL_ON_WARNING. libjpeg reports entropy-data damage ("Corrupt JPEG data: premature end
 *     of data segment", "bad Huffman code", ...) only as a warning and fills with grey; Pillow fails on
 *     such files ("broken data stream"), so must we. libjpeg also warns about harmless things Pillow
 *     accepts (stray bytes before a marker, odd SOS parameters, unknown JFIF revision): when every
 *     warning is of that kind the file is decoded again with VIPS_FAIL_ON_TRUNCATED (jpeg_benign_only).
 *   - PNG, WebP, TIFF: VIPS_FAIL_ON_ERROR. Their libraries warn about harmless things (unknown TIFF
 *     tags, sRGB profile quirks) that Pillow accepts, while real damage is an error anyway.
 *   - HEIF/AVIF (libheif, Debian's libvips42 module vips-heif.so) and JPEG XL (libjxl, vips-jxl.so):
 *     VIPS_FAIL_ON_ERROR. Both decode a whole frame at the first strip (no row streaming in these
 *     codecs), which the pixel limit, checked from the header before that, bounds. libheif keeps its own
 *     limits on (heifload's "unlimited" stays off). The HEIF primary image is decoded with its irot/imir
 *     transforms applied by libheif; EXIF orientation inside HEIF is ignored, as the format requires.
 * Every other libvips loader is blocked in pf_img_init (untrusted ones included).
 */
#include "image/image_internal.h"

#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

typedef struct vips_dec {
    VipsImage *im;
    VipsRegion *reg;
    pf_img_format fmt;
    pf_img_layout layout;
    int bpp; /* bytes per pixel of the decoded layout */
    int y, strip;
    int lenient;   /* JPEG reloaded with fail_on=truncated after harmless warnings */
    uint8_t *conv; /* strip * width * 3, for layouts other than RGB8 */
    const uint8_t *buf;
    size_t len;
} vips_dec;

static _Thread_local char tl_warning[256];

void pf_img_vips_note_warning(const char *msg)
{
    /* keep the first line of the latest warning, skipping libvips' own summaries */
    if (!msg || strncmp(msg, "error in tile", 13) == 0 || strstr(msg, "warnings"))
        return;
    size_t n = strcspn(msg, "\n");
    if (n >= sizeof tl_warning)
        n = sizeof tl_warning - 1;
    memcpy(tl_warning, msg, n);
    tl_warning[n] = '\0';
}

void pf_img_vips_clear_warning(void)
{
    tl_warning[0] = '\0';
}

void pf_img_vips_error(char *dst, size_t cap)
{
    char *msg = vips_error_buffer_copy(); /* copies and clears (libvips' buffer is global, locked) */
    if (!cap)
        return;
    dst[0] = '\0';
    size_t used = 0;
    /* every line, joined with "; " so the reason stays one line */
    for (const char *p = msg ? msg : ""; *p && used + 1 < cap;) {
        size_t n = strcspn(p, "\n");
        if (n) {
            int w = snprintf(dst + used, cap - used, "%s%.*s", used ? "; " : "", (int)n, p);
            used = w < 0 ? used : used + (size_t)w < cap ? used + (size_t)w : cap - 1;
        }
        p += n;
        while (*p == '\n')
            p++;
    }
    g_free(msg);
    if (tl_warning[0] && used + 4 < cap)
        snprintf(dst + used, cap - used, used ? " (%s)" : "%s", tl_warning);
    if (!dst[0])
        snprintf(dst, cap, "libvips gave no reason");
}

/* Are all of libjpeg's complaints ones Pillow shrugs off (its decoder ignores warnings and only fails
 * on fatal errors or missing data)? Damage to the entropy-coded data is never benign here. */
static int jpeg_benign_only(const char *msg)
{
    static const char *const damage[] = {"premature end", "Premature end", "bad Huffman", "bad arithmetic",
                                         "found marker", "Huffman", "truncat"};
    static const char *const harmless[] = {"extraneous bytes before marker", "unknown JFIF revision",
                                           "Invalid SOS parameters", "Unknown Adobe color transform",
                                           "Inconsistent progression sequence", "bad ICC marker"};
    for (size_t i = 0; i < sizeof damage / sizeof damage[0]; i++)
        if (strstr(msg, damage[i]))
            return 0;
    for (size_t i = 0; i < sizeof harmless / sizeof harmless[0]; i++)
        if (strstr(msg, harmless[i]))
            return 1;
    return 0;
}

/* Decide truncated vs corrupt for a failed libvips call. */
static pf_img_errkind classify(const vips_dec *v, const char *msg)
{
    if (pf_img_looks_truncated(v->fmt, v->buf, v->len))
        return PF_IMG_TRUNCATED;
    if (v->fmt == PF_FMT_JPEG || v->fmt == PF_FMT_PNG)
        return PF_IMG_CORRUPT; /* structurally complete (EOI / IEND present): damaged, not short */
    static const char *const words[] = {"Read error", "read error", "EOF", "truncated", "Truncated",
                                        "end of file", "Premature end", "not enough data", "Not enough",
                                        "bad seek", "End of data", "end of data"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strstr(msg, words[i]))
            return PF_IMG_TRUNCATED;
    return PF_IMG_CORRUPT;
}

static pf_img_layout layout_of(VipsImage *im, char *why, size_t cap)
{
    int bands = im->Bands;
    VipsInterpretation t = im->Type;
    int cmyk = t == VIPS_INTERPRETATION_CMYK;
    if (im->Coding != VIPS_CODING_NONE) {
        snprintf(why, cap, "coded pixels (%s) are not supported", vips_enum_nick(VIPS_TYPE_CODING, im->Coding));
        return PF_LAYOUT_NONE;
    }
    switch (t) {
    case VIPS_INTERPRETATION_LAB:
    case VIPS_INTERPRETATION_LABS:
    case VIPS_INTERPRETATION_LCH:
    case VIPS_INTERPRETATION_CMC:
    case VIPS_INTERPRETATION_XYZ:
    case VIPS_INTERPRETATION_YXY:
    case VIPS_INTERPRETATION_HSV:
    case VIPS_INTERPRETATION_scRGB:
    case VIPS_INTERPRETATION_FOURIER:
    case VIPS_INTERPRETATION_HISTOGRAM:
    case VIPS_INTERPRETATION_MATRIX:
        snprintf(why, cap, "colour space %s is not supported", vips_enum_nick(VIPS_TYPE_INTERPRETATION, t));
        return PF_LAYOUT_NONE;
    default:
        break;
    }
    if (im->BandFmt == VIPS_FORMAT_UCHAR) {
        switch (bands) {
        case 1: return PF_LAYOUT_G8;
        case 2: return PF_LAYOUT_GA8;
        case 3: return PF_LAYOUT_RGB8;
        case 4: return cmyk ? PF_LAYOUT_CMYK8 : PF_LAYOUT_RGBA8;
        case 5:
            if (cmyk)
                return PF_LAYOUT_CMYKA8;
            break;
        default: break;
        }
    } else if (im->BandFmt == VIPS_FORMAT_USHORT) {
        switch (bands) {
        case 1: return PF_LAYOUT_G16;
        case 2: return PF_LAYOUT_GA16;
        case 3: return PF_LAYOUT_RGB16;
        case 4: return cmyk ? PF_LAYOUT_CMYK16 : PF_LAYOUT_RGBA16;
        case 5:
            if (cmyk)
                return PF_LAYOUT_CMYKA16;
            break;
        default: break;
        }
    }
    snprintf(why, cap, "%d-band %s samples (%s) are not supported", bands,
             vips_enum_nick(VIPS_TYPE_BAND_FORMAT, im->BandFmt), vips_enum_nick(VIPS_TYPE_INTERPRETATION, t));
    return PF_LAYOUT_NONE;
}

/* Run the loader (header only: pixels are decoded as regions are prepared) and make our region. */
static int vips_load(vips_dec *v, int lenient, char *msg, size_t cap)
{
    if (v->reg)
        g_object_unref(v->reg);
    if (v->im)
        g_object_unref(v->im);
    v->reg = NULL;
    v->im = NULL;
    v->lenient = lenient;
    pf_img_vips_clear_warning();
    /* libvips' error buffer is process-wide: drop what earlier (lenient, warning-only) decodes left in it.
     * With several threads a message of another file can still slip into ours; the verdict does not
     * depend on it except that foreign "damage" text makes a lenient retry less likely (safe side). */
    vips_error_clear();
    void *b = (void *)v->buf; /* libvips' buffer loaders take void * but only read */
    VipsAccess seq = VIPS_ACCESS_SEQUENTIAL;
    int rc = -1;
    switch (v->fmt) {
    case PF_FMT_JPEG:
        rc = vips_jpegload_buffer(b, v->len, &v->im, "access", seq, "fail_on",
                                  lenient ? VIPS_FAIL_ON_TRUNCATED : VIPS_FAIL_ON_WARNING, NULL);
        break;
    case PF_FMT_PNG:
        rc = vips_pngload_buffer(b, v->len, &v->im, "access", seq, "fail_on", VIPS_FAIL_ON_ERROR, NULL);
        break;
    case PF_FMT_WEBP:
        rc = vips_webpload_buffer(b, v->len, &v->im, "access", seq, "fail_on", VIPS_FAIL_ON_ERROR, NULL);
        break;
    case PF_FMT_TIFF:
        rc = vips_tiffload_buffer(b, v->len, &v->im, "access", seq, "fail_on", VIPS_FAIL_ON_ERROR, NULL);
        break;
    case PF_FMT_HEIF:
    case PF_FMT_AVIF:
        rc = vips_heifload_buffer(b, v->len, &v->im, "access", seq, "fail_on", VIPS_FAIL_ON_ERROR, NULL);
        break;
    case PF_FMT_JXL:
        rc = vips_jxlload_buffer(b, v->len, &v->im, "access", seq, "fail_on", VIPS_FAIL_ON_ERROR, NULL);
        break;
    default:
        snprintf(msg, cap, "no libvips loader for %s", pf_img_format_name(v->fmt));
        return -1;
    }
    if (rc == 0 && !(v->reg = vips_region_new(v->im)))
        rc = -1;
    if (rc)
        pf_img_vips_error(msg, cap);
    return rc;
}

/* Prepare rows [y, y + h) of the current image. */
static int prepare(vips_dec *v, int y, int h, int width)
{
    VipsRect r = {0, y, width, h};
    return vips_region_prepare(v->reg, &r);
}

/* After harmless libjpeg warnings: load again leniently and skip the rows already delivered. */
static int jpeg_reload_lenient(vips_dec *v, int width, char *msg, size_t cap)
{
    if (vips_load(v, 1, msg, cap))
        return -1;
    for (int y = 0; y < v->y; y += v->strip) {
        int h = v->y - y < v->strip ? v->y - y : v->strip;
        if (prepare(v, y, h, width)) {
            pf_img_vips_error(msg, cap);
            return -1;
        }
    }
    return 0;
}

static int vips_next(pf_img_dec *d, const uint8_t **rows, size_t *stride, int *n, pf_img_errkind *kind,
                     pf_err *err)
{
    vips_dec *v = d->state;
    *n = 0;
    if (v->y >= d->height)
        return 0;
    int h = d->height - v->y < v->strip ? d->height - v->y : v->strip;
    if (prepare(v, v->y, h, d->width)) {
        char msg[512];
        pf_img_vips_error(msg, sizeof msg);
        int retried = 0;
        if (v->fmt == PF_FMT_JPEG && !v->lenient && jpeg_benign_only(msg)) {
            retried = 1;
            if (jpeg_reload_lenient(v, d->width, msg, sizeof msg) == 0) {
                if (prepare(v, v->y, h, d->width) == 0)
                    goto ok;
                pf_img_vips_error(msg, sizeof msg);
            }
        }
        *kind = classify(v, msg);
        return pf_errf(err, "%s decoding failed at row %d: %s%s", pf_img_format_name(v->fmt), v->y, msg,
                       retried ? " (after a lenient retry)" : "");
    }
ok:;
    const uint8_t *p = (const uint8_t *)VIPS_REGION_ADDR(v->reg, 0, v->y);
    size_t lskip = (size_t)VIPS_REGION_LSKIP(v->reg);
    if (v->layout == PF_LAYOUT_RGB8) {
        *rows = p;
        *stride = lskip;
    } else {
        size_t out_stride = (size_t)d->width * 3;
        for (int i = 0; i < h; i++)
            pf_img_convert_row(v->layout, p + (size_t)i * lskip, d->width, v->conv + (size_t)i * out_stride);
        *rows = v->conv;
        *stride = out_stride;
    }
    *n = h;
    v->y += h;
    return 0;
}

static void vips_close(pf_img_dec *d)
{
    vips_dec *v = d->state;
    if (!v)
        return;
    if (v->reg)
        g_object_unref(v->reg);
    if (v->im)
        g_object_unref(v->im);
    free(v->conv);
    free(v);
    d->state = NULL;
}

/* The memory a loader holds for the whole image when it cannot decode row by row: interlaced PNG (libpng /
 * libspng decode the whole image, at the stored depth: a 169-megapixel 16-bit RGBA PNG is 1.35 GB however small
 * the file), progressive JPEG (libjpeg keeps every DCT coefficient, 2 bytes a sample), WebP (libvips decodes a
 * whole frame) and TIFF (a strip may be the whole image; the tags are not visible here, so assume so). */
static uint64_t whole_frame_bytes(const vips_dec *v, VipsImage *im)
{
    uint64_t px = (uint64_t)im->Xsize * (uint64_t)im->Ysize;
    int interlaced = 0;
    if (vips_image_get_typeof(im, "interlaced") && vips_image_get_int(im, "interlaced", &interlaced))
        interlaced = 0;
    switch (v->fmt) {
    case PF_FMT_PNG: return interlaced ? px * (uint64_t)v->bpp : 0;
    case PF_FMT_JPEG: return interlaced ? px * (uint64_t)im->Bands * 2 : 0;
    case PF_FMT_WEBP: return px * 4;
    case PF_FMT_TIFF: return px * (uint64_t)v->bpp;
    default: return 0;
    }
}

int pf_img_vips_open(pf_img_format f, const uint8_t *buf, size_t len, pf_img_dec *d, pf_img_errkind *kind,
                     pf_err *err)
{
    memset(d, 0, sizeof *d);
    vips_dec *v = calloc(1, sizeof *v);
    if (!v) {
        *kind = PF_IMG_INTERNAL;
        return pf_errf(err, "out of memory");
    }
    v->fmt = f;
    v->buf = buf;
    v->len = len;
    d->state = v;
    d->next = vips_next;
    d->close = vips_close;
    char msg[512];
    int rc = vips_load(v, 0, msg, sizeof msg);
    if (rc && f == PF_FMT_JPEG && jpeg_benign_only(msg))
        rc = vips_load(v, 1, msg, sizeof msg);
    if (rc) {
        *kind = classify(v, msg);
        vips_close(d);
        return pf_errf(err, "invalid %s header: %s", pf_img_format_name(f), msg);
    }
    VipsImage *im = v->im;
    d->width = im->Xsize;
    d->height = im->Ysize;
    /* HEIF: libheif has applied the container's rotation and mirroring; an EXIF orientation in the file
     * must be ignored (HEIF/MIAF), and applying it again would turn the image twice */
    d->orientation = f == PF_FMT_HEIF || f == PF_FMT_AVIF ? 1 : vips_image_get_orientation(im);
    if (d->width < 1 || d->height < 1) {
        vips_close(d);
        *kind = PF_IMG_CORRUPT;
        return pf_errf(err, "%s image has no pixels", pf_img_format_name(f));
    }
    char why[256];
    v->layout = layout_of(im, why, sizeof why);
    if (v->layout == PF_LAYOUT_NONE) {
        vips_close(d);
        *kind = PF_IMG_UNSUPPORTED;
        return pf_errf(err, "%s: %s", pf_img_format_name(f), why);
    }
    v->bpp = pf_img_layout_bpp(v->layout);
    d->frame_bytes = whole_frame_bytes(v, im);
    /* Strips of at most ~96 KB / 64 rows: libvips allocates (calloc) fresh region buffers for every strip
     * of a sequential pipeline; kept small they recycle heap memory instead of becoming fresh mappings
     * (see also the malloc tuning in pf_img_init). Larger strips measured no faster. */
    size_t row_bytes = (size_t)d->width * (size_t)(v->bpp > 3 ? v->bpp : 3);
    size_t strip = ((size_t)96 << 10) / row_bytes;
    v->strip = strip < 1 ? 1 : strip > 64 ? 64 : (int)strip;
    if (v->layout != PF_LAYOUT_RGB8) {
        v->conv = malloc((size_t)v->strip * (size_t)d->width * 3);
        if (!v->conv) {
            vips_close(d);
            *kind = PF_IMG_INTERNAL;
            return pf_errf(err, "out of memory for a %d-pixel-wide strip", d->width);
        }
    }
    return 0;
}
