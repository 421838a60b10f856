/* engine_imgcache.c - image features kept for reuse, keyed by a 128-bit hash (XXH3) of the pixel values:
 * several prompts about one image (caption + OCR + detect...) run the vision tower once. LRU within a byte
 * budget; an entry larger than the budget is never kept. */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "base/grow.h"
#include "model/engine/engine_internal.h"

void pf_eng_imgcache_hash(const float *pixels, size_t floats, uint64_t h[2])
{
    XXH128_hash_t x = XXH3_128bits(pixels, floats * sizeof(float));
    h[0] = x.low64;
    h[1] = x.high64;
}

const float *pf_eng_imgcache_get(eng_imgcache *c, const uint64_t h[2], size_t floats)
{
    for (size_t i = 0; i < c->n; i++) {
        eng_img_entry *e = &c->v[i];
        if (e->h[0] == h[0] && e->h[1] == h[1] && e->floats == floats) {
            e->last_use = ++c->clock;
            c->hits++;
            return e->feats;
        }
    }
    return NULL;
}

static void evict(eng_imgcache *c, size_t i)
{
    c->bytes -= c->v[i].floats * sizeof(float);
    free(c->v[i].feats);
    c->v[i] = c->v[--c->n];
}

void pf_eng_imgcache_put(eng_imgcache *c, const uint64_t h[2], const float *feats, size_t floats)
{
    size_t bytes = floats * sizeof(float);
    if (bytes > c->limit)
        return;
    while (c->n > 0 && c->bytes + bytes > c->limit) {
        size_t old = 0;
        for (size_t i = 1; i < c->n; i++)
            if (c->v[i].last_use < c->v[old].last_use)
                old = i;
        evict(c, old);
    }
    if (PF_GROW(c->v, c->cap, c->n, 1, 8))
        return; /* a cache: failing to keep an entry is harmless */
    float *copy = malloc(bytes);
    if (!copy)
        return;
    memcpy(copy, feats, bytes);
    c->v[c->n++] = (eng_img_entry){.h = {h[0], h[1]}, .feats = copy, .floats = floats, .last_use = ++c->clock};
    c->bytes += bytes;
}

void pf_eng_imgcache_free(eng_imgcache *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->v[i].feats);
    free(c->v);
    memset(c, 0, sizeof *c);
}

void pf_engine_ctx_set_image_cache(pf_engine_ctx *c, size_t bytes)
{
    c->img.limit = bytes;
    while (c->img.n > 0 && c->img.bytes > bytes)
        evict(&c->img, c->img.n - 1);
}

void pf_engine_ctx_image_stats(const pf_engine_ctx *c, size_t *hits, size_t *computed)
{
    *hits = c->img.hits;
    *computed = c->img.computed;
}
