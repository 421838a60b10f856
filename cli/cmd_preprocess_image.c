/* paliflow preprocess-image: image files -> PaliGemma pixel_values tensors in one .safetensors file.
 *
 *   paliflow preprocess-image --size S [--autorotate] [--max-pixels N] [--threads N] --out OUT FILE...
 *
 * One F32 tensor [3, S, S] per file that decodes, keyed by the FILE argument exactly as given. Each file
 * that fails gets one stderr line with the FILE argument, the reason and its category; the others are
 * still written. Exit 0 if all succeeded, 1 if some failed, 2 on usage or output errors.
 * Results are kept as uint8 [S, S, 3] until the file is written (4x smaller than the float tensors); a
 * file named twice is processed and stored once.
 */
#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/optable.h"
#include "cli/commands.h"
#include "model/io/safetensors.h"
#include "image/image.h"

typedef struct item {
    const char *path;
    int duplicate; /* same path as an earlier argument */
    pf_img img;
    pf_img_errkind kind;
    pf_err err;
} item;

typedef struct job {
    item *items;
    size_t n;
    pf_img_params opts;
    atomic_size_t next;
} job;

typedef struct prep_cli {
    pf_img_params io;
    const char *out;
    int threads;
} prep_cli;

static void prep_init(void *obj)
{
    *(prep_cli *)obj = (prep_cli){.io = {.max_pixels = PF_IMG_DEFAULT_MAX_PIXELS}, .threads = 1};
}

#define T prep_cli
static const pf_opt g_rows[] = {
    {"size", 's', PF_OPT_INT, offsetof(T, io.size), 1, PF_IMG_MAX_SIZE, .flags = PF_OPT_REQUIRED | PF_OPT_NO_DEFAULT,
     .arg = "S", .help = "image size of the model (its vision_config.image_size: 224, 448, 896)"},
    {"out", 'o', PF_OPT_STR, offsetof(T, out), .flags = PF_OPT_NONEMPTY | PF_OPT_REQUIRED, .arg = "OUT",
     .help = "output .safetensors file (written atomically)"},
    PF_OPT_ROW_FLAG("autorotate", T, io.autorotate, 0,
                    "apply the EXIF orientation first (as transformers' load_image does)"),
    PF_OPT_ROW_U64("max-pixels", T, io.max_pixels, 1, INT64_MAX, 0, "N",
                   "refuse images with more than N pixels (by default Pillow's limit)"),
    {"threads", 'j', PF_OPT_INT, offsetof(T, threads), 1, 256, .arg = "N", .help = "decode N files at once"},
    PF_OPT_END,
};
#undef T

static const pf_optcmd g_cmd = {
    .name = "preprocess-image",
    .synopsis = "usage: paliflow preprocess-image --size S [--autorotate] [--max-pixels N] [--threads N] "
                "--out OUT.safetensors FILE...\n"
                "\n"
                "Decode image files and resize them exactly as Hugging Face's SiglipImageProcessor does for\n"
                "PaliGemma (bicubic to S x S, rescale 1/255, normalise mean 0.5 std 0.5), writing one F32 tensor\n"
                "[3, S, S] per file into OUT, keyed by the FILE argument as given.\n"
                "\n"
                "options:\n",
    .epilog = "\n"
              "Formats (by content, not name): JPEG, PNG, GIF (first frame), WebP, TIFF, BMP, PNM, HEIF/HEIC,\n"
              "AVIF, JPEG XL.\n"
              "Each file that fails gets one line on stderr naming it, the reason and a category (empty,\n"
              "not-a-file, truncated, corrupt, unsupported-format, too-many-pixels, io); the rest are still\n"
              "written. Exit status: 0 all succeeded, 1 some failed, 2 usage or output error.\n",
    .opts = g_rows,
    .size = sizeof(prep_cli),
    .init = prep_init,
    .operands = 1,
};

static void *worker(void *arg)
{
    job *j = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n)
            break;
        item *it = &j->items[i];
        if (it->duplicate)
            continue;
        if (!g_utf8_validate(it->path, -1, NULL) || strcmp(it->path, "__metadata__") == 0) {
            it->kind = PF_IMG_UNSUPPORTED;
            pf_errf(&it->err, "%s: file name cannot be a safetensors key (%s)", it->path,
                    strcmp(it->path, "__metadata__") == 0 ? "reserved name" : "not valid UTF-8");
            continue;
        }
        pf_img_load_file(it->path, &j->opts, &it->img, &it->kind, &it->err);
    }
    return NULL;
}

