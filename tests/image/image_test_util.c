#include "image_test_util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <vips/vips.h>

const bad_case g_bad_cases[] = {
    {"empty.jpg", PF_IMG_EMPTY},
    {"directory.png", PF_IMG_NOT_A_FILE},
    {"truncated_half.jpg", PF_IMG_TRUNCATED},
    {"truncated_half.png", PF_IMG_TRUNCATED},
    {"garbage_middle.jpg", PF_IMG_CORRUPT},
    {"bad_crc.png", PF_IMG_CORRUPT},
    {"text_named.jpg", PF_IMG_UNSUPPORTED},
    {"bomb_65000x65000.png", PF_IMG_TOO_MANY_PIXELS},
    {"bomb_60000x60000.jpg", PF_IMG_TOO_MANY_PIXELS},
    {"bomb_screen.gif", PF_IMG_TOO_MANY_PIXELS},
    {"image.svg", PF_IMG_UNSUPPORTED},
    {"xxe.svg", PF_IMG_UNSUPPORTED},
    {"doc.pdf", PF_IMG_UNSUPPORTED},
    {"zero_width.png", PF_IMG_CORRUPT},
    {"tile_huge.tif", PF_IMG_CORRUPT},
    {"pixels_240mp.png", PF_IMG_TOO_MANY_PIXELS},
};
const size_t g_bad_count = sizeof g_bad_cases / sizeof g_bad_cases[0];

size_t golden_cases(golden_case **out)
{
    json_error_t jerr;
    json_t *m = json_load_file(IMG_DIR "/expected/manifest.json", 0, &jerr);
    *out = NULL;
    if (!m)
        return 0;
    size_t cap = 256, n = 0;
    golden_case *cs = malloc(cap * sizeof *cs);
    const char *name;
    json_t *v;
    json_object_foreach(m, name, v) {
        for (int ar = 0; ar < 2; ar++) {
            json_t *sizes = json_object_get(v, ar ? "autorotate_sizes" : "sizes");
            size_t i;
            json_t *s;
            json_array_foreach(sizes, i, s) {
                if (n == cap)
                    cs = realloc(cs, (cap *= 2) * sizeof *cs);
                snprintf(cs[n].name, sizeof cs[n].name, "%s", name);
                cs[n].size = (int)json_integer_value(s);
                cs[n].autorotate = ar;
                n++;
            }
        }
    }
    json_decref(m);
    *out = cs;
    return n;
}

uint8_t *golden_expected(const golden_case *c)
{
    char path[512];
    snprintf(path, sizeof path, IMG_DIR "/expected/%s%s.%d.png", c->name, c->autorotate ? ".autorotate" : "",
             c->size);
    VipsImage *im = vips_image_new_from_file(path, NULL);
    if (!im)
        return NULL;
    size_t n = 0;
    uint8_t *px = NULL;
    if (im->Bands == 3 && im->BandFmt == VIPS_FORMAT_UCHAR && im->Xsize == c->size && im->Ysize == c->size)
        px = vips_image_write_to_memory(im, &n);
    g_object_unref(im);
    if (px && n != (size_t)c->size * c->size * 3) {
        g_free(px);
        px = NULL;
    }
    return px; /* g_malloc'd: g_free (== free with the system allocator) */
}

void diff_stats(const uint8_t *a, const uint8_t *b, size_t n, int *max, double *mean)
{
    int mx = 0;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        int d = a[i] > b[i] ? a[i] - b[i] : b[i] - a[i];
        if (d > mx)
            mx = d;
        sum += d;
    }
    *max = mx;
    *mean = n ? sum / (double)n : 0;
}

const char *make_symlink_loop(void)
{
    static char path[256];
    char dir[] = "/tmp/pf_img_loop_XXXXXX";
    if (!mkdtemp(dir))
        return NULL;
    snprintf(path, sizeof path, "%s/loop.jpg", dir);
    if (symlink("loop.jpg", path) != 0)
        return NULL;
    return path;
}

void remove_symlink_loop(const char *path)
{
    if (!path)
        return;
    char dir[256];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    unlink(path);
    if (slash) {
        *slash = '\0';
        rmdir(dir);
    }
}
