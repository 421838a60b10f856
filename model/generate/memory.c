/* memory.c - memory need from shapes, the process's budget, the load-time check (memory.h). */
#include "model/generate/memory.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/engine/engine.h"

/* Copy, cut to the destination (messages name paths; a very long one is shortened, not refused). */
static void copy_str(char *dst, size_t len, const char *src)
{
    size_t n = strnlen(src, len - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static uint64_t linear_bytes(uint64_t n, uint64_t k, pf_precision p, int reference)
{
    if (reference || p == PF_PREC_FP32 || p == PF_PREC_AUTO)
        return 4 * n * k;
    if (p == PF_PREC_BF16)
        return 2 * n * k;
    return n * k + 8 * n; /* s8 weights + f32 scale + i32 row sum per output row */
}

void pf_mem_estimate(const pf_config *c, pf_precision p, int reference, size_t sequences, size_t text_tokens,
                     pf_mem_need *out)
{
    memset(out, 0, sizeof *out);
    const pf_vision_config *v = &c->vision;
    const pf_text_config *t = &c->text;
    uint64_t Dv = (uint64_t)v->hidden, Iv = (uint64_t)v->intermediate, P = (uint64_t)v->num_patches;
    uint64_t patch_k = (uint64_t)v->channels * (uint64_t)v->patch_size * (uint64_t)v->patch_size;
    uint64_t D = (uint64_t)t->hidden, I = (uint64_t)t->intermediate, V = (uint64_t)t->vocab_size;
    uint64_t Q = (uint64_t)t->heads * (uint64_t)t->head_dim, KV = (uint64_t)t->kv_heads * (uint64_t)t->head_dim;
    uint64_t w = 0, f32 = 0;
    /* vision tower */
    w += linear_bytes(Dv, patch_k, p, reference);
    f32 += Dv + P * Dv;
    w += (uint64_t)v->layers * (linear_bytes(3 * Dv, Dv, p, reference) + linear_bytes(Dv, Dv, p, reference) +
                                linear_bytes(Iv, Dv, p, reference) + linear_bytes(Dv, Iv, p, reference));
    f32 += (uint64_t)v->layers * (4 * Dv + 3 * Dv + Iv + Dv + 4 * Dv) + 2 * Dv;
    /* projector */
    w += linear_bytes(D, Dv, p, reference);
    f32 += D;
    /* decoder */
    uint64_t norms = t->kind == PF_TEXT_GEMMA2 ? 4 : 2;
    w += (uint64_t)t->layers * (linear_bytes(Q + 2 * KV, D, p, reference) + linear_bytes(D, Q, p, reference) +
                                linear_bytes(2 * I, D, p, reference) + linear_bytes(D, I, p, reference));
    f32 += (uint64_t)t->layers * norms * D + D;
    /* LM head (the engine converts the tied embedding once more); the reference keeps the embedding in f32 */
    w += linear_bytes(V, D, p, reference);
    out->weights = w + 4 * f32;
    /* KV cache: whole pages */
    uint64_t tokens = P + (uint64_t)text_tokens;
    tokens = (tokens + PF_ENGINE_PAGE - 1) / PF_ENGINE_PAGE * PF_ENGINE_PAGE;
    out->kv = (uint64_t)sequences * tokens * (uint64_t)t->layers * 2 * KV * 4;
    /* activations of one prefill row */
    uint64_t chunk = P < 256 ? P : 256, tchunk = tokens < 256 ? tokens : 256;
    uint64_t vis = 4 * P * Dv + chunk * Iv + P * Dv;
    uint64_t txt = tokens * (3 * D + Q + 2 * KV) + tchunk * 2 * I + V;
    out->activations = 4 * (vis > txt ? vis : txt);
    out->overhead = PF_MEM_OVERHEAD;
    out->total = out->weights + out->kv + out->activations + out->overhead;
}

void pf_mem_format(uint64_t bytes, char *buf, size_t len)
{
    if (bytes < 1000000000ull)
        snprintf(buf, len, "%.0f MB", (double)bytes / 1e6);
    else
        snprintf(buf, len, "%.1f GB", (double)bytes / 1e9);
}

/* /proc and /sys files report size 0: read them up to a cap with stdio (NULL if unreadable). */
static char *read_small(const char *path, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = malloc(cap + 1);
    size_t n = buf ? fread(buf, 1, cap, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

/* "max", or a decimal byte count, from a cgroup file; 0 = no limit or unreadable. */
static uint64_t read_limit(const char *path)
{
    char *text = read_small(path, 4096);
    if (!text)
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    uint64_t out = (end != text && !errno && (*end == '\n' || *end == '\0')) ? (uint64_t)v : 0;
    free(text);
    /* cgroup v1 reports "no limit" as a huge page-rounded number (LONG_MAX & ~4095). */
    return out >= (1ull << 60) ? 0 : out;
}

uint64_t pf_mem_cgroup_limit(const char *cgroup_text, const char *sys_root, char *source, size_t len)
{
    char *text = strdup(cgroup_text);
    if (!text || strlen(sys_root) >= 1024) {
        free(text);
        return 0;
    }
    uint64_t best = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char path[4096];
        const char *rel = NULL, *leaf = NULL, *ctl = "";
        if (!strncmp(line, "0::", 3)) {
            rel = line + 3;
            leaf = "memory.max";
        } else {
            char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
            if (c1 && c2 && (size_t)(c2 - c1 - 1) == 6 && !strncmp(c1 + 1, "memory", 6)) {
                rel = c2 + 1;
                ctl = "/memory";
                leaf = "memory.limit_in_bytes";
            }
        }
        if (!rel || strlen(rel) >= 2048)
            continue;
        /* Walk from the process's own cgroup up to the root: a parent's limit binds too. */
        char dir[2048];
        snprintf(dir, sizeof dir, "%s", strcmp(rel, "/") ? rel : "");
        for (;;) {
            snprintf(path, sizeof path, "%s%s%s/%s", sys_root, ctl, dir, leaf);
            uint64_t l = read_limit(path);
            if (l && (!best || l < best)) {
                best = l;
                copy_str(source, len, path);
            }
            char *slash = strrchr(dir, '/');
            if (!slash)
                break;
            *slash = '\0';
        }
    }
    free(text);
    return best;
}

/* This process's cgroup limit (0: none). */
static uint64_t cgroup_limit(char *source, size_t len)
{
    char *text = read_small("/proc/self/cgroup", 64 << 10);
    uint64_t l = text ? pf_mem_cgroup_limit(text, "/sys/fs/cgroup", source, len) : 0;
    free(text);
    return l;
}

static uint64_t mem_available(void)
{
    char *text = read_small("/proc/meminfo", 64 << 10);
    if (!text)
        return 0;
    uint64_t kb = 0;
    const char *m = strstr(text, "MemAvailable:");
    if (!m)
        m = strstr(text, "MemTotal:"); /* kernels before 3.14 */
    if (m)
        kb = strtoull(strchr(m, ':') + 1, NULL, 10);
    free(text);
    return kb * 1024;
}

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno || s[0] == '-')
        return -1;
    int shift = 0;
    if (*end == 'K' || *end == 'k')
        shift = 10, end++;
    else if (*end == 'M' || *end == 'm')
        shift = 20, end++;
    else if (*end == 'G' || *end == 'g')
        shift = 30, end++;
    else if (*end == 'T' || *end == 't')
        shift = 40, end++;
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

int pf_mem_budget(uint64_t *bytes, char *source, size_t source_len, pf_err *err)
{
    const char *env = getenv("PALIFLOW_MEMORY_BUDGET");
    if (env && *env) {
        if (parse_size(env, bytes) != 0)
            return pf_errf(err, "PALIFLOW_MEMORY_BUDGET='%.64s': want bytes, or a number with K, M, G or T", env);
        snprintf(source, source_len, "PALIFLOW_MEMORY_BUDGET");
        return 0;
    }
    char cg[256] = "";
    uint64_t limit = cgroup_limit(cg, sizeof cg), avail = mem_available();
    if (limit && (!avail || limit < avail)) {
        *bytes = limit;
        copy_str(source, source_len, "cgroup limit ");
        copy_str(source + strlen(source), source_len - strlen(source), cg);
    } else if (avail) {
        *bytes = avail;
        snprintf(source, source_len, "MemAvailable in /proc/meminfo");
    } else {
        return pf_errf(err, "memory budget: neither a cgroup limit nor /proc/meminfo could be read");
    }
    return 0;
}

int pf_mem_check(const pf_config *c, pf_precision p, int reference, pf_err *err)
{
    uint64_t budget;
    char source[300], need_s[32], budget_s[32];
    if (pf_mem_budget(&budget, source, sizeof source, err) != 0)
        return -1;
    pf_mem_need need;
    pf_mem_estimate(c, p, reference, 1, PF_MEM_TEXT_TOKENS, &need);
    if (need.total <= budget)
        return 0;
    pf_mem_format(need.total, need_s, sizeof need_s);
    pf_mem_format(budget, budget_s, sizeof budget_s);
    char fits[160] = "";
    for (int q = PF_PREC_FP32; q < PF_PREC_COUNT; q++) {
        pf_mem_need n2;
        pf_mem_estimate(c, (pf_precision)q, 0, 1, PF_MEM_TEXT_TOKENS, &n2);
        if (n2.total <= budget) {
            char s[32];
            pf_mem_format(n2.total, s, sizeof s);
            snprintf(fits + strlen(fits), sizeof fits - strlen(fits), "%s--precision %s (%s)", fits[0] ? ", " : "",
                     pf_precision_name((pf_precision)q), s);
        }
    }
    char ws[32], kvs[32];
    pf_mem_format(need.weights, ws, sizeof ws);
    pf_mem_format(need.kv + need.activations + need.overhead, kvs, sizeof kvs);
    return pf_errf(err,
                   "not enough memory for %s %s: needs %s (weights %s + KV cache, activations and overhead %s) but "
                   "%s may be used (%s); %s%s; or --no-memory-check to load anyway",
                   reference ? "the reference backend at" : "precision", reference ? "fp32" : pf_precision_name(p),
                   need_s, ws, kvs, budget_s, source, fits[0] ? "would fit: " : "no precision fits",
                   fits[0] ? fits : "");
}
