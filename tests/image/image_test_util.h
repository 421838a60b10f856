/* image_test_util.h - shared helpers of the image tests: golden manifest, expected PNGs, bad-file table. */
#ifndef PF_TESTS_IMAGE_TEST_UTIL_H
#define PF_TESTS_IMAGE_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "image/image.h"

#define IMG_DIR PF_GOLDEN_DIR "/images"

/* One golden comparison: image name, size, autorotate. */
typedef struct golden_case {
    char name[128];
    int size;
    int autorotate;
} golden_case;

/* All cases of expected/manifest.json (sizes and autorotate_sizes). Returns count, fills *out (malloc). */
size_t golden_cases(golden_case **out);

/* Expected uint8 S*S*3 image for a case (decoded from expected/<name>[.autorotate].<S>.png); malloc'd. */
uint8_t *golden_expected(const golden_case *c);

/* Max and mean |a - b| over n bytes. */
void diff_stats(const uint8_t *a, const uint8_t *b, size_t n, int *max, double *mean);

/* The hostile files of bad/README.md with the category each must get. */
typedef struct bad_case {
    const char *name;
    pf_img_errkind kind;
} bad_case;
extern const bad_case g_bad_cases[];
extern const size_t g_bad_count;

/* Make DIR/loop.jpg -> loop.jpg (a symlink loop) in a fresh temp dir; returns the path (static buffer). */
const char *make_symlink_loop(void);
void remove_symlink_loop(const char *path);

#endif
