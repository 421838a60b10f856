/* precision_probe.c - measure each matmul precision on this CPU, cache the table, choose (precision_probe.h). */
#include "model/linear/precision_probe.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/file.h"
#include "base/log.h"
#include "model/linear/mm.h"

#ifndef PALIFLOW_VERSION
#define PALIFLOW_VERSION "dev"
#endif

/* Timing: best of at most PROBE_REPS rounds after one warm-up, stopping early once PROBE_BUDGET_S is spent
 * (a slow precision on a loaded machine must not stall the load). */
#define PROBE_REPS 9
#define PROBE_BUDGET_S 0.5

double pf_probe_tolerance(pf_precision p)
{
    switch (p) {
    case PF_PREC_FP32: return 1e-5;
    case PF_PREC_BF16: return 1e-2;
    case PF_PREC_INT8: return 5e-2;
    default: return 0;
    }
}

/* Copy s into dst, replacing the characters the cache file uses as separators. */
static void clean_copy(char *dst, size_t len, const char *s)
{
    size_t n = strnlen(s, len - 1); /* messages are cut, on purpose, to the table's field width */
    memcpy(dst, s, n);
    dst[n] = '\0';
    for (char *p = dst; *p; p++)
        if (*p == '\t' || *p == '\n' || *p == '\r')
            *p = ' ';
}

void pf_probe_key(char *buf, size_t len)
{
    const pf_cpu_features *f = pf_cpu();
    char raw[PF_PROBE_KEY_MAX];
    snprintf(raw, sizeof raw, "%s|%s|%s|paliflow %s", f->brand[0] ? f->brand : f->vendor, pf_cpu_dnnl_isa_name(),
             pf_cpu_tier_name(f->tier), PALIFLOW_VERSION);
    clean_copy(buf, len, raw);
}

int pf_probe_choose(const pf_probe_table *t, pf_precision *out, char *why, size_t why_len, pf_err *err)
{
    /* From the most exact to the least: a later one must beat the current pick by the margin. */
    static const pf_precision order[] = {PF_PREC_FP32, PF_PREC_BF16, PF_PREC_INT8};
    pf_precision best = PF_PREC_AUTO;
    char reasons[512] = "";
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        pf_precision p = order[i];
        const pf_probe_row *r = &t->row[p];
        const char *no = NULL;
        char buf[160];
        if (!r->supported)
            no = "not supported";
        else if (!(r->gflops > 0) || !isfinite(r->gflops))
            no = "no measured rate";
        else if (!(r->rel_err <= pf_probe_tolerance(p))) {
            snprintf(buf, sizeof buf, "error %.2g above its %.0e contract", r->rel_err, pf_probe_tolerance(p));
            no = buf;
        }
        if (no) {
            snprintf(reasons + strlen(reasons), sizeof reasons - strlen(reasons), "%s%s: %s", reasons[0] ? "; " : "",
                     pf_precision_name(p), no);
            continue;
        }
        if (best == PF_PREC_AUTO || r->gflops > t->row[best].gflops * PF_PROBE_MARGIN)
            best = p;
    }
    if (best == PF_PREC_AUTO)
        return pf_errf(err, "precision auto: no precision qualifies on this CPU (%s)", reasons);
    *out = best;
    if (why && why_len)
        snprintf(why, why_len, "auto -> %s: %.0f GFLOP/s (fp32 %.0f, bf16 %.0f, int8 %.0f; a less exact precision "
                 "must be %.0f%% faster)%s%s",
                 pf_precision_name(best), t->row[best].gflops, t->row[PF_PREC_FP32].gflops,
                 t->row[PF_PREC_BF16].gflops, t->row[PF_PREC_INT8].gflops, (PF_PROBE_MARGIN - 1) * 100,
                 reasons[0] ? "; excluded: " : "", reasons);
    return 0;
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return *s;
}

static float unit_rand(uint64_t *s) { return (float)((double)(xorshift(s) >> 11) / 9007199254740992.0 * 2.0 - 1.0); }

/* One precision's GEMM through pf_linear, weights converted as the engine converts them at load. */
typedef struct probe_run {
    pf_mm_engine *e;
    pf_linear *l;
    pf_mm_ctx *c;
    float *y;
    double best;
} probe_run;

