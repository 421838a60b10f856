/* image_bmp.c - Windows BMP, read as Pillow 9.4's BmpImagePlugin does (libvips reads BMP only through
 * ImageMagick, an untrusted loader we block).
 *
 * Pillow's rules, mirrored: headers of 12 (OS/2), 40, 64, 108 or 124 bytes; a negative height (top byte
 * 0xFF) means top-down rows; 1/4/8-bit palettes (BGRX, or BGR for 12-byte headers), turned into mode "1"
 * or "L" when the palette is the identity grey ramp (then pixel value = index); 16-bit as BGR;15 (or
 * BGR;16 with 5-6-5 bitfields) scaled v * 255 / max; 24-bit BGR; 32-bit BGRX and the bitfield layouts
 * Pillow knows (alpha dropped); RLE8 and RLE4 with the quirks of Pillow's Python RLE decoder (its delta
 * escape consumes four bytes). Palette entries a file does not set are Pillow's grey ramp (i, i, i).
 * A file shorter than its pixel rows is truncated; anything Pillow refuses is refused.
 */
#include "image/image_internal.h"

#include <stdlib.h>
#include <string.h>

typedef enum rawmode {
    RM_1, /* 1 bit per pixel, MSB first, 1 -> 255 */
    RM_L, /* 8-bit grey */
    RM_P1,
    RM_P4,
    RM_P8,
    RM_BGR15,
    RM_BGR16,
    RM_BGR,
    RM_BGRX,
    RM_XBGR,
    RM_ABGR,
    RM_RGBA,
    RM_BGRA,
} rawmode;

static const int rawmode_bits[] = {1, 8, 1, 4, 8, 16, 16, 24, 32, 32, 32, 32, 32};

