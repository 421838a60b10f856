/* simd.c - the tier this process runs at, and the registry of dispatched functions (see simd.h). */
#include "base/simd.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"

const char *pf_simd_tier_name(pf_cpu_tier t)
{
    switch (t) {
    case PF_TIER_AVX512: return "avx512";
    case PF_TIER_AVX2: return "avx2";
    default: return "generic";
    }
}

/* libgcc's CPU model (the one target_clones resolvers read) already masks each feature by the register state
 * the OS saves (xgetbv), as model/cpu.c's own cpuid reading does; the two agree (tests/simd checks it). */
pf_cpu_tier pf_simd_hw_tier(void)
{
#if PF_SIMD_MULTI
    __builtin_cpu_init(); /* needed if called before the constructors ran; cheap */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma"))
        return PF_TIER_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return PF_TIER_AVX2;
#endif
    return PF_TIER_GENERIC;
}

bool pf_simd_cap_tier(const char *name, pf_cpu_tier *out)
{
    static const struct {
        const char *name;
        pf_cpu_tier tier;
    } caps[] = {
        {"generic", PF_TIER_GENERIC}, {"avx2", PF_TIER_AVX2},           {"avx2_vnni", PF_TIER_AVX2},
        {"avx512", PF_TIER_AVX512},   {"avx512_vnni", PF_TIER_AVX512}, {"avx512_bf16", PF_TIER_AVX512},
    };
    for (size_t i = 0; name && i < sizeof caps / sizeof caps[0]; i++)
        if (strcasecmp(name, caps[i].name) == 0) {
            *out = caps[i].tier;
            return true;
        }
    return false;
}

static pthread_once_t g_tier_once = PTHREAD_ONCE_INIT;
static pf_cpu_tier g_tier;

static void tier_init(void)
{
    g_tier = pf_simd_hw_tier();
    const char *cap = getenv("PALIFLOW_MAX_ISA");
    if (!cap || !*cap)
        return;
    pf_cpu_tier t;
    if (!pf_simd_cap_tier(cap, &t)) {
        pf_warn("cpu", "PALIFLOW_MAX_ISA=%s: unknown (use generic|avx2|avx2_vnni|avx512|avx512_vnni|avx512_bf16); "
                "ignored", cap);
        return;
    }
    if (g_tier > t)
        g_tier = t;
}

pf_cpu_tier pf_simd_tier(void)
{
    pthread_once(&g_tier_once, tier_init);
    return g_tier;
}

/* ---- registry ---- */

static pthread_mutex_t g_reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pf_simd_fn *g_reg;

void pf_simd_register(pf_simd_fn *f)
{
    pthread_mutex_lock(&g_reg_lock);
    f->next = g_reg;
    g_reg = f;
    pthread_mutex_unlock(&g_reg_lock);
}

pf_simd_void_fn pf_simd_bind(pf_simd_fn *f)
{
    int t = (int)pf_simd_tier();
    while (t > 0 && !f->variant[t]) /* not written for this tier: the best one below */
        t--;
    /* Threads racing here compute the same pointer: no lock needed. */
    atomic_store_explicit(&f->bound, f->variant[t], memory_order_release);
    return f->variant[t];
}

pf_simd_void_fn pf_simd_variant(const char *name, pf_cpu_tier t)
{
    pf_simd_void_fn p = NULL;
    pthread_mutex_lock(&g_reg_lock);
    for (pf_simd_fn *f = g_reg; f && !p; f = f->next)
        if (strcmp(f->name, name) == 0 && (unsigned)t < PF_TIER_COUNT)
            p = f->variant[t];
    pthread_mutex_unlock(&g_reg_lock);
    return p;
}

static int tier_of(const pf_simd_fn *f, pf_simd_void_fn p)
{
    for (int t = 0; p && t < PF_TIER_COUNT; t++)
        if (f->variant[t] == p)
            return t;
    return -1;
}

size_t pf_simd_list(pf_simd_status *out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&g_reg_lock);
    for (pf_simd_fn *f = g_reg; f; f = f->next, n++) {
        if (n >= max)
            continue;
        pf_simd_status *s = &out[n];
        s->name = f->name;
        s->bound = tier_of(f, atomic_load_explicit(&f->bound, memory_order_acquire));
        s->ran_mask = s->written = 0;
        for (int t = 0; t < PF_TIER_COUNT; t++) {
            s->ran_mask |= atomic_load_explicit(&f->ran[t], memory_order_relaxed) ? 1u << t : 0;
            s->written |= f->variant[t] ? 1u << t : 0;
        }
    }
    pthread_mutex_unlock(&g_reg_lock);
    return n;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const pf_simd_status *)a)->name, ((const pf_simd_status *)b)->name);
}

void pf_simd_report(char *buf, size_t len)
{
    if (!len)
        return;
    buf[0] = '\0';
    size_t n = pf_simd_list(NULL, 0);
    pf_simd_status *s = n ? calloc(n, sizeof *s) : NULL;
    if (n && !s) {
        snprintf(buf, len, "(out of memory listing %zu functions)\n", n);
        return;
    }
    size_t total = pf_simd_list(s, n); /* registration happens at start-up, but never read past s */
    n = total < n ? total : n;
    qsort(s, n, sizeof *s, by_name);
    size_t used = 0;
    for (size_t i = 0; i < n && used < len; i++) {
        char ran[32] = "";
        for (int t = 0; t < PF_TIER_COUNT; t++)
            if (s[i].ran_mask & (1u << t))
                snprintf(ran + strlen(ran), sizeof ran - strlen(ran), "%s%s", ran[0] ? "+" : "",
                         pf_simd_tier_name((pf_cpu_tier)t));
        int w = snprintf(buf + used, len - used, "%s: bound %s, ran %s\n", s[i].name,
                         s[i].bound < 0 ? "-" : pf_simd_tier_name((pf_cpu_tier)s[i].bound), ran[0] ? ran : "-");
        used += w > 0 ? (size_t)w : 0;
    }
    free(s);
}
