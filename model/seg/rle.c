/* rle.c - see rle.h. */
#include "model/seg/rle.h"

#include <stdlib.h>
#include <string.h>

#include "base/grow.h"

void pf_rle_free(pf_rle *r)
{
    free(r->counts);
    r->counts = NULL;
    r->n = 0;
}

static int push(pf_rle *r, size_t *cap, uint64_t v)
{
    if (PF_GROW(r->counts, *cap, r->n, 1, 64))
        return -1;
    r->counts[r->n++] = v;
    return 0;
}

int pf_rle_from_window(int width, int height, int x0, int y0, int ww, int wh, const uint8_t *win, pf_rle *out,
                       pf_err *err)
{
    memset(out, 0, sizeof *out);
    if (width < 1 || height < 1)
        return pf_errf(err, "rle: image size %dx%d", width, height);
    if (win && (ww < 0 || wh < 0 || x0 < 0 || y0 < 0 || x0 > width - ww || y0 > height - wh))
        return pf_errf(err, "rle: window %dx%d at (%d, %d) outside the %dx%d image", ww, wh, x0, y0, width, height);
    out->width = width;
    out->height = height;
    size_t cap = 0;
    uint64_t run = 0;
    int cur = 0;   /* runs start with zeros */
    if (win && ww > 0 && wh > 0) {
        for (int x = 0; x < width; x++) {
            int in_x = x >= x0 && x < x0 + ww;
            if (!in_x) {   /* a whole column of zeros */
                if (cur) {
                    if (push(out, &cap, run))
                        goto oom;
                    run = 0;
                    cur = 0;
                }
                run += (uint64_t)height;
                continue;
            }
            for (int y = 0; y < height; y++) {
                int v = y >= y0 && y < y0 + wh && win[(size_t)(y - y0) * ww + (x - x0)] != 0;
                if (v != cur) {
                    if (push(out, &cap, run))
                        goto oom;
                    run = 0;
                    cur = v;
                }
                run++;
            }
        }
    } else {
        run = (uint64_t)width * (uint64_t)height;
    }
    if (push(out, &cap, run))
        goto oom;
    return 0;
oom:
    pf_rle_free(out);
    return pf_errf(err, "rle: out of memory");
}

int pf_rle_encode(const uint8_t *mask, int width, int height, pf_rle *out, pf_err *err)
{
    return pf_rle_from_window(width, height, 0, 0, width, height, mask, out, err);
}

int pf_rle_decode(const pf_rle *r, uint8_t **mask, pf_err *err)
{
    *mask = NULL;
    if (r->width < 1 || r->height < 1)
        return pf_errf(err, "rle: size [%d, %d]", r->height, r->width);
    uint64_t total = (uint64_t)r->width * (uint64_t)r->height, sum = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (r->counts[i] > total - sum)
            return pf_errf(err, "rle: counts exceed h*w = %llu at run %zu", (unsigned long long)total, i);
        sum += r->counts[i];
    }
    if (sum != total)
        return pf_errf(err, "rle: counts sum to %llu, want h*w = %llu", (unsigned long long)sum,
                       (unsigned long long)total);
    uint8_t *m = malloc((size_t)total);
    if (!m)
        return pf_errf(err, "rle: out of memory");
    uint64_t pos = 0;
    for (size_t i = 0; i < r->n; i++)
        for (uint64_t k = 0; k < r->counts[i]; k++, pos++) {
            uint64_t x = pos / (uint64_t)r->height, y = pos % (uint64_t)r->height;
            m[y * (uint64_t)r->width + x] = (uint8_t)(i & 1);
        }
    *mask = m;
    return 0;
}
