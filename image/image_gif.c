/* image_gif.c - the first frame of a GIF, exactly as Pillow 9.4 (GifImagePlugin + GifDecode.c) gives it.
 *
 * Why not libvips' gifload: libnsgif renders transparent pixels as 0,0,0,0 while Pillow keeps the palette
 * colour of the transparent index (convert("RGB") drops alpha without compositing; measured max 111
 * levels apart), and libnsgif shrinks logical screens it considers bogus while Pillow's image size *is*
 * the logical screen (bomb_screen.gif). Pillow's semantics for frame 0:
 *   - canvas = logical screen, grown to cover the frame rectangle; filled with the transparent index when
 *     the graphic control extension sets one, else with index 0; the frame is decoded into its rectangle;
 *   - mode "P" when the frame's palette (local, else global) is not the identity grey ramp, else "L"
 *     (pixel value = index); convert("RGB") looks indices up in a 256-entry palette whose unset entries
 *     are Pillow's grey ramp (i, i, i).
 * The LZW decoder below mirrors GifDecode.c (same table limits, same error cases), so damaged data fails
 * where Pillow fails: codes out of range -> corrupt; data ending before the frame is complete ->
 * truncated. Memory: one byte per canvas pixel, checked against the pixel limit before decoding.
 */
#include "image/image_internal.h"

#include <stdlib.h>
#include <string.h>

#define GIFBITS 12
#define GIFTABLE (1 << GIFBITS)
#define GIFBUFFER (1 << GIFBITS)

typedef struct gif_dec {
    const uint8_t *buf;
    size_t len;
    int fx, fy, fw, fh; /* frame rectangle */
    int interlace;
    int lzw_bits;
    size_t data_off; /* first sub-block of the image data */
    int fill;
    int grey; /* mode "L": value = index */
    uint8_t pal[256 * 3];
    uint8_t *canvas; /* indices, width * height */
    uint8_t *rows;   /* strip of RGB rows */
    int strip, y;
} gif_dec;

static int u16le(const uint8_t *p)
{
    return p[0] | p[1] << 8;
}

/* Pillow's GifImageFile._is_palette_needed */
static int palette_needed(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 2 < n; i += 3)
        if (!(p[i] == i / 3 && p[i + 1] == i / 3 && p[i + 2] == i / 3))
            return 1;
    return 0;
}

typedef struct lzw {
    const uint8_t *ptr, *end;
    /* GifDecode.c state */
    int bits, clear, endc, next, codesize, codemask, lastcode, bufferindex, blocksize, bitcount;
    uint8_t lastdata; /* UINT8 in Pillow: wider literal codes are truncated, as there */
    uint32_t bitbuffer;
    int state, step, repeat, interlace;
    uint8_t buffer[GIFBUFFER];
    uint8_t data[GIFTABLE];
    uint16_t link[GIFTABLE];
} lzw;

typedef enum { LZW_DONE, LZW_TRUNCATED, LZW_BROKEN, LZW_ENDED_EARLY } lzw_result;

