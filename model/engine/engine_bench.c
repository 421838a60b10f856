/* engine_bench.c - the GEMM rate of the engine's own linear layers at prefill sizes (for `paliflow bench`):
 * each kind of layer (first of its kind: all layers of a kind have the same shape) timed on its converted
 * weights through pf_linear_forward, so activation conversion (bf16 rounding, int8 quantization and
 * epilogue) counts as it does in the forward; the rate is FLOP-weighted over one prefill's linears. */
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "model/engine/engine_internal.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Best seconds of `reps` calls of l at m rows (after one warm-up call): the peak this machine reaches. */
static int time_linear(pf_engine_ctx *c, const pf_linear *l, int64_t m, int reps, float *x, float *y, double *s,
                       pf_err *err)
{
    double t[64];
    reps = reps < 1 ? 1 : reps > 64 ? 64 : reps;
    for (int r = -1; r < reps; r++) {
        double t0 = pf_now();
        if (pf_linear_forward(c->mm, l, m, x, pf_linear_k(l), y, pf_linear_n(l), 0, err) != 0)
            return -1;
        if (r >= 0)
            t[r] = pf_now() - t0;
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp_double);
    *s = t[0];
    return 0;
}

int pf_engine_gemm_rate(pf_engine_ctx *c, int64_t m_vision, int64_t m_text, int reps, double *gflops, pf_err *err)
{
    const pf_engine *e = c->e;
    const pf_config *cfg = &e->m->cfg;
    struct {
        const pf_linear *l;
        int64_t m;
        double count;
    } ks[] = {
        {e->patch, m_vision, 1},
        {e->v[0].qkv, m_vision, cfg->vision.layers},
        {e->v[0].o, m_vision, cfg->vision.layers},
        {e->v[0].fc1, m_vision, cfg->vision.layers},
        {e->v[0].fc2, m_vision, cfg->vision.layers},
        {e->proj, m_vision, 1},
        {e->t[0].qkv, m_text, cfg->text.layers},
        {e->t[0].o, m_text, cfg->text.layers},
        {e->t[0].gu, m_text, cfg->text.layers},
        {e->t[0].down, m_text, cfg->text.layers},
    };
    size_t xmax = 0, ymax = 0;
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        size_t xs = (size_t)ks[i].m * (size_t)pf_linear_k(ks[i].l), ys = (size_t)ks[i].m * (size_t)pf_linear_n(ks[i].l);
        xmax = xs > xmax ? xs : xmax;
        ymax = ys > ymax ? ys : ymax;
    }
    float *x = malloc(xmax * sizeof(float)), *y = malloc(ymax * sizeof(float));
    if (!x || !y) {
        free(x);
        free(y);
        return pf_errf(err, "gemm rate: out of memory");
    }
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < xmax; i++) { /* activations of unit scale, like a normed hidden state */
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    double flops = 0, secs = 0;
    int rc = 0;
    for (size_t i = 0; i < sizeof ks / sizeof ks[0] && rc == 0; i++) {
        double t = 0;
        if (ks[i].m < 1)
            continue;
        rc = time_linear(c, ks[i].l, ks[i].m, reps, x, y, &t, err);
        flops += ks[i].count * 2.0 * (double)ks[i].m * (double)pf_linear_n(ks[i].l) * (double)pf_linear_k(ks[i].l);
        secs += ks[i].count * t;
    }
    free(x);
    free(y);
    *gflops = secs > 0 ? flops / secs / 1e9 : 0;
    return rc;
}
