/* engine_ctx.c - the per-thread engine context: oneDNN primitives, scratch, KV pool, image cache. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/engine_internal.h"

#define DEFAULT_IMAGE_CACHE (64u << 20)

int pf_engine_ctx_create(const pf_engine *e, pf_engine_ctx **out, pf_err *err)
{
    *out = NULL;
    pf_engine_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return pf_errf(err, "engine context: out of memory");
    c->e = e;
    if (pf_mm_ctx_create(e->mm, &c->mm, err) != 0) {
        free(c);
        return -1;
    }
    pf_eng_kvpool_init(&c->kv, e);
    c->img.limit = DEFAULT_IMAGE_CACHE;
    *out = c;
    return 0;
}

void pf_engine_ctx_free(pf_engine_ctx *c)
{
    if (!c)
        return;
    pf_mm_ctx_destroy(c->mm);
    for (int i = 0; i < SCR_COUNT; i++)
        free(c->scr[i]);
    pf_eng_kvpool_free(&c->kv);
    pf_eng_imgcache_free(&c->img);
    free(c);
}

void *pf_eng_scratch(pf_engine_ctx *c, int i, size_t bytes, pf_err *err)
{
    if (bytes <= c->scr_cap[i])
        return c->scr[i];
    size_t want = (bytes + bytes / 8 + 63) & ~(size_t)63;
    free(c->scr[i]);
    c->scr[i] = aligned_alloc(64, want);
    c->scr_cap[i] = c->scr[i] ? want : 0;
    if (!c->scr[i])
        pf_errf(err, "engine: out of memory for %zu MB of activations", bytes >> 20);
    return c->scr[i];
}

const pf_engine *pf_engine_ctx_engine(const pf_engine_ctx *c) { return c->e; }
