/* image.h - image file -> PaliGemma pixel input, exactly as Hugging Face's SiglipImageProcessor.
 *
 * What it reproduces (transformers 4.47 SiglipImageProcessor fed with Pillow 9.4's Image.open + convert
 * ("RGB"), the recipe of ../shared/golden/images/README.md):
 *   1. decode, format sniffed from the content (never the file name): JPEG, PNG, WebP, TIFF, HEIF/HEIC,
 *      AVIF and JPEG XL (no Pillow reference for the last three: libvips' own decoding) with
 *      libvips' trusted loaders called by name (every other loader blocked), GIF (first frame), BMP and
 *      PNM with our own small readers that follow Pillow where libvips differs or only has untrusted
 *      loaders; truncated or corrupt data is an error (libvips fail_on, PNG chunk CRCs, our readers'
 *      bounds checks); the pixel count is checked from the header (GIF: the logical screen) before any
 *      pixel is decoded, default Pillow's MAX_IMAGE_PIXELS;
 *   2. colour rules of Pillow's convert("RGB"): alpha dropped without compositing, palette looked up,
 *      1-bit -> 0/255, grey replicated, 16-bit -> v >> 8 (also for 16-bit grey, a documented deviation
 *      from Pillow's clipping), CMYK -> RGB with Pillow's integer formula, first GIF frame, ICC profiles
 *      ignored, EXIF orientation ignored unless opts->autorotate (then ImageOps.exif_transpose first),
 *      except that, as in Pillow, a TIFF's Orientation tag is always applied (and twice with autorotate);
 *   3. resize to S x S ignoring the aspect ratio with our port of Pillow's bicubic resampler
 *      (image/resample.h, bit-exact), streaming: no full-resolution float image, and on the plain
 *      (non-rotated) path not even a full-resolution 8-bit copy (rows are resampled as libvips decodes
 *      them; an applied orientation keeps the decoded 8-bit image, bounded by the pixel limit);
 *   4. pixel_values = (u8 / 255.0f - 0.5f) / 0.5f as float32 [3, S, S] (pf_img_to_pixels).
 *
 * Wire format between workers: the preprocess worker sends the uint8 [S, S, 3] (HWC, RGB) image of step 3,
 * not the float tensor. It is 4x smaller and loses nothing, since step 4 is a fixed map of each byte
 * (the inference side calls pf_img_to_pixels). proto/PROTOCOL.md documents the message.
 *
 * Thread safety: call pf_img_init once (it is idempotent and thread-safe); every other function may be
 * called from any number of threads at once. Errors fill pf_err with one line that names the file (or
 * the `name` given for buffers) and the reason, and set *kind. pf_img_init also sets process-wide
 * libvips options (no operation cache, concurrency 1, loaders blocked) and glibc malloc thresholds
 * (decode buffers stay in the heap; see image.c).
 *
 * Known deviations from Pillow 9.4, all on the refusing side: a PNG whose IDAT CRC is wrong is refused
 * (Pillow does not check IDAT CRCs; libpng does); pixel counts between Pillow's warning and error
 * thresholds are refused; 32-bit integer, float and signed TIFF/PNM samples are refused as unsupported.
 */
#ifndef PF_WORKERS_IMAGE_H
#define PF_WORKERS_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/file.h"

#define PF_IMG_DEFAULT_MAX_PIXELS 178956970ull /* Pillow's Image.MAX_IMAGE_PIXELS */

/* A decode memory budget in bytes, shared by the threads of a process that decode images (the preprocess
 * worker's --decode-memory-mb). Before its pixels are decoded, each image reserves what decoding it will
 * hold at most (estimated from its header: the input bytes, the decoder's rows or, for layouts that cannot
 * be streamed such as interlaced PNG or progressive JPEG, the whole decoded frame, and the stored image
 * when an orientation is applied) and gives it back when done. An image that needs more than the whole
 * budget is refused (PF_IMG_TOO_MANY_PIXELS, the message says how much it needs); one that fits waits
 * until enough of the budget is free. So N threads together stay within the budget, whatever the images,
 * and the same image gets the same verdict whatever else is decoding. Thread-safe. */
