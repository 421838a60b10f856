/* image_sniff.c - image format by content (as Pillow's Image.open does), and cheap structural checks. */
#include "image/image_internal.h"

#include <string.h>
#include <zlib.h>

static int starts(const uint8_t *b, size_t n, const char *magic, size_t m)
{
    return n >= m && memcmp(b, magic, m) == 0;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* HEIF and AVIF are ISO BMFF files whose first box is 'ftyp' naming an image brand (major or compatible);
 * video files (isom, mp42, qt) have an 'ftyp' too and stay unknown. */
static pf_img_format sniff_ftyp(const uint8_t *b, size_t n)
{
    if (n < 16 || memcmp(b + 4, "ftyp", 4) != 0)
        return PF_FMT_UNKNOWN;
    uint64_t size = be32(b);
    if (size < 16 || size > n)
        size = n < 256 ? n : 256;   /* damaged or cut short: the brands present still say what it is */
    static const char *const avif[] = {"avif", "avis"};
    static const char *const heif[] = {"heic", "heix", "heim", "heis", "hevc", "hevx", "hevm", "hevs", "mif1",
                                       "msf1"};
    /* the major brand (offset 8), then the compatible ones (offset 16 on); any AV1 brand makes it AVIF
     * (an AVIF may name mif1 as its major brand) */
    pf_img_format f = PF_FMT_UNKNOWN;
    for (size_t off = 8; off + 4 <= size; off += off == 8 ? 8 : 4) {
        for (size_t i = 0; i < sizeof avif / sizeof avif[0]; i++)
            if (memcmp(b + off, avif[i], 4) == 0)
                return PF_FMT_AVIF;
        for (size_t i = 0; i < sizeof heif / sizeof heif[0]; i++)
            if (memcmp(b + off, heif[i], 4) == 0)
                f = PF_FMT_HEIF;
    }
    return f;
}

/* SVG and PDF are recognised only to say precisely what was refused. */
static int looks_like_svg(const uint8_t *b, size_t n)
{
    size_t lim = n < 1024 ? n : 1024;
    for (size_t i = 0; i + 4 <= lim; i++)
        if (memcmp(b + i, "<svg", 4) == 0)
            return 1;
    return 0;
}

pf_img_format pf_img_sniff(const uint8_t *b, size_t n)
{
    if (starts(b, n, "\xff\xd8\xff", 3))
        return PF_FMT_JPEG;
    if (starts(b, n, "\x89PNG\r\n\x1a\n", 8))
        return PF_FMT_PNG;
    if (starts(b, n, "GIF87a", 6) || starts(b, n, "GIF89a", 6))
        return PF_FMT_GIF;
    if (n >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0)
        return PF_FMT_WEBP;
    /* Pillow's TiffImagePlugin.PREFIXES: classic and BigTIFF, plus the two "invalid but seen" orders */
    if (starts(b, n, "II\x2a\x00", 4) || starts(b, n, "MM\x00\x2a", 4) || starts(b, n, "II\x2b\x00", 4) ||
        starts(b, n, "MM\x00\x2b", 4) || starts(b, n, "MM\x2a\x00", 4) || starts(b, n, "II\x00\x2a", 4))
        return PF_FMT_TIFF;
    if (starts(b, n, "BM", 2))
        return PF_FMT_BMP;
    if (n >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '6')
        return PF_FMT_PNM;
    pf_img_format iso = sniff_ftyp(b, n);
    if (iso != PF_FMT_UNKNOWN)
        return iso;
    if (starts(b, n, "\xff\x0a", 2) || starts(b, n, "\x00\x00\x00\x0cJXL \x0d\x0a\x87\x0a", 12))
        return PF_FMT_JXL;
    if (starts(b, n, "%PDF", 4))
        return PF_FMT_PDF;
    if (looks_like_svg(b, n))
        return PF_FMT_SVG;
    return PF_FMT_UNKNOWN;
}

const char *pf_img_format_name(pf_img_format f)
{
    switch (f) {
    case PF_FMT_JPEG: return "JPEG";
    case PF_FMT_PNG: return "PNG";
    case PF_FMT_GIF: return "GIF";
    case PF_FMT_WEBP: return "WebP";
    case PF_FMT_TIFF: return "TIFF";
    case PF_FMT_BMP: return "BMP";
    case PF_FMT_PNM: return "PNM";
    case PF_FMT_HEIF: return "HEIF";
    case PF_FMT_AVIF: return "AVIF";
    case PF_FMT_JXL: return "JPEG XL";
    case PF_FMT_SVG: return "SVG";
    case PF_FMT_PDF: return "PDF";
    case PF_FMT_UNKNOWN: break;
    }
    return "unknown";
}

/* ISO BMFF (HEIF, AVIF, the JPEG XL container): does a top-level box reach past the end of the data? */
static int boxes_cut_short(const uint8_t *b, size_t n)
{
    size_t off = 0;
    while (n - off >= 8) {
        uint64_t size = be32(b + off);
        if (size == 1) {   /* 64-bit size after the type */
            if (n - off < 16)
                return 1;
            size = (uint64_t)be32(b + off + 8) << 32 | be32(b + off + 12);
            if (size < 16)
                return 0;   /* malformed, not short: the loader says what is wrong */
        } else if (size == 0) {
            return 0;       /* the box runs to the end of the file */
        } else if (size < 8) {
            return 0;
        }
        if (size > n - off)
            return 1;
        off += (size_t)size;
    }
    return off != n;   /* a few bytes of a box header left */
}

int pf_img_looks_truncated(pf_img_format f, const uint8_t *b, size_t n)
{
    switch (f) {
    case PF_FMT_JPEG: {
        /* an intact file ends with EOI (FF D9); entropy data never holds FF D9 (FF is stuffed as FF 00) */
        size_t from = n > 4096 ? n - 4096 : 0;
        for (size_t i = from; i + 1 < n; i++)
            if (b[i] == 0xff && b[i + 1] == 0xd9)
                return 0;
        return 1;
    }
    case PF_FMT_PNG: {
        size_t off = 8;
        while (off + 12 <= n) {
            uint64_t clen = be32(b + off);
            if (memcmp(b + off + 4, "IEND", 4) == 0)
                return 0;
            if (clen > n - off - 12)
                return 1;
            off += 12 + (size_t)clen;
        }
        return 1;
    }
    case PF_FMT_HEIF:
    case PF_FMT_AVIF:
        return boxes_cut_short(b, n);
    case PF_FMT_JXL:
        return b[0] == 0 && boxes_cut_short(b, n);   /* a bare codestream has no end marker to look for */
    case PF_FMT_WEBP: {
        uint64_t riff = (uint64_t)b[4] | (uint64_t)b[5] << 8 | (uint64_t)b[6] << 16 | (uint64_t)b[7] << 24;
        return riff + 8 > n;
    }
    default:
        return 0;
    }
}

int pf_img_png_check(const uint8_t *b, size_t n, pf_img_errkind *kind, pf_err *err)
{
    size_t off = 8;
    for (;;) {
        if (n - off < 8) {
            *kind = PF_IMG_TRUNCATED;
            return pf_errf(err, "PNG ends before its image data");
        }
        uint64_t clen = be32(b + off);
        const uint8_t *type = b + off + 4;
        if (memcmp(type, "IDAT", 4) == 0)
            return 0; /* Pillow stops checking here: from IDAT on, libpng verifies */
        if (memcmp(type, "IEND", 4) == 0) {
            *kind = PF_IMG_CORRUPT;
            return pf_errf(err, "PNG has no image data (IEND before IDAT)");
        }
        if (n - off < 12 || clen > n - off - 12) {
            *kind = PF_IMG_TRUNCATED;
            return pf_errf(err, "PNG chunk %.4s is cut short", (const char *)type);
        }
        uLong crc = crc32(crc32(0L, Z_NULL, 0), type, (uInt)(clen + 4));
        if (crc != be32(b + off + 8 + clen)) {
            *kind = PF_IMG_CORRUPT;
            return pf_errf(err, "PNG chunk %.4s: CRC mismatch", (const char *)type);
        }
        off += 12 + (size_t)clen;
    }
}
