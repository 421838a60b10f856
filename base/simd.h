/* simd.h - the SIMD tiers, their target attributes, and the one dispatch mechanism for functions that exist in
 * several SIMD variants.
 *
 * Tiers: generic (the compiler's x86-64 baseline, SSE2), AVX2 (+ FMA), AVX-512 (F + BW + VL + DQ). Each
 * implies the ones below. pf_simd_tier() is this CPU's tier capped by PALIFLOW_MAX_ISA (read once; the same
 * names model/cpu.c accepts, which also caps oneDNN), so PALIFLOW_MAX_ISA=avx2 runs the AVX2 variant of every
 * function below on an AVX-512 machine - what an AVX2-only machine runs.
 *
 * Dispatch. A function with SIMD variants is defined with one of two macros:
 *   PF_SIMD_CLONES(linkage, ret, name, (params), (args)) { body }
 *       the body is written once (plain C the compiler vectorizes) and compiled three times: as is, with
 *       PF_SIMD_VEC_AVX2 and with PF_SIMD_VEC_AVX512;
 *   PF_SIMD_VARIANTS(linkage, ret, name, (params), (args), f_generic, f_avx2, f_avx512);
 *       hand-written variants (intrinsics), each called from a wrapper with that tier's PF_SIMD_TARGET_*.
 * Either defines `name` itself as a dispatcher: the first call binds the variant for pf_simd_tier() (the
 * highest one written at or below it) into the function's pf_simd_fn record; later calls cost one atomic load
 * and an indirect call. PF_SIMD_PICK(name) hands out the bound variant as a typed pointer, for callers that
 * keep it across an inner loop. Linkage is `static` or `extern`.
 *
 * Why not GCC's target_clones: its resolver runs in the dynamic loader, before main, and picks by CPU alone,
 * so the cap could not reach those functions and the *_avx2 tests ran their AVX-512 clones.
 *
 * Evidence: every variant notes that it ran (a relaxed load of a flag, stored once), and every dispatched
 * function registers itself at start-up (a constructor), so pf_simd_list / pf_simd_report say, per function,
 * which variant is bound and which ran. tests/simd checks that under each cap every function ran exactly the
 * capped variant.
 *
 * The auto-vectorized variants (PF_SIMD_VEC_*) are compiled as the target_clones were: AVX2 without FMA,
 * AVX-512F alone. Without FMA, GNU C's default -ffp-contract=fast has nothing to contract and vectorizing
 * changes no result (no reassociation without -ffast-math). AVX-512F brings its own FMA instructions, so in
 * files built with the default the AVX-512 variant contracts a*b+c (as before); the reference oracle
 * (model/ref_ops.c) is built with -ffp-contract=off and gives the same bits at every tier (tests/simd checks).
 * BW/VL/DQ stay out of PF_SIMD_VEC_AVX512: with them GCC mixes ymm and zmm code in the row norms, measured
 * 11% slower on the engine's residual norm (Zen 5), and the resampler is no faster. Hand-written variants
 * use the tier's whole ISA (PF_SIMD_TARGET_*), FMA included.
 *
 * Only on x86-64 with GCC or clang (PF_SIMD_MULTI); elsewhere, or with -DPF_NO_CLONES, only the generic
 * variant exists and the dispatch still works (and reports it).
 */
#ifndef PF_BASE_SIMD_H
#define PF_BASE_SIMD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* Vector tiers our kernels are written for (each implies the ones below). */
typedef enum pf_cpu_tier {
    PF_TIER_GENERIC = 0, /* plain C (compiler's SSE2) */
    PF_TIER_AVX2 = 1,    /* AVX2 + FMA */
    PF_TIER_AVX512 = 2,  /* AVX-512 F + BW + VL + DQ */
} pf_cpu_tier;
#define PF_TIER_COUNT 3

/* "generic", "avx2", "avx512". */
const char *pf_simd_tier_name(pf_cpu_tier t);
/* What this CPU (and the OS's saved register state) allows, ignoring PALIFLOW_MAX_ISA. */
pf_cpu_tier pf_simd_hw_tier(void);
/* The tier a PALIFLOW_MAX_ISA value caps to (generic|avx2|avx2_vnni|avx512|avx512_vnni|avx512_bf16, any
 * case); false if NAME is none of them. */
bool pf_simd_cap_tier(const char *name, pf_cpu_tier *out);
/* pf_simd_hw_tier() capped by PALIFLOW_MAX_ISA, read at the first call (an unknown value is ignored, with a
 * warning). Thread-safe. */
pf_cpu_tier pf_simd_tier(void);

/* ---- target attributes: the tier's instruction sets ---- */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(PF_NO_CLONES)
#define PF_SIMD_MULTI 1
#define PF_SIMD_ISA_AVX2 "avx2,fma"
#define PF_SIMD_ISA_AVX512 "avx512f,avx512bw,avx512vl,avx512dq,fma"
/* hand-written code: the whole tier (add e.g. ",avxvnni" for an extension the caller checked) */
#define PF_SIMD_TARGET_AVX2 __attribute__((target(PF_SIMD_ISA_AVX2)))
#define PF_SIMD_TARGET_AVX512 __attribute__((target(PF_SIMD_ISA_AVX512)))
/* auto-vectorized code: AVX2 without FMA, AVX-512F alone (see above) */
#define PF_SIMD_VEC_AVX2 __attribute__((target("avx2")))
#define PF_SIMD_VEC_AVX512 __attribute__((target("avx512f")))
#define PF_SIMD_IF_MULTI(...) __VA_ARGS__
#else
#define PF_SIMD_MULTI 0
#define PF_SIMD_IF_MULTI(...)
#endif

