/* image_pnm.c - PBM/PGM/PPM (P1..P6), read as Pillow 9.4's PpmImagePlugin does (libvips' ppmload is an
 * untrusted loader, and it scales 16-bit samples differently).
 *
 * Pillow's rules, mirrored:
 *   - header tokens separated by whitespace; '#' skips to the end of the line *including* the newline, so
 *     a comment glues the characters around it into one token; tokens longer than 10 characters fail;
 *   - P1/P4: mode "1" (1 = black); P2/P5: "L", or "I" when maxval > 255; P3/P6: "RGB"; 0 < maxval < 65536;
 *   - binary data: maxval 255 raw; P5 with maxval 65535 raw big-endian (mode I); other maxvals scaled
 *     min(out_max, round(v / maxval * out_max)) with Python's round-half-even, out_max 255 (65535 for I);
 *   - plain (ASCII) data: same scaling, values above maxval fail, P1 digits must be 0/1;
 *   - mode I becomes RGB as v >> 8 (the project's 16-bit grey rule).
 * Short data fails (Pillow: "image file is truncated" / "not enough image data").
 */
#include "image/image_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef enum pnm_kind { K_RAW8, K_RAWBITS, K_RAW16BE_I, K_SCALED, K_PLAIN_BITS, K_PLAIN } pnm_kind;

typedef struct pnm_dec {
    const uint8_t *b;
    size_t len, pos; /* pos: the data cursor (plain formats) */
    size_t offset;   /* first data byte */
    pnm_kind kind;
    int bands;       /* 1 or 3 */
    int mode_i;      /* grey with maxval > 255: values 0..65535, then >> 8 */
    unsigned maxval;
    uint8_t *rows;
    int strip, y;
} pnm_dec;

static int is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Pillow's PpmImageFile._read_token. Returns the token length, 0 at EOF without a token, -1 if too long. */
static int read_header_token(const uint8_t *b, size_t len, size_t *pos, char tok[12])
{
    int n = 0;
    while (n <= 10) {
        if (*pos >= len)
            break;
        uint8_t c = b[(*pos)++];
        if (is_ws(c)) {
            if (!n)
                continue;
            break;
        }
        if (c == '#') {
            while (*pos < len) {
                uint8_t e = b[(*pos)++];
                if (e == '\r' || e == '\n')
                    break;
            }
            continue;
        }
        tok[n++] = (char)c;
    }
    tok[n < 12 ? n : 11] = '\0';
    return n > 10 ? -1 : n;
}

static int parse_uint(const char *t, uint64_t *out)
{
    uint64_t v = 0;
    if (!*t)
        return -1;
    for (; *t; t++) {
        if (*t < '0' || *t > '9')
            return -1;
        v = v * 10 + (uint64_t)(*t - '0');
    }
    *out = v;
    return 0;
}

/* round(value / maxval * out_max) in Python: double arithmetic, ties to even */
static unsigned scale(unsigned v, unsigned maxval, unsigned out_max)
{
    double r = nearbyint((double)v / (double)maxval * (double)out_max);
    return r > out_max ? out_max : (unsigned)r;
}

/* Next plain-format token: comments removed (gluing neighbours, as Pillow's block filter does). */
static int plain_token(pnm_dec *p, char *tok, int cap)
{
    int n = 0;
    while (p->pos < p->len) {
        uint8_t c = p->b[p->pos];
        if (c == '#') {
            while (p->pos < p->len && p->b[p->pos] != '\n' && p->b[p->pos] != '\r')
                p->pos++;
            if (p->pos < p->len)
                p->pos++;
            continue;
        }
        if (is_ws(c)) {
            p->pos++;
            if (n)
                break;
            continue;
        }
        if (n < cap)
            tok[n] = (char)c;
        n++;
        p->pos++;
        if (p->kind == K_PLAIN_BITS)
            break; /* P1: every digit is a pixel */
    }
    return n;
}

static int sample_to_u8(const pnm_dec *p, unsigned v)
{
    if (p->mode_i)
        return (int)(v >> 8);
    return (int)v;
}

