/* engine_kv.c - the KV cache: pages of PF_ENGINE_PAGE tokens (every layer's K and V) from a per-context pool.
 *
 * Pages are made in chunks (anonymous mappings, transparent huge pages) when the free list runs dry, or up
 * front with pf_engine_ctx_reserve_kv, and go back to the free list when a sequence ends: sequences join and
 * leave at every step without allocating, and memory is bounded by the most tokens ever alive at once.
 * Layout of a page: [layer][K block: PAGE x kv_dim][V block: PAGE x kv_dim], f32.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "model/engine/engine_internal.h"

#define CHUNK_PAGES 16

int pf_eng_kvpool_init(eng_kvpool *p, const pf_engine *e)
{
    memset(p, 0, sizeof *p);
    const pf_text_config *t = &e->m->cfg.text;
    p->kv_dim = (size_t)t->kv_heads * (size_t)t->head_dim;
    p->layer_floats = 2 * (size_t)PF_ENGINE_PAGE * p->kv_dim;
    p->page_floats = (size_t)t->layers * p->layer_floats;
    return 0;
}

void pf_eng_kvpool_free(eng_kvpool *p)
{
    for (size_t i = 0; i < p->n_chunks; i++)
        munmap(p->chunks[i], p->chunk_bytes[i]);
    free(p->chunks);
    free(p->chunk_bytes);
    free(p->free_pages);
    memset(p, 0, sizeof *p);
}

int pf_eng_kvpool_grow(eng_kvpool *p, size_t pages, pf_err *err)
{
    if (pages == 0)
        return 0;
    size_t page_bytes = p->page_floats * sizeof(float);
    if (pages > ((size_t)1 << 40) / page_bytes)
        return pf_errf(err, "KV cache: %zu pages of %zu bytes is absurd", pages, page_bytes);
    size_t bytes = pages * page_bytes;
    if (p->n_chunks == p->cap_chunks) {
        size_t cap = p->cap_chunks ? 2 * p->cap_chunks : 16;
        void **c = realloc(p->chunks, cap * sizeof *c);
        if (c)
            p->chunks = c;
        size_t *cb = c ? realloc(p->chunk_bytes, cap * sizeof *cb) : NULL;
        if (!c || !cb)
            return pf_errf(err, "KV cache: out of memory");
        p->chunk_bytes = cb;
        p->cap_chunks = cap;
    }
    if (p->pages_made + pages > p->cap_free) { /* room for every page ever made: all may be freed */
        size_t cap = 2 * (p->pages_made + pages);
        float **f = realloc(p->free_pages, cap * sizeof *f);
        if (!f)
            return pf_errf(err, "KV cache: out of memory");
        p->free_pages = f;
        p->cap_free = cap;
    }
    void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return pf_errf(err, "KV cache: cannot map %zu MB for %zu pages", bytes >> 20, pages);
    madvise(mem, bytes, MADV_HUGEPAGE);
    p->chunks[p->n_chunks] = mem;
    p->chunk_bytes[p->n_chunks++] = bytes;
    /* pushed in reverse so pages are handed out in address order */
    for (size_t i = pages; i-- > 0;)
        p->free_pages[p->n_free++] = (float *)mem + i * p->page_floats;
    p->pages_made += pages;
    return 0;
}

int pf_engine_ctx_reserve_kv(pf_engine_ctx *c, size_t tokens, pf_err *err)
{
    size_t need = (tokens + PF_ENGINE_PAGE - 1) / PF_ENGINE_PAGE;
    return need > c->kv.n_free ? pf_eng_kvpool_grow(&c->kv, need - c->kv.n_free, err) : 0;
}

size_t pf_engine_ctx_kv_bytes(const pf_engine_ctx *c) { return c->kv.pages_made * c->kv.page_floats * sizeof(float); }

pf_engine_seq *pf_engine_seq_create(pf_engine_ctx *c, size_t capacity, pf_err *err)
{
    if (capacity == 0 || capacity > ((size_t)1 << 24)) {
        pf_errf(err, "KV cache: capacity of %zu tokens is outside [1, 2^24]", capacity);
        return NULL;
    }
    size_t np = (capacity + PF_ENGINE_PAGE - 1) / PF_ENGINE_PAGE;
    pf_engine_seq *s = calloc(1, sizeof *s);
    float **pages = calloc(np, sizeof *pages);
    if (!s || !pages) {
        free(s);
        free(pages);
        pf_errf(err, "KV cache: out of memory");
        return NULL;
    }
    if (np > c->kv.n_free &&
        pf_eng_kvpool_grow(&c->kv, np - c->kv.n_free > CHUNK_PAGES ? np - c->kv.n_free : CHUNK_PAGES, err) != 0) {
        free(s);
        free(pages);
        return NULL;
    }
    for (size_t i = 0; i < np; i++)
        pages[i] = c->kv.free_pages[--c->kv.n_free];
    s->pages = pages;
    s->npages = np;
    s->cap = capacity;
    return s;
}

void pf_engine_seq_free(pf_engine_ctx *c, pf_engine_seq *s)
{
    if (!s)
        return;
    /* n_free + npages <= pages_made <= cap_free */
    for (size_t i = s->npages; i-- > 0;)
        c->kv.free_pages[c->kv.n_free++] = s->pages[i];
    free(s->pages);
    free(s);
}

size_t pf_engine_seq_len(const pf_engine_seq *s) { return s->len; }

int pf_engine_seq_copy(pf_engine_ctx *c, pf_engine_seq *dst, const pf_engine_seq *src, pf_err *err)
{
    if (dst->cap < src->len)
        return pf_errf(err, "KV cache: copy of %zu tokens into a sequence of %zu", src->len, dst->cap);
    size_t used = (src->len + PF_ENGINE_PAGE - 1) / PF_ENGINE_PAGE;
    for (size_t i = 0; i < used; i++)
        memcpy(dst->pages[i], src->pages[i], c->kv.page_floats * sizeof(float));
    dst->len = src->len;
    return 0;
}