/* Decode the frame into canvas (stride cw) at (xoff, yoff), xsize x ysize. */
static lzw_result lzw_decode(lzw *z, uint8_t *canvas, size_t cw, int xoff, int yoff, int xsize, int ysize)
{
    int x = 0, y = 0;
    z->clear = 1 << z->bits;
    z->endc = z->clear + 1;
    if (z->interlace) {
        z->interlace = 1;
        z->step = z->repeat = 8;
    } else {
        z->step = 1;
    }
    z->state = 1;
    uint8_t *out = canvas + (size_t)yoff * cw + (size_t)xoff;
    for (;;) {
        const uint8_t *p;
        int i;
        if (z->state == 1) {
            z->next = z->clear + 2;
            z->codesize = z->bits + 1;
            z->codemask = (1 << z->codesize) - 1;
            z->bufferindex = GIFBUFFER;
            z->state = 2;
        }
        if (z->bufferindex < GIFBUFFER) {
            i = GIFBUFFER - z->bufferindex;
            p = &z->buffer[z->bufferindex];
            z->bufferindex = GIFBUFFER;
        } else {
            while (z->bitcount < z->codesize) {
                if (z->blocksize > 0) {
                    z->bitbuffer |= (uint32_t)*z->ptr++ << z->bitcount;
                    z->blocksize--;
                    z->bitcount += 8;
                } else {
                    /* a new sub-block; Pillow waits for the whole block, so a short one is truncation */
                    if (z->ptr >= z->end)
                        return LZW_TRUNCATED;
                    int c = *z->ptr;
                    if ((size_t)(z->end - z->ptr) < (size_t)c + 1)
                        return LZW_TRUNCATED;
                    z->blocksize = c;
                    z->ptr++;
                }
            }
            int c = (int)(z->bitbuffer & (uint32_t)z->codemask);
            z->bitbuffer >>= z->codesize;
            z->bitcount -= z->codesize;
            if (c == z->clear) {
                if (z->state != 2)
                    z->state = 1;
                continue;
            }
            if (c == z->endc)
                return LZW_ENDED_EARLY;
            i = 1;
            p = &z->lastdata;
            if (z->state == 2) {
                if (c > z->clear)
                    return LZW_BROKEN;
                z->lastdata = (uint8_t)c;
                z->lastcode = c;
                z->state = 3;
            } else {
                int thiscode = c;
                if (c > z->next)
                    return LZW_BROKEN;
                if (c == z->next) {
                    if (z->bufferindex <= 0)
                        return LZW_BROKEN;
                    z->buffer[--z->bufferindex] = z->lastdata;
                    c = z->lastcode;
                }
                while (c >= z->clear) {
                    if (z->bufferindex <= 0 || c >= GIFTABLE)
                        return LZW_BROKEN;
                    z->buffer[--z->bufferindex] = z->data[c];
                    c = z->link[c];
                }
                z->lastdata = (uint8_t)c;
                if (z->next < GIFTABLE) {
                    z->data[z->next] = (uint8_t)c;
                    z->link[z->next] = (uint16_t)z->lastcode;
                    if (z->next == z->codemask && z->codesize < GIFBITS) {
                        z->codesize++;
                        z->codemask = (1 << z->codesize) - 1;
                    }
                    z->next++;
                }
                z->lastcode = thiscode;
            }
        }
        if (y >= ysize)
            return LZW_BROKEN; /* IMAGING_CODEC_OVERRUN */
        for (int c = 0; c < i; c++) {
            *out++ = p[c];
            if (++x >= xsize) {
                /* GifDecode.c NEWLINE */
                x = 0;
                y += z->step;
                while (y >= ysize) {
                    switch (z->interlace) {
                    case 1:
                        z->repeat = y = 4;
                        z->interlace = 2;
                        break;
                    case 2:
                        z->step = 4;
                        z->repeat = y = 2;
                        z->interlace = 3;
                        break;
                    case 3:
                        z->step = 2;
                        z->repeat = y = 1;
                        z->interlace = 0;
                        break;
                    default:
                        return LZW_DONE;
                    }
                }
                out = canvas + (size_t)(y + yoff) * cw + (size_t)xoff;
            }
        }
    }
}

