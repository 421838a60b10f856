/* engine_ctx.c - the per-thread engine context: oneDNN primitives, scratch, KV pool, image cache. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "base/file.h"
#include "base/log.h"
#include "model/engine/engine_internal.h"

#define DEFAULT_IMAGE_CACHE (64u << 20)
#define HUGE_SCRATCH ((size_t)2 << 20)

static void scratch_release(pf_engine_ctx *c, int i)
{
    if (c->scr_mapped[i])
        munmap(c->scr[i], c->scr_cap[i]);
    else
        free(c->scr[i]);
    c->scr[i] = NULL;
    c->scr_cap[i] = 0;
    c->scr_mapped[i] = false;
}

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
    const char *pe = getenv("PALIFLOW_ENGINE_PROFILE");
    c->profile = pe && *pe && strcmp(pe, "0") != 0;
    c->prof_t = pf_now();
    *out = c;
    return 0;
}

static void prof_print(const pf_engine_ctx *c)
{
    static const char *names[PROF_COUNT] = {"vision linears", "vision attention", "vision norms/gelu/other",
                                            "embeddings", "text norms", "text qkv", "text rope + kv store",
                                            "text attention", "text o_proj", "text gate_up", "text gelu*up",
                                            "text down", "final norm + lm_head"};
    double total = 0;
    for (int i = 0; i < PROF_COUNT; i++)
        total += c->prof[i];
    if (total <= 0)
        return;
    for (int i = 0; i < PROF_COUNT; i++)
        pf_info("engine", "profile: %-24s %8.3f s %5.1f%%", names[i], c->prof[i], 100 * c->prof[i] / total);
}

void pf_engine_ctx_profile_report(pf_engine_ctx *c)
{
    if (!c->profile)
        return;
    prof_print(c);
    memset(c->prof, 0, sizeof c->prof);
}

void pf_eng_prof_mark(pf_engine_ctx *c, int k)
{
    if (!c->profile)
        return;
    double t = pf_now();
    if (k >= 0)
        c->prof[k] += t - c->prof_t;
    c->prof_t = t;
}

void pf_engine_ctx_free(pf_engine_ctx *c)
{
    if (!c)
        return;
    if (c->profile)
        prof_print(c);
    pf_mm_ctx_destroy(c->mm);
    for (int i = 0; i < SCR_COUNT; i++)
        scratch_release(c, i);
    pf_eng_kvpool_free(&c->kv);
    pf_eng_imgcache_free(&c->img);
    free(c);
}

void *pf_eng_scratch(pf_engine_ctx *c, int i, size_t bytes, pf_err *err)
{
    if (bytes <= c->scr_cap[i])
        return c->scr[i];
    size_t want = (bytes + bytes / 8 + 63) & ~(size_t)63;
    scratch_release(c, i);
    if (want >= HUGE_SCRATCH) {
        want = (want + HUGE_SCRATCH - 1) & ~(size_t)(HUGE_SCRATCH - 1);
        void *p = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) {
            madvise(p, want, MADV_HUGEPAGE);
            c->scr[i] = p;
            c->scr_mapped[i] = true;
        }
    } else {
        c->scr[i] = aligned_alloc(64, want);
    }
    c->scr_cap[i] = c->scr[i] ? want : 0;
    if (!c->scr[i])
        pf_errf(err, "engine: out of memory for %zu MB of activations", bytes >> 20);
    return c->scr[i];
}

const pf_engine *pf_engine_ctx_engine(const pf_engine_ctx *c) { return c->e; }