static void run_free(probe_run *r)
{
    pf_mm_ctx_destroy(r->c);
    pf_linear_destroy(r->l);
    pf_mm_engine_destroy(r->e);
    free(r->y);
    memset(r, 0, sizeof *r);
}

static int run_setup(pf_precision p, const float *w, probe_run *run, pf_probe_row *r, pf_err *err)
{
    pf_mm_params o = {.precision = p};
    run->best = INFINITY;
    run->y = malloc((size_t)PF_PROBE_M * PF_PROBE_N * sizeof(float));
    if (!run->y)
        return pf_errf(err, "precision probe: out of memory");
    return pf_mm_engine_create(&o, &run->e, err) != 0 ||
                   pf_linear_create1(run->e, "precision-probe", PF_PROBE_N, PF_PROBE_K, PF_DT_F32, w, NULL, PF_DT_F32,
                                     &run->l, err) != 0 ||
                   pf_mm_ctx_create(run->e, &run->c, err) != 0 ||
                   pf_linear_impl(run->c, run->l, PF_PROBE_M, 0, r->impl, sizeof r->impl, err) != 0
               ? -1
               : 0;
}

static int run_once(probe_run *run, const float *x, double *dt, pf_err *err)
{
    double t0 = pf_now();
    if (pf_linear_forward(run->c, run->l, PF_PROBE_M, x, PF_PROBE_K, run->y, PF_PROBE_N, 0, err) != 0)
        return -1;
    *dt = pf_now() - t0;
    return 0;
}

static double rel_err(const float *y, const double *yref)
{
    double num = 0, den = 0;
    for (int i = 0; i < PF_PROBE_CHECK_ROWS; i++) {
        size_t row = (size_t)i * (PF_PROBE_M / PF_PROBE_CHECK_ROWS);
        for (size_t j = 0; j < PF_PROBE_N; j++) {
            double ref = yref[(size_t)i * PF_PROBE_N + j], d = (double)y[row * PF_PROBE_N + j] - ref;
            num += d * d;
            den += ref * ref;
        }
    }
    return den > 0 ? sqrt(num / den) : INFINITY;
}

/* A precision that fails (e.g. a ref: kernel at this shape) only leaves the choice, with the reason. */
static void drop(pf_probe_table *t, probe_run *runs, int p, const pf_err *e1)
{
    t->row[p].supported = false;
    clean_copy(t->row[p].impl, sizeof t->row[p].impl, e1->msg);
    pf_warn("cpu", "precision probe: %s: %s", pf_precision_name((pf_precision)p), e1->msg);
    run_free(&runs[p]);
}

int pf_probe_measure(pf_probe_table *t, pf_err *err)
{
    memset(t, 0, sizeof *t);
    pf_probe_key(t->key, sizeof t->key);
    const pf_precision_support *ps = pf_precision_probe();
    size_t nx = (size_t)PF_PROBE_M * PF_PROBE_K, nw = (size_t)PF_PROBE_N * PF_PROBE_K;
    float *x = malloc(nx * sizeof(float)), *w = malloc(nw * sizeof(float));
    double *yref = malloc((size_t)PF_PROBE_CHECK_ROWS * PF_PROBE_N * sizeof(double));
    probe_run runs[PF_PREC_COUNT];
    memset(runs, 0, sizeof runs);
    int rc = -1;
    if (!x || !w || !yref) {
        pf_errf(err, "precision probe: out of memory");
        goto out;
    }
    /* Unit-scale activations (a normed hidden state) and weights of 1/sqrt(K) scale. */
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < nx; i++)
        x[i] = unit_rand(&s);
    float ws = 1.0f / sqrtf((float)PF_PROBE_K);
    for (size_t i = 0; i < nw; i++)
        w[i] = unit_rand(&s) * ws;
    for (int i = 0; i < PF_PROBE_CHECK_ROWS; i++) {
        const float *xr = x + (size_t)i * (PF_PROBE_M / PF_PROBE_CHECK_ROWS) * PF_PROBE_K;
        for (size_t j = 0; j < PF_PROBE_N; j++) {
            double acc = 0;
            for (size_t k = 0; k < PF_PROBE_K; k++)
                acc += (double)xr[k] * (double)w[j * PF_PROBE_K + k];
            yref[(size_t)i * PF_PROBE_N + j] = acc;
        }
    }
    /* Set up and warm up every precision (the first call creates the primitive), checking its result. */
    for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++) {
        pf_probe_row *r = &t->row[p];
        pf_err e1;
        double dt;
        if (!ps->ok[p]) {
            clean_copy(r->impl, sizeof r->impl, ps->impl[p][0] ? ps->impl[p] : "unsupported");
            continue;
        }
        if (run_setup((pf_precision)p, w, &runs[p], r, &e1) != 0 || run_once(&runs[p], x, &dt, &e1) != 0) {
            drop(t, runs, p, &e1);
            continue;
        }
        r->supported = true;
        r->rel_err = rel_err(runs[p].y, yref);
    }
    /* Then time them in rounds, one call of each per round, best call kept: a burst of load from other
     * processes slows every precision of a round alike instead of whichever happened to run then. */
    double spent = 0;
    for (int round = 0; round < PROBE_REPS && spent < PROBE_BUDGET_S; round++)
        for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++) {
            pf_err e1;
            double dt;
            if (!t->row[p].supported)
                continue;
            if (run_once(&runs[p], x, &dt, &e1) != 0) {
                drop(t, runs, p, &e1);
                continue;
            }
            spent += dt;
            runs[p].best = dt < runs[p].best ? dt : runs[p].best;
        }
    for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++)
        if (t->row[p].supported)
            t->row[p].gflops = 2.0 * PF_PROBE_M * PF_PROBE_N * PF_PROBE_K / runs[p].best / 1e9;
    rc = 0;