static int gif_decode_all(pf_img_dec *d, pf_img_errkind *kind, pf_err *err)
{
    gif_dec *g = d->state;
    size_t npix = (size_t)d->width * (size_t)d->height;
    g->canvas = malloc(npix);
    lzw *z = calloc(1, sizeof *z);
    if (!g->canvas || !z) {
        free(z);
        *kind = PF_IMG_INTERNAL;
        return pf_errf(err, "out of memory for a %dx%d GIF", d->width, d->height);
    }
    memset(g->canvas, g->fill, npix);
    z->ptr = g->buf + g->data_off;
    z->end = g->buf + g->len;
    z->bits = g->lzw_bits;
    z->interlace = g->interlace;
    lzw_result r = lzw_decode(z, g->canvas, (size_t)d->width, g->fx, g->fy, g->fw, g->fh);
    free(z);
    switch (r) {
    case LZW_DONE:
        return 0;
    case LZW_TRUNCATED:
        *kind = PF_IMG_TRUNCATED;
        return pf_errf(err, "GIF data ends before the first frame is complete");
    case LZW_ENDED_EARLY:
        *kind = PF_IMG_TRUNCATED;
        return pf_errf(err, "GIF LZW data ends before the first frame is complete");
    case LZW_BROKEN:
        break;
    }
    *kind = PF_IMG_CORRUPT;
    return pf_errf(err, "GIF LZW data is broken");
}

static int gif_next(pf_img_dec *d, const uint8_t **rows, size_t *stride, int *n, pf_img_errkind *kind,
                    pf_err *err)
{
    gif_dec *g = d->state;
    *n = 0;
    if (!g->canvas) {
        g->rows = malloc((size_t)g->strip * (size_t)d->width * 3);
        if (!g->rows) {
            *kind = PF_IMG_INTERNAL;
            return pf_errf(err, "out of memory for a %d-pixel-wide strip", d->width);
        }
        if (gif_decode_all(d, kind, err))
            return -1;
    }
    if (g->y >= d->height)
        return 0;
    int h = d->height - g->y < g->strip ? d->height - g->y : g->strip;
    for (int i = 0; i < h; i++) {
        const uint8_t *src = g->canvas + (size_t)(g->y + i) * (size_t)d->width;
        uint8_t *dst = g->rows + (size_t)i * (size_t)d->width * 3;
        if (g->grey) {
            for (int x = 0; x < d->width; x++)
                dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = src[x];
        } else {
            for (int x = 0; x < d->width; x++)
                memcpy(dst + 3 * x, g->pal + 3 * src[x], 3);
        }
    }
    *rows = g->rows;
    *stride = (size_t)d->width * 3;
    *n = h;
    g->y += h;
    return 0;
}

static void gif_close(pf_img_dec *d)
{
    gif_dec *g = d->state;
    if (!g)
        return;
    free(g->canvas);
    free(g->rows);
    free(g);
    d->state = NULL;
}

/* Sub-block reader with Pillow's tolerance: GifImageFile.data() reads a size byte and that many bytes. */
static int skip_sub_blocks(const uint8_t *b, size_t len, size_t *off)
{
    for (;;) {
        if (*off >= len)
            return -1;
        size_t n = b[(*off)++];
        if (n == 0)
            return 0;
        if (n > len - *off)
            return -1;
        *off += n;
    }
}

