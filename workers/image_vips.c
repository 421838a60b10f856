/* image_vips.c - decoding JPEG, PNG, WebP and TIFF with libvips, strip by strip in the calling thread.
 *
 * The loader is chosen by our own sniffing (image_sniff.c) and called by name, with sequential access
 * (libvips then decodes on demand as we pull rows: no full-resolution copy) and `fail_on` so damaged data
 * is an error:
 *   - JPEG: VIPS_FAIL_ON_WARNING. libjpeg reports entropy-data damage ("Corrupt JPEG data: ...") only as
 *     a warning and fills with grey; Pillow fails on such files ("broken data stream"), so must we. The
 *     price: a JPEG with a harmless libjpeg warning (e.g. stray bytes before a marker) is refused too.
 *   - PNG, WebP, TIFF: VIPS_FAIL_ON_ERROR. Their libraries warn about harmless things (unknown TIFF
 *     tags, sRGB profile quirks) that Pillow accepts, while real damage is an error anyway.
 * Every other libvips loader is blocked in pf_img_init (untrusted ones included).
 */
#include "workers/image_internal.h"

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
    if (msg) {
        /* first non-empty line, without libvips' class prefix noise */
        const char *p = msg;
        while (*p == '\n')
            p++;
        size_t n = strcspn(p, "\n");
        if (n >= cap)
            n = cap - 1;
        memcpy(dst, p, n);
        dst[n] = '\0';
        g_free(msg);
    }
    if (tl_warning[0]) {
        size_t used = strlen(dst);
        snprintf(dst + used, cap - used, "%s%s", used ? " (" : "", tl_warning);
        if (used && strlen(dst) + 1 < cap)
            strcat(dst, ")");
    }
    if (!dst[0])
        snprintf(dst, cap, "libvips gave no reason");
}

/* Decide truncated vs corrupt for a failed libvips call. */
static pf_img_errkind classify(const vips_dec *v, const char *msg)
{
    if (pf_img_looks_truncated(v->fmt, v->buf, v->len))
        return PF_IMG_TRUNCATED;
    if (v->fmt == PF_FMT_JPEG)
        return PF_IMG_CORRUPT; /* "Premature end of data segment" = damaged entropy data, not a short file */
    static const char *const words[] = {"Read error", "read error", "EOF", "truncated", "Truncated",
                                        "end of file", "Premature end", "not enough data", "Not enough"};
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

static int vips_next(pf_img_dec *d, const uint8_t **rows, size_t *stride, int *n, pf_img_errkind *kind,
                     pf_err *err)
{
    vips_dec *v = d->state;
    *n = 0;
    if (v->y >= d->height)
        return 0;
    int h = d->height - v->y < v->strip ? d->height - v->y : v->strip;
    VipsRect r = {0, v->y, d->width, h};
    if (vips_region_prepare(v->reg, &r)) {
        char msg[512];
        pf_img_vips_error(msg, sizeof msg);
        *kind = classify(v, msg);
        return pf_errf(err, "%s decoding failed at row %d: %s", pf_img_format_name(v->fmt), v->y, msg);
    }
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
    void *b = (void *)buf; /* libvips' buffer loaders take void * but only read */
    pf_img_vips_clear_warning();
    int rc = -1;
    switch (f) {
    case PF_FMT_JPEG:
        rc = vips_jpegload_buffer(b, len, &v->im, "access", VIPS_ACCESS_SEQUENTIAL, "fail_on",
                                  VIPS_FAIL_ON_WARNING, NULL);
        break;
    case PF_FMT_PNG:
        rc = vips_pngload_buffer(b, len, &v->im, "access", VIPS_ACCESS_SEQUENTIAL, "fail_on", VIPS_FAIL_ON_ERROR,
                                 NULL);
        break;
    case PF_FMT_WEBP:
        rc = vips_webpload_buffer(b, len, &v->im, "access", VIPS_ACCESS_SEQUENTIAL, "fail_on",
                                  VIPS_FAIL_ON_ERROR, NULL);
        break;
    case PF_FMT_TIFF:
        rc = vips_tiffload_buffer(b, len, &v->im, "access", VIPS_ACCESS_SEQUENTIAL, "fail_on",
                                  VIPS_FAIL_ON_ERROR, NULL);
        break;
    default:
        vips_close(d);
        *kind = PF_IMG_INTERNAL;
        return pf_errf(err, "no libvips loader for %s", pf_img_format_name(f));
    }
    if (rc) {
        char msg[512];
        pf_img_vips_error(msg, sizeof msg);
        *kind = classify(v, msg);
        vips_close(d);
        return pf_errf(err, "invalid %s header: %s", pf_img_format_name(f), msg);
    }
    VipsImage *im = v->im;
    d->width = im->Xsize;
    d->height = im->Ysize;
    d->orientation = vips_image_get_orientation(im);
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
    /* Strips of at most ~96 KB: libvips allocates (calloc) fresh region buffers for every strip of a
     * sequential pipeline; above glibc's mmap threshold (128 KB) each one is a new mapping and every
     * page faults in (measured: 3000x2000 JPEG 7.5 -> see bench), below it they recycle heap memory. */
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
    /* a region is created lazily: the header check above must not start decoding */
    v->reg = vips_region_new(im);
    if (!v->reg) {
        char msg[512];
        pf_img_vips_error(msg, sizeof msg);
        vips_close(d);
        *kind = PF_IMG_INTERNAL;
        return pf_errf(err, "libvips: %s", msg);
    }
    return 0;
}
