/* cpu.c - run-time CPU feature detection and the matmul precision probe (see cpu.h). */
#include "model/linear/cpu.h"

#include <cpuid.h>
#include <dnnl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/log.h"
#include "model/linear/dnnl_util.h"
#include "model/linear/precision_probe.h"

/* Linux >= 5.16 hands AMX tile data (XFEATURE 18) to a process only after it asks (arch_prctl
 * ARCH_REQ_XCOMP_PERM); before that, AMX instructions fault even where cpuid and XCR0 advertise them. */
#define PF_ARCH_GET_XCOMP_PERM 0x1022
#define PF_ARCH_REQ_XCOMP_PERM 0x1023
#define PF_XFEATURE_XTILEDATA 18

/* XCR0: which register states the OS saves on a context switch. A CPU may advertise AVX/AVX-512 in cpuid
 * while the OS has not enabled the wider registers (e.g. a VM, or a kernel booted with them off); the
 * instructions then fault, so every feature below needs both its cpuid bit and its XCR0 bits. */
static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

void pf_cpu_detect(pf_cpu_features *f)
{
    memset(f, 0, sizeof *f);
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d))
        return;
    unsigned max_leaf = a;
    memcpy(f->vendor, &b, 4);
    memcpy(f->vendor + 4, &d, 4);
    memcpy(f->vendor + 8, &c, 4);
    /* The brand string is only for logs and the probe cache key (precision_probe.c): same model, same result. */
    unsigned ext = __get_cpuid_max(0x80000000u, NULL);
    if (ext >= 0x80000004u) {
        unsigned *w = (unsigned *)(void *)f->brand;
        for (unsigned leaf = 0; leaf < 3; leaf++)
            __get_cpuid(0x80000002u + leaf, &w[leaf * 4], &w[leaf * 4 + 1], &w[leaf * 4 + 2], &w[leaf * 4 + 3]);
        f->brand[48] = '\0';
        /* trim the padding spaces some CPUs put around the brand string */
        char *s = f->brand;
        while (*s == ' ')
            s++;
        memmove(f->brand, s, strlen(s) + 1);
        for (size_t n = strlen(f->brand); n > 0 && f->brand[n - 1] == ' '; n--)
            f->brand[n - 1] = '\0';
    }
    __get_cpuid(1, &a, &b, &c, &d);
    bool osxsave = c & (1u << 27);
    f->sse41 = c & (1u << 19);
    bool avx = c & (1u << 28), fma = c & (1u << 12), f16c = c & (1u << 29);
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    /* XCR0 bits: 1-2 SSE/AVX state, 5-7 opmask and the upper ZMM halves/registers, 17-18 AMX tile config/data. */
    f->os_avx = (xcr0 & 0x6) == 0x6;
    f->os_avx512 = f->os_avx && (xcr0 & 0xe0) == 0xe0;
    f->os_amx = (xcr0 & 0x60000) == 0x60000;
    f->avx = avx && f->os_avx;
    f->fma = fma && f->os_avx;
    f->f16c = f16c && f->os_avx;
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        unsigned sub_max = a;
        f->avx2 = (b & (1u << 5)) && f->os_avx;
        f->avx512f = (b & (1u << 16)) && f->os_avx512;
        f->avx512dq = (b & (1u << 17)) && f->os_avx512;
        f->avx512bw = (b & (1u << 30)) && f->os_avx512;
        f->avx512vl = (b & (1u << 31)) && f->os_avx512;
        f->avx512_vnni = (c & (1u << 11)) && f->os_avx512;
        f->amx_bf16 = (d & (1u << 22)) && f->os_amx;
        f->amx_tile = (d & (1u << 24)) && f->os_amx;
        f->amx_int8 = (d & (1u << 25)) && f->os_amx;
        if (sub_max >= 1) {
            __cpuid_count(7, 1, a, b, c, d);
            f->avx_vnni = (a & (1u << 4)) && f->os_avx;
            f->avx512_bf16 = (a & (1u << 5)) && f->os_avx512;
        }
    }
    /* A tier is what our kernels are compiled for (kernels_avx512.c targets avx512f,bw,vl,dq,fma;
     * kernels_avx2.c avx2,fma): a CPU missing any one of those takes the tier below. */
    if (f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->fma)
        f->tier = PF_TIER_AVX512;
    else if (f->avx2 && f->fma)
        f->tier = PF_TIER_AVX2;
    else
        f->tier = PF_TIER_GENERIC;
    f->use_vnni512 = f->tier == PF_TIER_AVX512 && f->avx512_vnni;
    f->use_avx_vnni = f->tier >= PF_TIER_AVX2 && f->avx_vnni;
    f->use_bf16_512 = f->tier == PF_TIER_AVX512 && f->avx512_bf16;
    if (f->amx_tile) {
        /* Ask for the permission oneDNN's AMX kernels need (it asks too; asking twice is harmless), then read
         * what the kernel granted: a kernel without the call (before 5.16) or one refusing it leaves AMX off. */
        unsigned long perm = 0;
        (void)syscall(SYS_arch_prctl, PF_ARCH_REQ_XCOMP_PERM, (unsigned long)PF_XFEATURE_XTILEDATA);
        if (syscall(SYS_arch_prctl, PF_ARCH_GET_XCOMP_PERM, &perm) == 0)
            f->amx_permitted = (perm >> PF_XFEATURE_XTILEDATA) & 1u;
    }
}