out:
    for (int p = 0; p < PF_PREC_COUNT; p++)
        run_free(&runs[p]);
    free(x);
    free(w);
    free(yref);
    return rc;
}

int pf_probe_cache_path(char *buf, size_t len, pf_err *err)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    /* XDG base directory spec: a relative XDG_CACHE_HOME is invalid and must be ignored. */
    if (xdg && xdg[0] == '/')
        n = snprintf(buf, len, "%s/paliflow/precision-probe.tsv", xdg);
    else if (home && home[0])
        n = snprintf(buf, len, "%s/.cache/paliflow/precision-probe.tsv", home);
    else
        return pf_errf(err, "precision probe cache: neither XDG_CACHE_HOME nor HOME is set");
    if (n < 0 || (size_t)n >= len)
        return pf_errf(err, "precision probe cache: path too long");
    return 0;
}

/* Split one line into exactly n tab-separated fields (in place). */
static int split_tabs(char *line, char **f, int n)
{
    int i = 0;
    f[i++] = line;
    for (char *p = line; *p; p++)
        if (*p == '\t') {
            if (i == n)
                return -1;
            *p = '\0';
            f[i++] = p + 1;
        }
    return i == n ? 0 : -1;
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int pf_probe_cache_parse(const char *text, size_t len, const char *key, pf_probe_table *t, pf_err *err)
{
    if (len > PF_PROBE_CACHE_MAX_BYTES)
        return pf_errf(err, "%zu bytes: larger than %u", len, PF_PROBE_CACHE_MAX_BYTES);
    if (memchr(text, '\0', len))
        return pf_errf(err, "a NUL byte: not a text file");
    char *buf = malloc(len + 1);
    if (!buf)
        return pf_errf(err, "out of memory");
    memcpy(buf, text, len);
    buf[len] = '\0';
    pf_probe_table got = {0};
    bool seen[PF_PREC_COUNT] = {false};
    int rc = 0, lineno = 0;
    for (char *line = buf, *next; line && rc == 0; line = next) {
        lineno++;
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        if (strchr(line, '\r')) {
            rc = pf_errf(err, "line %d: stray carriage return", lineno);
            break;
        }
        char *f[6];
        if (split_tabs(line, f, 6) != 0) {
            rc = pf_errf(err, "line %d: want 6 tab-separated fields (key, precision, supported, gflops, "
                              "rel_err, impl)", lineno);
            break;
        }
        pf_precision p;
        pf_err perr;
        double g = 0, e = 0;   /* the parse below fills both before use; -O3 cannot see it */
        if (!f[0][0] || strlen(f[0]) >= PF_PROBE_KEY_MAX)
            rc = pf_errf(err, "line %d: key: empty or longer than %d", lineno, PF_PROBE_KEY_MAX - 1);
        else if (pf_precision_parse(f[1], &p, &perr) != 0 || p == PF_PREC_AUTO)
            rc = pf_errf(err, "line %d: precision '%.32s': want fp32, bf16 or int8", lineno, f[1]);
        else if (strcmp(f[2], "0") != 0 && strcmp(f[2], "1") != 0)
            rc = pf_errf(err, "line %d: supported '%.32s': want 0 or 1", lineno, f[2]);
        else if (parse_double(f[3], 0, 1e7, &g) != 0)
            rc = pf_errf(err, "line %d: gflops '%.32s': want a number in [0, 1e7]", lineno, f[3]);
        else if (parse_double(f[4], 0, 1e6, &e) != 0)
            rc = pf_errf(err, "line %d: rel_err '%.32s': want a number in [0, 1e6]", lineno, f[4]);
        else if (strlen(f[5]) >= sizeof got.row[0].impl)
            rc = pf_errf(err, "line %d: impl: longer than %zu", lineno, sizeof got.row[0].impl - 1);
        if (rc != 0 || strcmp(f[0], key) != 0)
            continue;
        if (seen[p]) {
            rc = pf_errf(err, "line %d: %s listed twice for this CPU", lineno, pf_precision_name(p));
            break;
        }
        seen[p] = true;
        got.row[p] = (pf_probe_row){.supported = f[2][0] == '1', .gflops = g, .rel_err = e};
        snprintf(got.row[p].impl, sizeof got.row[p].impl, "%s", f[5]);
    }
    free(buf);
    if (rc != 0)
        return -1;
    for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++)
        if (!seen[p])
            return 0; /* not (completely) measured for this key: measure again */
    snprintf(got.key, sizeof got.key, "%s", key);
    got.from_cache = true;
    *t = got;
    return 1;
}