typedef struct pf_img_budget pf_img_budget;
pf_img_budget *pf_img_budget_new(uint64_t bytes); /* NULL: out of memory */
void pf_img_budget_free(pf_img_budget *b);
uint64_t pf_img_budget_total(const pf_img_budget *b);
uint64_t pf_img_budget_used(pf_img_budget *b); /* reserved now (tests, metrics) */

typedef struct pf_img_params {
    int size;            /* S: the model's image size from its config (224/448/896/any), never hard-coded */
    int autorotate;      /* apply EXIF orientation first (opt-in) */
    uint64_t max_pixels; /* 0 = default 178956970 (Pillow's MAX_IMAGE_PIXELS); checked from the header */
    pf_img_budget *budget; /* NULL: no memory budget (only max_pixels bounds an image) */
} pf_img_params;

/* Bytes decoding an image with this header will hold at most (what the budget is charged): exposed for the
 * tests and the worker's --help figures. len = the encoded size. */
uint64_t pf_img_decode_estimate(uint64_t len, int width, int height, uint64_t frame_bytes, int oriented);

typedef enum pf_img_errkind {
    PF_IMG_OK,
    PF_IMG_EMPTY,           /* 0-byte file or buffer */
    PF_IMG_NOT_A_FILE,      /* directory, device, fifo, symlink loop */
    PF_IMG_TRUNCATED,       /* data ends before the image does */
    PF_IMG_CORRUPT,         /* damaged or invalid data (bad CRC, broken entropy data, zero width, ...) */
    PF_IMG_UNSUPPORTED,     /* not an image format we accept (text, SVG, PDF, ...) or an unusable layout */
    PF_IMG_TOO_MANY_PIXELS, /* width * height above max_pixels (decompression bomb) */
    PF_IMG_IO,              /* the file could not be read (missing, permissions, I/O error) */
    PF_IMG_INTERNAL         /* out of memory or a bug */
} pf_img_errkind;

typedef struct pf_img {
    int size;                    /* S */
    int orig_width, orig_height; /* of the decoded image (after autorotate if on): detection boxes map here */
    uint8_t *rgb;                /* S*S*3, HWC, RGB: the exact uint8 image Pillow's resize gives */
} pf_img;

/* Once per process (thread-safe, idempotent): starts libvips, blocks every loader but the trusted ones. */
int pf_img_init(pf_err *err);

/* Largest file pf_img_load_file reads (into memory: files are never mapped, since a mapped file truncated
 * by someone else kills the process with SIGBUS). */
#define PF_IMG_MAX_FILE_BYTES ((size_t)2 << 30)

/* Decode and resize one file. On failure returns -1, out is left empty (rgb NULL), *kind says why. */
int pf_img_load_file(const char *path, const pf_img_params *opts, pf_img *out, pf_img_errkind *kind, pf_err *err);
/* The same for bytes in memory (e.g. received over the wire); name is used in messages only. */
int pf_img_load_buffer(const void *buf, size_t len, const char *name, const pf_img_params *opts, pf_img *out,
                       pf_img_errkind *kind, pf_err *err);
void pf_img_free(pf_img *img);
/* The category of a file that could not be read (pf_read_file_safe's fault): a FIFO, device or directory is
 * not-a-file; a file above the size limit is too-many-pixels (too big to decode, like a bomb); a missing
 * file, an I/O error or a file changing while read is io (worth another try). */
pf_img_errkind pf_img_file_fault_kind(pf_file_fault fault);

/* "ok", "empty", "not-a-file", "truncated", "corrupt", "unsupported-format", "too-many-pixels", "io",
 * "internal" (the categories of ../shared/golden/images/bad/README.md). */
const char *pf_img_errkind_name(pf_img_errkind k);

/* u8 HWC -> float32 CHW [3,S,S], exact: (u8/255.0f - 0.5f)/0.5f via a 256-entry LUT. */
void pf_img_to_pixels(const uint8_t *rgb, int size, float *chw);
/* The LUT itself: value of byte v after rescale + normalise (bit-identical to transformers). */
float pf_img_pixel_value(uint8_t v);

/* Largest S accepted (keeps S*S*3 and the float tensor far from overflow). */
#define PF_IMG_MAX_SIZE 8192

#endif
