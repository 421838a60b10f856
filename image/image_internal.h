/* image_internal.h - pieces of the image preprocessor shared between image/image*.c (not public). */
#ifndef PF_WORKERS_IMAGE_INTERNAL_H
#define PF_WORKERS_IMAGE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "image/image.h"

/* ---- formats, by content (image_sniff.c) ---- */
typedef enum pf_img_format {
    PF_FMT_UNKNOWN,
    PF_FMT_JPEG,
    PF_FMT_PNG,
    PF_FMT_GIF,
    PF_FMT_WEBP,
    PF_FMT_TIFF,
    PF_FMT_BMP,
    PF_FMT_PNM,
    PF_FMT_HEIF,   /* HEIC and other HEIF (ISO BMFF 'ftyp' brands heic, mif1, ...): libheif via libvips */
    PF_FMT_AVIF,   /* the AV1 flavour of HEIF: same loader */
    PF_FMT_JXL,    /* JPEG XL, bare codestream or ISO BMFF container: libjxl via libvips */
    /* recognised only to give a precise "unsupported" message */
    PF_FMT_SVG,
    PF_FMT_PDF,
} pf_img_format;

pf_img_format pf_img_sniff(const uint8_t *buf, size_t len);
const char *pf_img_format_name(pf_img_format f);

/* PNG: Pillow verifies the CRC of every chunk before the first IDAT (libpng only warns about ancillary
 * ones) and fails on a chunk cut short. Same here, before libvips sees the file. */
int pf_img_png_check(const uint8_t *buf, size_t len, pf_img_errkind *kind, pf_err *err);

/* Heuristic for a failed decode: does the data look cut short (no end marker, chunk past the end)? */
int pf_img_looks_truncated(pf_img_format f, const uint8_t *buf, size_t len);

/* ---- decoders ----
 * A decoder delivers the image top to bottom as strips of RGB u8 rows (colour rules already applied). */
typedef struct pf_img_dec pf_img_dec;
struct pf_img_dec {
    int width, height; /* as stored (before any EXIF orientation) */
    int orientation;   /* EXIF orientation 1..8 (1 when absent or invalid) */
    /* Bytes the decoder holds at once beyond a few hundred rows: the whole frame when the format or the
     * file's layout cannot be decoded row by row (interlaced PNG, progressive JPEG, GIF's canvas, ...).
     * An upper bound, set by open from the header; the decode memory budget is charged with it. */
    uint64_t frame_bytes;
    /* Next strip: *rows points at *n rows of width*3 bytes, *stride apart, valid until the next call. */
    int (*next)(pf_img_dec *d, const uint8_t **rows, size_t *stride, int *n, pf_img_errkind *kind, pf_err *err);
    void (*close)(pf_img_dec *d);
    void *state;
};

/* Open (header only, no pixel decoded): libvips for JPEG/PNG/WebP/TIFF/HEIF/AVIF/JPEG XL. */
int pf_img_vips_open(pf_img_format f, const uint8_t *buf, size_t len, pf_img_dec *d, pf_img_errkind *kind,
                     pf_err *err);
/* Our own readers with Pillow's semantics: GIF (libnsgif differs from Pillow, see image_gif.c), and BMP
 * and PNM, which libvips only reads with untrusted loaders. Header only; pixels on the first next(). */
int pf_img_gif_open(const uint8_t *buf, size_t len, pf_img_dec *d, pf_img_errkind *kind, pf_err *err);
int pf_img_bmp_open(const uint8_t *buf, size_t len, pf_img_dec *d, pf_img_errkind *kind, pf_err *err);
int pf_img_pnm_open(const uint8_t *buf, size_t len, pf_img_dec *d, pf_img_errkind *kind, pf_err *err);

/* ---- colour rules (image_colour.c): one row of a decoded layout -> RGB u8 ---- */
typedef enum pf_img_layout {
    PF_LAYOUT_NONE,
    PF_LAYOUT_RGB8,   /* copy */
    PF_LAYOUT_G8,     /* grey, replicated */
    PF_LAYOUT_GA8,    /* grey + alpha: alpha dropped */
    PF_LAYOUT_RGBA8,  /* alpha dropped */
    PF_LAYOUT_CMYK8,  /* Pillow's cmyk2rgb */
    PF_LAYOUT_CMYKA8, /* CMYK + alpha (TIFF): alpha dropped, cmyk2rgb */
    PF_LAYOUT_G16,    /* 16-bit (native endian) grey: v >> 8 */
    PF_LAYOUT_GA16,
    PF_LAYOUT_RGB16,
    PF_LAYOUT_RGBA16,
    PF_LAYOUT_CMYK16,  /* v >> 8 then cmyk2rgb */
    PF_LAYOUT_CMYKA16,
} pf_img_layout;

void pf_img_convert_row(pf_img_layout layout, const void *src, int width, uint8_t *dst);
/* Bytes per pixel of a layout. */
int pf_img_layout_bpp(pf_img_layout layout);

/* ---- EXIF orientation (image_orient.c) ---- */
/* Size after applying orientation o (5..8 swap the axes). */
void pf_img_oriented_size(int o, int w, int h, int *ow, int *oh);
/* Row y of the oriented image (ow pixels, RGB) from the stored image (w x h, RGB, packed). */
void pf_img_oriented_row(int o, const uint8_t *img, int w, int h, int y, uint8_t *dst);

/* Messages of libvips (thread-safe copy of the global error buffer, first line only, cleared). When
 * libvips gives no reason, the last warning the codec library printed in this thread is used (libpng
 * and libtiff explain problems in warnings: "IHDR: CRC error"). */
void pf_img_vips_error(char *dst, size_t cap);
void pf_img_vips_note_warning(const char *msg); /* from the log handler (runs in the decoding thread) */
void pf_img_vips_clear_warning(void);

/* ---- the decode memory budget (image_budget.c) ---- */
/* Reserve BYTES (waits, first come first served, while the rest of the budget is in use); -1 at once when
 * BYTES exceeds the whole budget. NULL budget: no limit. */
int pf_img_budget_acquire(pf_img_budget *b, uint64_t bytes);
void pf_img_budget_release(pf_img_budget *b, uint64_t bytes);

#endif