int pf_probe_cache_load(const char *path, const char *key, pf_probe_table *t, pf_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT)
        return 0;
    char *text;
    size_t len;
    if (pf_read_file(path, PF_PROBE_CACHE_MAX_BYTES, &text, &len, err) != 0)
        return -1;
    int rc = pf_probe_cache_parse(text, len, key, t, err);
    free(text);
    if (rc < 0)
        pf_err_prefix(err, "%s", path);
    return rc;
}

/* mkdir -p for the directory part of path. */
static int make_parent_dirs(const char *path, pf_err *err)
{
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
        return pf_errf(err, "%s: path too long", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(dir, 0755) != 0 && errno != EEXIST)
                return pf_errf(err, "%s: cannot create: %s", dir, strerror(errno));
            if (!c)
                break;
            *p = c;
        }
    }
    return 0;
}

int pf_probe_cache_store(const char *path, const pf_probe_table *t, pf_err *err)
{
    if (make_parent_dirs(path, err) != 0)
        return -1;
    /* Keep the rows of other CPUs (a home directory shared between machines) when the file is sound. */
    char *old = NULL;
    size_t old_len = 0;
    pf_probe_table tmp;
    pf_err lerr;
    struct stat st;
    if (stat(path, &st) == 0 && pf_read_file(path, PF_PROBE_CACHE_MAX_BYTES, &old, &old_len, &lerr) == 0 &&
        pf_probe_cache_parse(old, old_len, t->key, &tmp, &lerr) < 0) {
        free(old);
        old = NULL;
        old_len = 0;
    }
    size_t cap = old_len + 2048;
    char *out = malloc(cap);
    if (!out) {
        free(old);
        return pf_errf(err, "out of memory");
    }
    size_t n = (size_t)snprintf(out, cap, "# paliflow precision probe (model/linear/precision_probe.h): key, precision, "
                                          "supported, GFLOP/s, relative error, implementation\n");
    size_t klen = strlen(t->key);
    for (char *line = old, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        size_t ll = next ? (size_t)(next - line) : strlen(line);
        if (next)
            next++;
        if (ll == 0 || line[0] == '#' || (ll > klen && !strncmp(line, t->key, klen) && line[klen] == '\t'))
            continue;
        if (n + ll + 1 >= cap)
            break;
        memcpy(out + n, line, ll);
        n += ll;
        out[n++] = '\n';
    }
    free(old);
    for (int p = PF_PREC_FP32; p < PF_PREC_COUNT && n < cap; p++) {
        const pf_probe_row *r = &t->row[p];
        char impl[sizeof r->impl];
        clean_copy(impl, sizeof impl, r->impl);
        int w = snprintf(out + n, cap - n, "%s\t%s\t%d\t%.6g\t%.6g\t%s\n", t->key, pf_precision_name((pf_precision)p),
                         r->supported ? 1 : 0, isfinite(r->gflops) ? r->gflops : 0,
                         isfinite(r->rel_err) && r->rel_err <= 1e6 ? r->rel_err : 1e6, impl);
        if (w < 0 || (size_t)w >= cap - n) {
            free(out);
            return pf_errf(err, "%s: cache text too long", path);
        }
        n += (size_t)w;
    }
    int rc = pf_write_file_atomic(path, out, n, err);
    free(out);
    return rc;
}

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pf_probe_table g_table;
static int g_rc;
static pf_err g_err;