int pf_img_gif_open(const uint8_t *b, size_t len, pf_img_dec *d, pf_img_errkind *kind, pf_err *err)
{
    memset(d, 0, sizeof *d);
    if (len < 13) {
        *kind = PF_IMG_TRUNCATED;
        return pf_errf(err, "GIF header is cut short (%zu bytes)", len);
    }
    int sw = u16le(b + 6), sh = u16le(b + 8), flags = b[10];
    size_t off = 13;
    const uint8_t *global = NULL;
    size_t global_n = 0;
    if (flags & 0x80) {
        global_n = (size_t)3 << ((flags & 7) + 1);
        if (global_n > len - off) {
            *kind = PF_IMG_TRUNCATED;
            return pf_errf(err, "GIF global palette is cut short");
        }
        global = b + off;
        off += global_n;
        if (!palette_needed(global, global_n))
            global = NULL;
    }
    int transparency = -1;
    for (;;) {
        if (off >= len) {
            *kind = PF_IMG_TRUNCATED;
            return pf_errf(err, "GIF has no image data (ends after %zu bytes)", len);
        }
        uint8_t s = b[off++];
        if (s == ';') {
            *kind = PF_IMG_CORRUPT;
            return pf_errf(err, "GIF has no frame");
        }
        if (s == '!') {
            if (off >= len)
                continue; /* the loop reports truncation */
            uint8_t label = b[off++];
            size_t start = off;
            if (off < len && label == 0xf9 && b[off] >= 4 && (size_t)b[off] < len - off) {
                const uint8_t *blk = b + off + 1;
                if (blk[0] & 1)
                    transparency = blk[3];
            }
            off = start;
            if (skip_sub_blocks(b, len, &off)) {
                *kind = PF_IMG_TRUNCATED;
                return pf_errf(err, "GIF extension block is cut short");
            }
            continue;
        }
        if (s != ',')
            continue; /* Pillow skips unknown bytes between blocks */
        if (len - off < 9) {
            *kind = PF_IMG_TRUNCATED;
            return pf_errf(err, "GIF image descriptor is cut short");
        }
        gif_dec *g = calloc(1, sizeof *g);
        if (!g) {
            *kind = PF_IMG_INTERNAL;
            return pf_errf(err, "out of memory");
        }
        g->fx = u16le(b + off);
        g->fy = u16le(b + off + 2);
        g->fw = u16le(b + off + 4);
        g->fh = u16le(b + off + 6);
        int dflags = b[off + 8];
        off += 9;
        g->interlace = (dflags & 64) != 0;
        const uint8_t *pal = global;
        size_t pal_n = global ? global_n : 0;
        if (dflags & 0x80) {
            size_t n = (size_t)3 << ((dflags & 7) + 1);
            if (n > len - off) {
                free(g);
                *kind = PF_IMG_TRUNCATED;
                return pf_errf(err, "GIF local palette is cut short");
            }
            pal = palette_needed(b + off, n) ? b + off : NULL;
            pal_n = pal ? n : 0;
            off += n;
        }
        if (off >= len) {
            free(g);
            *kind = PF_IMG_TRUNCATED;
            return pf_errf(err, "GIF image data is missing");
        }
        g->lzw_bits = b[off++];
        g->data_off = off;
        g->buf = b;
        g->len = len;
        g->grey = pal == NULL;
        for (int i = 0; i < 256; i++) /* entries the file does not set: Pillow's grey ramp */
            g->pal[3 * i] = g->pal[3 * i + 1] = g->pal[3 * i + 2] = (uint8_t)i;
        if (pal)
            memcpy(g->pal, pal, pal_n < sizeof g->pal ? pal_n : sizeof g->pal);
        g->fill = transparency >= 0 ? transparency : 0;
        /* Pillow: size = max(screen, frame extent) */
        int cw = sw, ch = sh;
        if (g->fx + g->fw > cw)
            cw = g->fx + g->fw;
        if (g->fy + g->fh > ch)
            ch = g->fy + g->fh;
        d->state = g;
        d->next = gif_next;
        d->close = gif_close;
        d->width = cw;
        d->height = ch;
        d->orientation = 1;
        d->frame_bytes = (uint64_t)cw * (uint64_t)ch; /* the first frame is decoded whole onto the canvas */
        size_t strip = ((size_t)1 << 20) / ((size_t)cw * 3 + 1);
        g->strip = strip < 1 ? 1 : strip > 64 ? 64 : (int)strip;
        int bits = g->lzw_bits, fw = g->fw, fh = g->fh;
        if (bits > 12 || cw < 1 || ch < 1 || fw < 1 || fh < 1) {
            gif_close(d);
            *kind = PF_IMG_CORRUPT;
            if (bits > 12)
                return pf_errf(err, "GIF LZW code size %d is invalid", bits);
            return pf_errf(err, "GIF frame or screen has no pixels (%dx%d, frame %dx%d)", cw, ch, fw, fh);
        }
        return 0;
    }
}
