/* fuzz_image - libFuzzer over the image decode path (pf_img_load_buffer: sniffing incl. the ISO BMFF box
 * walk of HEIF/AVIF/JPEG XL, libvips loaders with fail_on, our GIF/BMP/PNM readers, colour rules, EXIF
 * orientation, the streaming resampler).
 *
 *   cmake -S . -B build-fuzz -DPALIFLOW_FUZZ=ON -DCMAKE_C_COMPILER=clang-14 -DPALIFLOW_SANITIZE=ON \
 *         -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link && cmake --build build-fuzz -j2 --target fuzz_image
 *   (fuzzer-no-link instruments the libraries too, so libFuzzer sees their coverage; SANITIZE adds
 *   ASan/UBSan to them)
 *   mkdir -p fuzz-corpus/image
 *   build-fuzz/fuzz/fuzz_image -max_total_time=600 -rss_limit_mb=4096 fuzz-corpus/image \
 *       ../shared/golden/images ../shared/golden/images/bad
 *
 * The output size and autorotate come from the input length, so one corpus covers several resampler
 * shapes. The pixel limit is lowered to 4 megapixels so the fuzzer spends its time on parsing, not on
 * decoding legitimately huge images (the limit check itself is the same code at any value). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "image/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        if (pf_img_init(NULL))
            abort();
        ready = 1;
    }
    pf_img_params o = {.size = 1 + (int)(size % 61), .autorotate = (int)(size & 1), .max_pixels = 1u << 22};
    pf_img img;
    pf_img_errkind kind;
    pf_err err;
    if (pf_img_load_buffer(data, size, "fuzz", &o, &img, &kind, &err) == 0) {
        float *px = malloc((size_t)o.size * (size_t)o.size * 3 * sizeof *px);
        if (px)
            pf_img_to_pixels(img.rgb, o.size, px);
        free(px);
        pf_img_free(&img);
    } else if (kind == PF_IMG_OK || kind == PF_IMG_INTERNAL) {
        /* a failure must say why; INTERNAL means out of memory or a bug */
        abort();
    }
    return 0;
}