bool pf_probe_cache_enabled(void)
{
    const char *v = getenv("PALIFLOW_PROBE_CACHE");
    return !(v && (!strcmp(v, "off") || !strcmp(v, "0") || !strcmp(v, "no")));
}

static void table_init(void)
{
    char key[PF_PROBE_KEY_MAX], path[4096];
    pf_probe_key(key, sizeof key);
    pf_err err;
    bool use_cache = pf_probe_cache_enabled() && pf_probe_cache_path(path, sizeof path, &err) == 0;
    if (use_cache) {
        int rc = pf_probe_cache_load(path, key, &g_table, &err);
        if (rc == 1) {
            pf_debug("cpu", "precision probe: %s: cached table for %s", path, key);
            return;
        }
        if (rc < 0)
            pf_warn("cpu", "precision probe cache ignored (measuring again): %s", err.msg);
    }
    double t0 = pf_now();
    if (pf_probe_measure(&g_table, &g_err) != 0) {
        g_rc = -1;
        return;
    }
    pf_info("cpu", "precision probe: measured in %.2f s (fp32 %.0f, bf16 %.0f, int8 %.0f GFLOP/s)", pf_now() - t0,
            g_table.row[PF_PREC_FP32].gflops, g_table.row[PF_PREC_BF16].gflops, g_table.row[PF_PREC_INT8].gflops);
    /* A table measured while other processes hold the cores would decide every later load: use it for this
     * run only. (`paliflow bench --probe` measures and caches on request.) */
    double load = 0;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    const char *mode = getenv("PALIFLOW_PROBE_CACHE");
    bool always = mode && !strcmp(mode, "always");
    if (use_cache && !always && getloadavg(&load, 1) == 1 && cpus > 0 && load > (double)cpus) {
        pf_warn("cpu", "precision probe: not cached: load average %.1f on %ld CPUs may have skewed it (`paliflow "
                "bench --probe` measures again and caches)", load, cpus);
        use_cache = false;
    }
    if (use_cache && pf_probe_cache_store(path, &g_table, &err) != 0)
        pf_warn("cpu", "precision probe: not cached: %s", err.msg);
}

const pf_probe_table *pf_probe_table_get(pf_err *err)
{
    pthread_once(&g_once, table_init);
    if (g_rc != 0) {
        if (err)
            *err = g_err;
        return NULL;
    }
    return &g_table;
}

void pf_probe_print(const pf_probe_table *t, FILE *f)
{
    pf_precision choice = PF_PREC_AUTO;
    char why[512] = "";
    pf_err err;
    if (pf_probe_choose(t, &choice, why, sizeof why, &err) != 0)
        clean_copy(why, sizeof why, err.msg);
    fprintf(f, "precision probe (%s, M=%d K=%d N=%d): %s\n", t->from_cache ? "cached" : "measured", PF_PROBE_M,
            PF_PROBE_K, PF_PROBE_N, t->key);
    fprintf(f, "  %-9s %10s %10s %10s  %s\n", "precision", "GFLOP/s", "rel.err", "tolerance", "implementation");
    for (int p = PF_PREC_FP32; p < PF_PREC_COUNT; p++) {
        const pf_probe_row *r = &t->row[p];
        if (r->supported)
            fprintf(f, "  %-9s %10.1f %10.2g %10.0e  %s%s\n", pf_precision_name((pf_precision)p), r->gflops,
                    r->rel_err, pf_probe_tolerance((pf_precision)p), r->impl, p == (int)choice ? "  <- auto" : "");
        else
            fprintf(f, "  %-9s %10s %10s %10.0e  %s\n", pf_precision_name((pf_precision)p), "-", "-",
                    pf_probe_tolerance((pf_precision)p), r->impl);
    }
    fprintf(f, "  %s\n", why);
}