/* Stream the float tensor of one image: bytes [off, off + n) of float32 [3, S, S]. */
static int fill_pixels(void *ctx, uint8_t *dst, size_t off, size_t n, pf_err *err)
{
    const pf_img *img = ctx;
    if (off % sizeof(float) || n % sizeof(float))
        return pf_errf(err, "unaligned tensor chunk");
    float lut[256];
    for (int v = 0; v < 256; v++)
        lut[v] = pf_img_pixel_value((uint8_t)v);
    size_t plane = (size_t)img->size * (size_t)img->size;
    size_t e0 = off / sizeof(float), ne = n / sizeof(float);
    for (size_t k = 0; k < ne; k++) {
        size_t e = e0 + k, c = e / plane, i = e % plane;
        float f = lut[img->rgb[3 * i + c]];
        memcpy(dst + k * sizeof(float), &f, sizeof f);
    }
    return 0;
}

int cmd_preprocess_image(int argc, char **argv)
{
    const char *me = "paliflow preprocess-image";
    prep_cli o;
    prep_init(&o);
    int first;
    int pr = pf_opt_parse(&g_cmd, &o, argc, argv, &first, 0);
    if (pr)
        return pr == 1 ? 0 : 2;
    pf_img_params io = o.io;
    const char *out = o.out;
    uint64_t threads = (uint64_t)o.threads;
    if (!io.size || !out || first >= argc) {
        fprintf(stderr, "%s: %s\n", me, !io.size ? "--size is required" : !out ? "--out is required" : "no input FILE given");
        fprintf(stderr, "Run 'paliflow preprocess-image --help' for the options.\n");
        return 2;
    }
    pf_err err;
    if (pf_img_init(&err)) {
        fprintf(stderr, "%s: %s\n", me, err.msg);
        return 2;
    }
    size_t n = (size_t)(argc - first);
    item *items = calloc(n, sizeof *items);
    if (!items) {
        fprintf(stderr, "%s: out of memory\n", me);
        return 2;
    }
    GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);
    for (size_t i = 0; i < n; i++) {
        items[i].path = argv[first + (int)i];
        if (g_hash_table_contains(seen, items[i].path))
            items[i].duplicate = 1;
        else
            g_hash_table_add(seen, (gpointer)items[i].path);
    }
    g_hash_table_destroy(seen);

    job j = {.items = items, .n = n, .opts = io};
    atomic_init(&j.next, 0);
    if (threads > n)
        threads = n;
    pthread_t *tids = calloc(threads, sizeof *tids);
    size_t started = 0;
    for (size_t t = 0; tids && t + 1 < threads; t++)
        if (pthread_create(&tids[started], NULL, worker, &j) == 0)
            started++;
    worker(&j);
    for (size_t t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
    free(tids);

    size_t ok = 0, failed = 0;
    pf_st_entry *entries = calloc(n, sizeof *entries);
    for (size_t i = 0; i < n; i++) {
        item *it = &items[i];
        if (it->duplicate)
            continue;
        if (it->img.rgb) {
            pf_st_entry *e = &entries[ok++];
            e->name = it->path;
            e->dtype = PF_DT_F32;
            e->ndim = 3;
            e->shape[0] = 3;
            e->shape[1] = e->shape[2] = io.size;
            e->fill = fill_pixels;
            e->fill_ctx = &it->img;
        } else {
            failed++;
            fprintf(stderr, "%s: error: %s [%s]\n", me, it->err.msg, pf_img_errkind_name(it->kind));
        }
    }
    int rc = failed ? 1 : 0;
    if (!entries || pf_st_write(out, entries, ok, NULL, &err)) {
        fprintf(stderr, "%s: cannot write %s: %s\n", me, out, entries ? err.msg : "out of memory");
        rc = 2;
    } else {
        pf_debug("preprocess-image", "%s: %zu tensors [3,%d,%d] written, %zu files failed", out, ok, io.size,
                io.size, failed);
    }
    for (size_t i = 0; i < n; i++)
        pf_img_free(&items[i].img);
    free(entries);
    free(items);
    return rc;
}