typedef struct bmp_dec {
    const uint8_t *b;
    size_t len;
    rawmode rm;
    uint8_t pal[256 * 3];
    size_t offset, stride, row_bytes;
    int bottom_up;
    int rle, rle4;
    uint8_t *idx; /* RLE: decoded indices / grey values, width * height, in file row order */
    uint8_t *rows;
    int strip, y;
} bmp_dec;

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t le16(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

/* one stored row (or RLE indices when rm is RM_L / RM_P8 on idx) -> RGB */
static void unpack_row(const bmp_dec *m, const uint8_t *s, int w, uint8_t *dst)
{
    for (int x = 0; x < w; x++) {
        uint8_t *o = dst + 3 * x;
        uint32_t v;
        switch (m->rm) {
        case RM_1:
            o[0] = o[1] = o[2] = (s[x >> 3] >> (7 - (x & 7)) & 1) ? 255 : 0;
            break;
        case RM_L:
            o[0] = o[1] = o[2] = s[x];
            break;
        case RM_P1:
            memcpy(o, m->pal + 3 * (s[x >> 3] >> (7 - (x & 7)) & 1), 3);
            break;
        case RM_P4:
            memcpy(o, m->pal + 3 * (x & 1 ? s[x >> 1] & 15 : s[x >> 1] >> 4), 3);
            break;
        case RM_P8:
            memcpy(o, m->pal + 3 * s[x], 3);
            break;
        case RM_BGR15:
            v = le16(s + 2 * x);
            o[0] = (uint8_t)(((v >> 10) & 31) * 255 / 31);
            o[1] = (uint8_t)(((v >> 5) & 31) * 255 / 31);
            o[2] = (uint8_t)((v & 31) * 255 / 31);
            break;
        case RM_BGR16:
            v = le16(s + 2 * x);
            o[0] = (uint8_t)(((v >> 11) & 31) * 255 / 31);
            o[1] = (uint8_t)(((v >> 5) & 63) * 255 / 63);
            o[2] = (uint8_t)((v & 31) * 255 / 31);
            break;
        case RM_BGR:
            o[0] = s[3 * x + 2], o[1] = s[3 * x + 1], o[2] = s[3 * x];
            break;
        case RM_BGRX:
        case RM_BGRA:
            o[0] = s[4 * x + 2], o[1] = s[4 * x + 1], o[2] = s[4 * x];
            break;
        case RM_XBGR:
        case RM_ABGR:
            o[0] = s[4 * x + 3], o[1] = s[4 * x + 2], o[2] = s[4 * x + 1];
            break;
        case RM_RGBA:
            o[0] = s[4 * x], o[1] = s[4 * x + 1], o[2] = s[4 * x + 2];
            break;
        }
    }
}

/* Pillow 9.4's BmpRleDecoder.decode, byte for byte (including its quirks). Returns 0 when the data fills
 * the image (Pillow's set_as_raw otherwise fails with "not enough image data"). */
static int rle_decode(bmp_dec *m, int w, int h)
{
    size_t total = (size_t)w * (size_t)h, n = 0;
    size_t pos = m->offset;
    const uint8_t *b = m->b;
    size_t len = m->len;
    size_t x = 0;
#define PUT(v)                                                                                               \
    do {                                                                                                     \
        if (n < total)                                                                                       \
            m->idx[n] = (uint8_t)(v);                                                                        \
        n++;                                                                                                 \
    } while (0)
    while (n < total) {
        if (pos + 2 > len)
            break;
        unsigned npix = b[pos], byte = b[pos + 1];
        pos += 2;
        if (npix) {
            if (x + npix > (size_t)w)
                npix = x < (size_t)w ? (unsigned)((size_t)w - x) : 0;
            for (unsigned i = 0; i < npix; i++)
                PUT(m->rle4 ? (i % 2 == 0 ? byte >> 4 : byte & 15) : byte);
            x += npix;
        } else if (byte == 0) { /* end of line */
            while (n % (size_t)w != 0)
                PUT(0);
            x = 0;
        } else if (byte == 1) { /* end of bitmap */
            break;
        } else if (byte == 2) { /* delta: Pillow reads two bytes, then reads right/up from the next two */
            if (pos + 2 > len)
                break;
            pos += 2;
            if (pos + 2 > len)
                return -1; /* `right, up = read(2)` fails to unpack: an exception in Pillow */
            size_t right = b[pos], up = b[pos + 1];
            pos += 2;
            size_t add = right + up * (size_t)w;
            size_t room = n < total ? total - n : 0;
            if (room)
                memset(m->idx + n, 0, add < room ? add : room);
            n += add;
            x = n % (size_t)w;
        } else { /* absolute mode */
            size_t count = m->rle4 ? byte / 2 : byte;
            size_t avail = len - pos < count ? len - pos : count;
            for (size_t i = 0; i < avail; i++) {
                if (m->rle4) {
                    PUT(b[pos + i] >> 4);
                    PUT(b[pos + i] & 15);
                } else {
                    PUT(b[pos + i]);
                }
            }
            pos += avail;
            if (avail < count)
                break;
            x += byte;
            if (pos % 2 != 0) /* align to 16 bits (Pillow uses the absolute file position) */
                pos++;
        }
    }
#undef PUT
    return n >= total ? 0 : -1;
}

static int bmp_next(pf_img_dec *d, const uint8_t **rows, size_t *stride, int *n, pf_img_errkind *kind,
                    pf_err *err)
{
    bmp_dec *m = d->state;
    *n = 0;
    if (!m->rows) {
        m->rows = malloc((size_t)m->strip * (size_t)d->width * 3);
        if (m->rle)
            m->idx = malloc((size_t)d->width * (size_t)d->height);
        if (!m->rows || (m->rle && !m->idx)) {
            *kind = PF_IMG_INTERNAL;
            return pf_errf(err, "out of memory for a %dx%d BMP", d->width, d->height);
        }
        if (m->rle && rle_decode(m, d->width, d->height)) {
            *kind = PF_IMG_TRUNCATED;
            return pf_errf(err, "BMP RLE data ends before the image is complete");
        }
    }
    if (m->y >= d->height)
        return 0;
    int h = d->height - m->y < m->strip ? d->height - m->y : m->strip;
    for (int i = 0; i < h; i++) {
        int y = m->y + i;
        int fy = m->bottom_up ? d->height - 1 - y : y; /* row index in file order */
        const uint8_t *src = m->rle ? m->idx + (size_t)fy * (size_t)d->width : m->b + m->offset + (size_t)fy * m->stride;
        unpack_row(m, src, d->width, m->rows + (size_t)i * (size_t)d->width * 3);
    }
    *rows = m->rows;
    *stride = (size_t)d->width * 3;
    *n = h;
    m->y += h;
    return 0;
}

static void bmp_close(pf_img_dec *d)
{
    bmp_dec *m = d->state;
    if (!m)
        return;
    free(m->rows);
    free(m->idx);
    free(m);
    d->state = NULL;
}

#define FAIL(k, ...)                                                                                         \
    do {                                                                                                     \
        *kind = (k);                                                                                         \
        free(m);                                                                                             \
        return pf_errf(err, __VA_ARGS__);                                                                    \
    } while (0)

int pf_img_bmp_open(const uint8_t *b, size_t len, pf_img_dec *d, pf_img_errkind *kind, pf_err *err)
{
    memset(d, 0, sizeof *d);
    bmp_dec *m = calloc(1, sizeof *m);
    if (!m) {
        *kind = PF_IMG_INTERNAL;
        return pf_errf(err, "out of memory");
    }
    if (len < 18)
        FAIL(PF_IMG_TRUNCATED, "BMP header is cut short (%zu bytes)", len);
    uint64_t offset = le32(b + 10);
    uint32_t hsize = le32(b + 14);
    if (hsize != 12 && hsize != 40 && hsize != 64 && hsize != 108 && hsize != 124)
        FAIL(PF_IMG_UNSUPPORTED, "BMP header type %u is not supported", hsize);
    if (len < 14 + (size_t)hsize)
        FAIL(PF_IMG_TRUNCATED, "BMP header is cut short (%zu bytes)", len);
    const uint8_t *h = b + 18;
    uint64_t width, height;
    uint32_t bits, compression = 0, colors = 0, pad;
    uint32_t mask[4] = {0, 0, 0, 0};
    size_t pos = 14 + hsize; /* Pillow's file position after the header */
    if (hsize == 12) {
        width = le16(h);
        height = le16(h + 2);
        bits = le16(h + 6);
        pad = 3;
    } else {
        int y_flip = h[7] == 0xff;
        width = le32(h);
        height = y_flip ? ((uint64_t)1 << 32) - le32(h + 4) : le32(h + 4);
        m->bottom_up = !y_flip;
        bits = le16(h + 10);
        compression = le32(h + 12);
        colors = le32(h + 28);
        pad = 4;
        if (compression == 3) {
            if (hsize - 4 >= 52) {
                for (int i = 0; i < 4; i++)
                    mask[i] = le32(h + 36 + 4 * i);
            } else {
                if (len < pos + 12)
                    FAIL(PF_IMG_TRUNCATED, "BMP bitfield masks are cut short");
                for (int i = 0; i < 3; i++)
                    mask[i] = le32(b + pos + 4 * i);
                pos += 12;
            }
        }
    }
    if (hsize == 12)
        m->bottom_up = 1;
    uint64_t ncolors = colors ? colors : (bits < 64 ? (uint64_t)1 << bits : 0);
    if (offset == 14 + (uint64_t)hsize && bits <= 8)
        offset += 4 * ncolors;
    switch (bits) {
    case 1: m->rm = RM_P1; break;
    case 4: m->rm = RM_P4; break;
    case 8: m->rm = RM_P8; break;
    case 16: m->rm = RM_BGR15; break;
    case 24: m->rm = RM_BGR; break;
    case 32: m->rm = RM_BGRX; break;
    default: FAIL(PF_IMG_UNSUPPORTED, "BMP pixel depth %u is not supported", bits);
    }
    if (compression == 3) {
        static const struct {
            uint32_t bits, r, g, b, a;
            rawmode rm;
        } layouts[] = {
            {32, 0xff0000, 0xff00, 0xff, 0, RM_BGRX},           {32, 0xff000000, 0xff0000, 0xff00, 0, RM_XBGR},
            {32, 0xff000000, 0xff0000, 0xff00, 0xff, RM_ABGR},  {32, 0xff, 0xff00, 0xff0000, 0xff000000, RM_RGBA},
            {32, 0xff0000, 0xff00, 0xff, 0xff000000, RM_BGRA},  {32, 0, 0, 0, 0, RM_BGRA},
            {24, 0xff0000, 0xff00, 0xff, 0, RM_BGR},            {16, 0xf800, 0x7e0, 0x1f, 0, RM_BGR16},
            {16, 0x7c00, 0x3e0, 0x1f, 0, RM_BGR15},
        };
        int found = 0;
        for (size_t i = 0; i < sizeof layouts / sizeof layouts[0] && !found; i++) {
            if (layouts[i].bits != bits || layouts[i].r != mask[0] || layouts[i].g != mask[1] ||
                layouts[i].b != mask[2])
                continue;
            if (bits == 32 && layouts[i].a != mask[3])
                continue; /* 24/16-bit layouts ignore the alpha mask */
            m->rm = layouts[i].rm;
            found = 1;
        }
        if (!found)
            FAIL(PF_IMG_UNSUPPORTED, "BMP bitfields layout is not supported");
    } else if (compression == 1 || compression == 2) {
        m->rle = 1;
        m->rle4 = compression == 2;
    } else if (compression != 0) {
        FAIL(PF_IMG_UNSUPPORTED, "BMP compression %u is not supported", compression);
    }
    if (bits <= 8) {
        if (ncolors == 0 || ncolors > 65536)
            FAIL(PF_IMG_UNSUPPORTED, "BMP palette size %llu is not supported", (unsigned long long)ncolors);
        size_t want = (size_t)pad * (size_t)ncolors;
        size_t have = pos < len ? len - pos : 0;
        if (have > want)
            have = want;
        const uint8_t *p = b + pos;
        int grey = 1;
        for (size_t i = 0; i < ncolors && grey; i++) {
            size_t val = ncolors == 2 ? (i ? 255 : 0) : i;
            uint8_t v = (uint8_t)(val & 255);
            if (i * pad + 3 > have || p[i * pad] != v || p[i * pad + 1] != v || p[i * pad + 2] != v)
                grey = 0;
        }
        if (grey) {
            m->rm = ncolors == 2 ? RM_1 : RM_L;
        } else {
            if (ncolors > 256)
                FAIL(PF_IMG_CORRUPT, "BMP palette has %llu entries, more than 256", (unsigned long long)ncolors);
            for (int i = 0; i < 256; i++)
                m->pal[3 * i] = m->pal[3 * i + 1] = m->pal[3 * i + 2] = (uint8_t)i;
            for (size_t i = 0; i < ncolors && i * pad + 3 <= have; i++) {
                m->pal[3 * i + 0] = p[i * pad + 2];
                m->pal[3 * i + 1] = p[i * pad + 1];
                m->pal[3 * i + 2] = p[i * pad + 0];
            }
        }
        if (m->rle && m->rm == RM_1)
            FAIL(PF_IMG_UNSUPPORTED, "BMP RLE with a two-colour grey palette is not supported");
        if (m->rle)
            m->rm = m->rm == RM_L ? RM_L : RM_P8; /* the RLE decoder yields one index per byte */
    } else if (m->rle) {
        FAIL(PF_IMG_UNSUPPORTED, "BMP RLE with %u bits per pixel is not supported", bits);
    }
    if (width == 0 || height == 0)
        FAIL(PF_IMG_CORRUPT, "BMP has no pixels (%llux%llu)", (unsigned long long)width, (unsigned long long)height);
    if (width > 0x7fffffff || height > 0x7fffffff)
        FAIL(PF_IMG_TOO_MANY_PIXELS, "BMP declares %llux%llu pixels", (unsigned long long)width,
             (unsigned long long)height);
    if (offset == 0)
        offset = pos + (bits <= 8 ? (uint64_t)pad * ncolors : 0);
    m->b = b;
    m->len = len;
    m->offset = offset;
    if (!m->rle) {
        m->stride = (size_t)((width * bits + 31) >> 3) & ~(size_t)3;
        m->row_bytes = (size_t)((rawmode_bits[m->rm] * width + 7) / 8);
        if (m->row_bytes > m->stride)
            FAIL(PF_IMG_CORRUPT, "BMP row layout is inconsistent (%u bits per pixel with a grey palette)", bits);
        /* every row must be there (Pillow: "image file is truncated"); no overflow: rows are counted
         * against what the file can hold before multiplying */
        uint64_t need = offset + (height - 1) * (uint64_t)m->stride + m->row_bytes;
        if (offset > len || (height - 1) > (len - offset) / m->stride || need > len)
            FAIL(PF_IMG_TRUNCATED, "BMP pixel data is cut short (%llu bytes needed, %zu present)",
                 (unsigned long long)need, len);
    } else if (offset >= len) {
        FAIL(PF_IMG_TRUNCATED, "BMP pixel data is missing");
    }
    d->width = (int)width;
    d->height = (int)height;
    d->orientation = 1;
    if (m->rle) /* RLE data is expanded whole (one index a pixel) before rows are delivered */
        d->frame_bytes = (uint64_t)d->width * (uint64_t)d->height;
    size_t strip = ((size_t)1 << 20) / ((size_t)d->width * 3 + 1);
    m->strip = strip < 1 ? 1 : strip > 64 ? 64 : (int)strip;
    d->state = m;
    d->next = bmp_next;
    d->close = bmp_close;
    return 0;
}