const char *pf_cpu_tier_name(pf_cpu_tier t) { return pf_simd_tier_name(t); }

static pthread_once_t g_cpu_once = PTHREAD_ONCE_INIT;
static pf_cpu_features g_cpu;

/* PALIFLOW_MAX_ISA: cap our tier and oneDNN's dispatcher to the same level. The tier comes from base/simd.c,
 * which also drives the SIMD variants of our own functions (and warns about an unknown name): one cap for
 * every path. */
static void apply_cap(pf_cpu_features *f, const char *cap)
{
    struct {
        const char *name;
        bool vnni, bf16;
        dnnl_cpu_isa_t dnnl;
    } caps[] = {
        {"generic", false, false, dnnl_cpu_isa_sse41},
        {"avx2", false, false, dnnl_cpu_isa_avx2},
        {"avx2_vnni", true, false, dnnl_cpu_isa_avx2_vnni},
        {"avx512", false, false, dnnl_cpu_isa_avx512_core},
        {"avx512_vnni", true, false, dnnl_cpu_isa_avx512_core_vnni},
        {"avx512_bf16", true, true, dnnl_cpu_isa_avx512_core_bf16},
    };
    pf_cpu_tier tier;
    if (!pf_simd_cap_tier(cap, &tier))
        return;
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        if (strcasecmp(cap, caps[i].name) != 0)
            continue;
        if (f->tier > tier)
            f->tier = tier;
        f->use_vnni512 = f->use_vnni512 && caps[i].vnni && f->tier == PF_TIER_AVX512;
        f->use_avx_vnni = f->use_avx_vnni && caps[i].vnni && f->tier >= PF_TIER_AVX2;
        f->use_bf16_512 = f->use_bf16_512 && caps[i].bf16 && f->tier == PF_TIER_AVX512;
        f->cap = caps[i].name;
        dnnl_status_t s = dnnl_set_max_cpu_isa(caps[i].dnnl);
        if (s != dnnl_success)
            pf_warn("cpu", "PALIFLOW_MAX_ISA=%s: oneDNN refused the cap (%s)", cap, pf_dnnl_status_name(s));
        return;
    }
}

static void cpu_init(void)
{
    pf_cpu_detect(&g_cpu);
    (void)pf_simd_tier(); /* reads the cap for our SIMD variants; warns once if the name is unknown */
    const char *cap = getenv("PALIFLOW_MAX_ISA");
    if (cap && *cap)
        apply_cap(&g_cpu, cap);
}

const pf_cpu_features *pf_cpu(void)
{
    pthread_once(&g_cpu_once, cpu_init);
    return &g_cpu;
}

const char *pf_cpu_dnnl_isa_name(void)
{
    (void)pf_cpu();
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "other";
    }
}

bool pf_cpu_dnnl_int8_full_range(void)
{
    (void)pf_cpu();
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    /* The AVX-512 ISA values are bit supersets: avx512_core_vnni's bits are in bf16 and amx too. */
    return (isa & dnnl_cpu_isa_avx512_core_vnni) == dnnl_cpu_isa_avx512_core_vnni;
}

void pf_cpu_describe(char *buf, size_t len)
{
    const pf_cpu_features *f = pf_cpu();
    snprintf(buf, len, "%s: %s%s%s%s%s, oneDNN %s%s%s", f->brand[0] ? f->brand : f->vendor, pf_cpu_tier_name(f->tier),
             f->use_vnni512 ? " vnni" : "", f->use_avx_vnni ? " avx-vnni" : "", f->use_bf16_512 ? " bf16" : "",
             f->amx_tile ? (f->amx_permitted ? " amx" : " amx (not permitted by the kernel)") : "",
             pf_cpu_dnnl_isa_name(), f->cap ? ", capped by PALIFLOW_MAX_ISA=" : "",
             f->cap ? f->cap : "");
}