static int pnm_next(pf_img_dec *d, const uint8_t **rows, size_t *stride, int *n, pf_img_errkind *kind,
                    pf_err *err)
{
    pnm_dec *p = d->state;
    *n = 0;
    size_t w = (size_t)d->width;
    if (!p->rows) {
        p->rows = malloc((size_t)p->strip * w * 3);
        if (!p->rows) {
            *kind = PF_IMG_INTERNAL;
            return pf_errf(err, "out of memory for a %d-pixel-wide strip", d->width);
        }
    }
    if (p->y >= d->height)
        return 0;
    int h = d->height - p->y < p->strip ? d->height - p->y : p->strip;
    if (p->kind == K_RAW8 && p->bands == 3) { /* already RGB: hand out the file's rows */
        *rows = p->b + p->offset + (size_t)p->y * w * 3;
        *stride = w * 3;
        *n = h;
        p->y += h;
        return 0;
    }
    unsigned out_max = p->mode_i ? 65535 : 255;
    for (int i = 0; i < h; i++) {
        size_t y = (size_t)(p->y + i);
        uint8_t *dst = p->rows + (size_t)i * w * 3;
        for (size_t x = 0; x < w; x++) {
            uint8_t px[3];
            for (int c = 0; c < p->bands; c++) {
                unsigned v;
                switch (p->kind) {
                case K_RAW8:
                    v = p->b[p->offset + (y * w + x) * (size_t)p->bands + (size_t)c];
                    break;
                case K_RAWBITS: {
                    size_t rb = (w + 7) / 8;
                    v = (p->b[p->offset + y * rb + x / 8] >> (7 - x % 8) & 1) ? 0 : 255;
                    break;
                }
                case K_RAW16BE_I:
                    v = p->b[p->offset + (y * w + x) * 2] >> 0; /* high byte of the big-endian sample */
                    v <<= 8;
                    break;
                case K_SCALED: {
                    size_t nb = p->maxval < 256 ? 1 : 2;
                    const uint8_t *s = p->b + p->offset + ((y * w + x) * (size_t)p->bands + (size_t)c) * nb;
                    unsigned raw = nb == 1 ? s[0] : (unsigned)s[0] << 8 | s[1];
                    v = scale(raw, p->maxval, out_max);
                    break;
                }
                case K_PLAIN_BITS: {
                    char t[2];
                    if (plain_token(p, t, 1) < 1) {
                        *kind = PF_IMG_TRUNCATED;
                        return pf_errf(err, "PBM data ends at pixel %zu of %zu", y * w + x, w * (size_t)d->height);
                    }
                    if (t[0] != '0' && t[0] != '1') {
                        *kind = PF_IMG_CORRUPT;
                        return pf_errf(err, "PBM data holds '%c', not 0 or 1", t[0]);
                    }
                    v = t[0] == '0' ? 255 : 0;
                    break;
                }
                default: { /* K_PLAIN */
                    char t[12];
                    int tn = plain_token(p, t, 11);
                    uint64_t val;
                    if (tn < 1) {
                        *kind = PF_IMG_TRUNCATED;
                        return pf_errf(err, "PNM data ends at pixel %zu of %zu", y * w + x, w * (size_t)d->height);
                    }
                    t[tn < 11 ? tn : 11] = '\0';
                    if (tn > 10 || parse_uint(t, &val)) {
                        *kind = PF_IMG_CORRUPT;
                        return pf_errf(err, "PNM data holds an invalid value '%s'", t);
                    }
                    if (val > p->maxval) {
                        *kind = PF_IMG_CORRUPT;
                        return pf_errf(err, "PNM value %llu is above maxval %u", (unsigned long long)val, p->maxval);
                    }
                    v = scale((unsigned)val, p->maxval, out_max);
                    break;
                }
                }
                px[c] = (uint8_t)sample_to_u8(p, v);
            }
            if (p->bands == 1)
                px[1] = px[2] = px[0];
            memcpy(dst + 3 * x, px, 3);
        }
    }
    *rows = p->rows;
    *stride = w * 3;
    *n = h;
    p->y += h;
    return 0;
}

static void pnm_close(pf_img_dec *d)
{
    pnm_dec *p = d->state;
    if (!p)
        return;
    free(p->rows);
    free(p);
    d->state = NULL;
}