/* ---- the registry ---- */

typedef void (*pf_simd_void_fn)(void); /* any variant, stored untyped (C allows the round trip) */

/* One dispatched function. Defined by the macros below; the fields are theirs and simd.c's. */
typedef struct pf_simd_fn {
    const char *name;
    pf_simd_void_fn variant[PF_TIER_COUNT]; /* NULL: not written for that tier */
    _Atomic(pf_simd_void_fn) bound;         /* NULL until the first call */
    atomic_uchar ran[PF_TIER_COUNT];
    struct pf_simd_fn *next;
} pf_simd_fn;

void pf_simd_register(pf_simd_fn *f);
/* Bind F to its variant for pf_simd_tier() (idempotent) and return it. */
pf_simd_void_fn pf_simd_bind(pf_simd_fn *f);

static inline pf_simd_void_fn pf_simd_pick(pf_simd_fn *f)
{
    pf_simd_void_fn p = atomic_load_explicit(&f->bound, memory_order_acquire);
    return p ? p : pf_simd_bind(f);
}

/* Load first: after the first call the flag's cache line stays shared between the threads. */
static inline void pf_simd_ran(pf_simd_fn *f, pf_cpu_tier t)
{
    if (!atomic_load_explicit(&f->ran[t], memory_order_relaxed))
        atomic_store_explicit(&f->ran[t], 1, memory_order_relaxed);
}

typedef struct pf_simd_status {
    const char *name;
    int bound;         /* the bound variant's tier, -1 if never called */
    unsigned ran_mask; /* bit t: variant of tier t ran */
    unsigned written;  /* bit t: a variant of tier t exists */
} pf_simd_status;

/* Fill up to MAX entries (registration order is unspecified); returns how many functions are registered. */
size_t pf_simd_list(pf_simd_status *out, size_t max);
/* One line per function, "name: bound avx2, ran avx2" (ran: the tiers joined by '+', or "-"), sorted by
 * name; cut at LEN. */
void pf_simd_report(char *buf, size_t len);

/* The variant of the function registered as NAME written for tier T exactly (NULL if none): for tests and
 * benchmarks that compare tiers in one process. Calling a tier above pf_simd_hw_tier() faults (SIGILL);
 * calling one marks it as ran. */
pf_simd_void_fn pf_simd_variant(const char *name, pf_cpu_tier t);

/* ---- the macros ---- */

#define PF_SIMD_PICK(fn) ((__typeof__(&fn##_v_generic))pf_simd_pick(&fn##_simd))

/* One variant: notes that it ran, then runs IMPL, inlined and compiled for ATTR. (`return f(...)` of a void f is
 * valid GNU C, which lets one macro serve void and non-void functions.) */
#define PF_SIMD_WRAP_(attr, tier, ret, fn, suffix, params, args, impl)                                               \
    attr static ret fn##_v_##suffix params                                                                           \
    {                                                                                                                \
        pf_simd_ran(&fn##_simd, tier);                                                                               \
        return impl args;                                                                                            \
    }

/* The variants; the record, registered by a constructor so that pf_simd_list also shows functions never called;
 * the dispatcher (`unused`: callers that only take PF_SIMD_PICK never call it). */
#define PF_SIMD_DEFINE_(linkage, ret, fn, params, args, f_generic, f_avx2, f_avx512, attr2, attr5)                   \
    static pf_simd_fn fn##_simd;                                                                                     \
    PF_SIMD_WRAP_(, PF_TIER_GENERIC, ret, fn, generic, params, args, f_generic)                                      \
    PF_SIMD_IF_MULTI(PF_SIMD_WRAP_(attr2, PF_TIER_AVX2, ret, fn, avx2, params, args, f_avx2)                         \
                         PF_SIMD_WRAP_(attr5, PF_TIER_AVX512, ret, fn, avx512, params, args, f_avx512))              \
    static pf_simd_fn fn##_simd = {                                                                                  \
        .name = #fn,                                                                                                 \
        .variant = {(pf_simd_void_fn)fn##_v_generic PF_SIMD_IF_MULTI(, (pf_simd_void_fn)fn##_v_avx2,                 \
                                                                       (pf_simd_void_fn)fn##_v_avx512)},             \
    };                                                                                                               \
    __attribute__((constructor)) static void fn##_simd_register(void) { pf_simd_register(&fn##_simd); }              \
    __attribute__((unused)) linkage ret fn params { return PF_SIMD_PICK(fn) args; }

/* The body that follows is compiled once per tier (always inlined into each variant). */
#define PF_SIMD_CLONES(linkage, ret, fn, params, args)                                                               \
    static inline __attribute__((always_inline)) ret fn##_body params;                                               \
    PF_SIMD_DEFINE_(linkage, ret, fn, params, args, fn##_body, fn##_body, fn##_body,                                 \
                    PF_SIMD_VEC_AVX2, PF_SIMD_VEC_AVX512)                                                            \
    static inline __attribute__((always_inline)) ret fn##_body params

#define PF_SIMD_VARIANTS(linkage, ret, fn, params, args, f_generic, f_avx2, f_avx512)                                \
    PF_SIMD_DEFINE_(linkage, ret, fn, params, args, f_generic, f_avx2, f_avx512, PF_SIMD_TARGET_AVX2,                \
                    PF_SIMD_TARGET_AVX512)

#endif