int pf_precision_parse(const char *s, pf_precision *out, pf_err *err)
{
    static const struct {
        const char *name;
        pf_precision p;
    } names[] = {{"auto", PF_PREC_AUTO}, {"fp32", PF_PREC_FP32}, {"f32", PF_PREC_FP32}, {"float32", PF_PREC_FP32},
                 {"bf16", PF_PREC_BF16}, {"bfloat16", PF_PREC_BF16}, {"int8", PF_PREC_INT8}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (s && strcasecmp(s, names[i].name) == 0) {
            *out = names[i].p;
            return 0;
        }
    return pf_errf(err, "precision '%s': unknown (use auto, fp32, bf16 or int8)", s ? s : "(null)");
}

const char *pf_precision_name(pf_precision p)
{
    switch (p) {
    case PF_PREC_AUTO: return "auto";
    case PF_PREC_FP32: return "fp32";
    case PF_PREC_BF16: return "bf16";
    case PF_PREC_INT8: return "int8";
    default: return "?";
    }
}

static pthread_once_t g_probe_once = PTHREAD_ONCE_INIT;
static pf_precision_support g_probe;

/* Ask oneDNN for the matmul we would really run, at a prefill-like shape with the layout left to it. Only
 * the primitive descriptor is created (nothing runs): what matters is whether oneDNN has a real (non `ref:`)
 * kernel for the precision on this CPU, since a `ref:` one is orders of magnitude slower. */
static void probe_one(pf_precision p)
{
    pf_dnnl_mm mm = {.prec = p, .m = 256, .k = 512, .n = 512, .ldx = 512, .ldy = 512, .bias = true};
    dnnl_primitive_desc_t pd;
    dnnl_status_t s = pf_dnnl_matmul_pd(&mm, &pd);
    if (s != dnnl_success) {
        snprintf(g_probe.impl[p], sizeof g_probe.impl[p], "%s", pf_dnnl_status_name(s));
        return;
    }
    const char *impl = pf_dnnl_impl(pd);
    snprintf(g_probe.impl[p], sizeof g_probe.impl[p], "%s", impl);
    g_probe.ok[p] = !pf_dnnl_impl_is_ref(impl);
    dnnl_primitive_desc_destroy(pd);
}

static void probe_init(void)
{
    const pf_cpu_features *f = pf_cpu();
    pf_err err;
    if (!pf_dnnl_engine(&err)) {
        for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++)
            snprintf(g_probe.impl[p], sizeof g_probe.impl[p], "no oneDNN engine");
        return;
    }
    for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++)
        probe_one((pf_precision)p);
    /* bf16 is "native" only where both the CPU and oneDNN's (possibly capped) dispatcher do bf16 dot
     * products; elsewhere oneDNN emulates it through fp32 and bf16 loses its speed advantage. */
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    g_probe.native_bf16 =
        (f->use_bf16_512 || f->amx_bf16) && (isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
    for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++)
        pf_debug("cpu", "oneDNN matmul %s: %s (%s)", pf_precision_name((pf_precision)p),
                 g_probe.ok[p] ? "ok" : "unsupported", g_probe.impl[p]);
}

const pf_precision_support *pf_precision_probe(void)
{
    pthread_once(&g_probe_once, probe_init);
    return &g_probe;
}

int pf_precision_resolve(pf_precision req, pf_precision *out, pf_err *err)
{
    const pf_precision_support *ps = pf_precision_probe();
    char cpu[256];
    if (req == PF_PREC_AUTO) {
        /* By measurement (precision_probe.h): the fastest precision that keeps its contract here. */
        pf_err perr;
        const pf_probe_table *t = pf_probe_table_get(&perr);
        char why[512];
        if (t && pf_probe_choose(t, out, why, sizeof why, &perr) == 0) {
            pf_debug("cpu", "precision %s", why);
            return 0;
        }
        pf_warn("cpu", "precision auto: the probe gave no answer (%s); choosing by instruction set", perr.msg);
        if (ps->ok[PF_PREC_BF16] && ps->native_bf16)
            *out = PF_PREC_BF16;
        else if (ps->ok[PF_PREC_INT8])
            *out = PF_PREC_INT8;
        else if (ps->ok[PF_PREC_FP32])
            *out = PF_PREC_FP32;
        else {
            pf_cpu_describe(cpu, sizeof cpu);
            return pf_errf(err, "precision auto: oneDNN has no usable matmul on this CPU (%s; fp32: %s)", cpu,
                           ps->impl[PF_PREC_FP32]);
        }
        return 0;
    }
    if (req <= PF_PREC_AUTO || req >= PF_PREC_COUNT)
        return pf_errf(err, "precision %d: invalid", (int)req);
    if (!ps->ok[req]) {
        pf_cpu_describe(cpu, sizeof cpu);
        char avail[64] = "";
        for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++)
            if (ps->ok[p])
                snprintf(avail + strlen(avail), sizeof avail - strlen(avail), "%s%s", avail[0] ? ", " : "",
                         pf_precision_name((pf_precision)p));
        return pf_errf(err, "precision %s: not supported on this CPU (%s): oneDNN matmul gives %s; available: %s",
                       pf_precision_name(req), cpu, ps->impl[req], avail[0] ? avail : "none");
    }
    *out = req;
    return 0;
}