int pf_img_pnm_open(const uint8_t *b, size_t len, pf_img_dec *d, pf_img_errkind *kind, pf_err *err)
{
    memset(d, 0, sizeof *d);
    /* _read_magic: up to 6 bytes, stopping at (and consuming) whitespace */
    char magic[8];
    size_t pos = 0;
    int mn = 0;
    while (mn < 6 && pos < len) {
        uint8_t c = b[pos++];
        if (is_ws(c))
            break;
        magic[mn++] = (char)c;
    }
    magic[mn] = '\0';
    if (mn != 2 || magic[0] != 'P' || magic[1] < '1' || magic[1] > '6') {
        *kind = PF_IMG_UNSUPPORTED;
        return pf_errf(err, "PNM variant '%s' is not supported", magic);
    }
    int type = magic[1] - '0';
    int bitmap = type == 1 || type == 4, plain = type <= 3;
    int bands = (type == 3 || type == 6) ? 3 : 1;
    uint64_t v[3] = {0, 0, 0};
    int ntok = bitmap ? 2 : 3;
    for (int i = 0; i < ntok; i++) {
        char tok[12];
        int tn = read_header_token(b, len, &pos, tok);
        if (tn == 0) {
            *kind = PF_IMG_TRUNCATED;
            return pf_errf(err, "PNM header is cut short");
        }
        if (tn < 0 || parse_uint(tok, &v[i])) {
            *kind = PF_IMG_CORRUPT;
            return pf_errf(err, "PNM header holds an invalid number '%s'", tok);
        }
    }
    uint64_t w = v[0], h = v[1], maxval = bitmap ? 1 : v[2];
    if (!bitmap && (maxval < 1 || maxval > 65535)) {
        *kind = PF_IMG_CORRUPT;
        return pf_errf(err, "PNM maxval must be 1..65535, got %llu", (unsigned long long)maxval);
    }
    if (w == 0 || h == 0) {
        *kind = PF_IMG_CORRUPT;
        return pf_errf(err, "PNM has no pixels (%llux%llu)", (unsigned long long)w, (unsigned long long)h);
    }
    if (w > 0x7fffffff || h > 0x7fffffff || w * h > ((uint64_t)1 << 40)) {
        *kind = PF_IMG_TOO_MANY_PIXELS;
        return pf_errf(err, "PNM declares %llux%llu pixels", (unsigned long long)w, (unsigned long long)h);
    }
    pnm_dec *p = calloc(1, sizeof *p);
    if (!p) {
        *kind = PF_IMG_INTERNAL;
        return pf_errf(err, "out of memory");
    }
    p->b = b;
    p->len = len;
    p->offset = p->pos = pos;
    p->bands = bands;
    p->maxval = (unsigned)maxval;
    p->mode_i = bands == 1 && !bitmap && maxval > 255;
    uint64_t need = 0;
    if (plain) {
        p->kind = bitmap ? K_PLAIN_BITS : K_PLAIN;
    } else if (bitmap) {
        p->kind = K_RAWBITS;
        need = (w + 7) / 8 * h;
    } else if (maxval == 255) {
        p->kind = K_RAW8;
        need = w * h * (uint64_t)bands;
    } else if (maxval == 65535 && bands == 1) {
        p->kind = K_RAW16BE_I;
        need = w * h * 2;
    } else {
        p->kind = K_SCALED;
        need = w * h * (uint64_t)bands * (maxval < 256 ? 1u : 2u);
    }
    if (!plain && need > len - pos) {
        free(p);
        *kind = PF_IMG_TRUNCATED;
        return pf_errf(err, "PNM pixel data is cut short (%llu bytes needed, %zu present)", (unsigned long long)need,
                       len - pos);
    }
    d->width = (int)w;
    d->height = (int)h;
    d->orientation = 1;
    size_t strip = ((size_t)1 << 20) / ((size_t)w * 3 + 1);
    p->strip = strip < 1 ? 1 : strip > 64 ? 64 : (int)strip;
    d->state = p;
    d->next = pnm_next;
    d->close = pnm_close;
    return 0;
}
