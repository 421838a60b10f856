#include "model/generate/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

pf_sample_params pf_sample_default_params(void)
{
    return (pf_sample_params){PF_GENERATION_DEFAULTS};
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void pf_rng_seed(pf_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t pf_rng_next(pf_rng *r)
{
    uint64_t *s = r->s, res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

double pf_rng_uniform(pf_rng *r) { return (double)(pf_rng_next(r) >> 11) * 0x1.0p-53; }

int pf_sampler_init(pf_sampler *s, size_t V, pf_err *err)
{
    memset(s, 0, sizeof *s);
    s->prob = malloc(V * sizeof *s->prob);
    s->order = malloc(V * sizeof *s->order);
    s->seen = calloc(V, 1);
    if (!s->prob || !s->order || !s->seen) {
        pf_sampler_free(s);
        return pf_errf(err, "sampler: out of memory for a vocabulary of %zu", V);
    }
    s->V = V;
    return 0;
}

void pf_sampler_free(pf_sampler *s)
{
    free(s->prob);
    free(s->order);
    free(s->seen);
    memset(s, 0, sizeof *s);
}

/* qsort has no context argument: the logits being sorted, per thread. */
static _Thread_local const float *t_sort_logits;

/* Descending by logit, ties by index: a deterministic order. */
static int cmp_desc(const void *a, const void *b)
{
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    float x = t_sort_logits[i], y = t_sort_logits[j];
    if (x != y)
        return x > y ? -1 : 1;
    return (i > j) - (i < j);
}

static int32_t argmax(const float *x, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return (int32_t)best;
}

int32_t pf_sample_next(pf_sampler *s, float *logits, const pf_sample_params *p, const int32_t *history,
                       size_t n_hist, pf_rng *rng)
{
    size_t V = s->V;
    /* RepetitionPenaltyLogitsProcessor: each distinct earlier token once: negative * pen, positive / pen. */
    float pen = p->repetition_penalty;
    if (pen > 0 && pen != 1.0f) {
        for (size_t i = 0; i < n_hist; i++) {
            int32_t t = history[i];
            if (t < 0 || (size_t)t >= V || s->seen[t])
                continue;
            s->seen[t] = 1;
            logits[t] = logits[t] < 0 ? logits[t] * pen : logits[t] / pen;
        }
        for (size_t i = 0; i < n_hist; i++)
            if (history[i] >= 0 && (size_t)history[i] < V)
                s->seen[history[i]] = 0;
    }
    if (p->temperature <= 0)
        return argmax(logits, V);

    for (size_t i = 0; i < V; i++)
        logits[i] /= p->temperature;
    /* Candidates in descending order; top-k keeps everything >= the k-th largest (ties included). */
    size_t n = V;
    int need_sort = (p->top_k > 0 && (size_t)p->top_k < V) || (p->top_p > 0 && p->top_p < 1);
    for (size_t i = 0; i < V; i++)
        s->order[i] = (int32_t)i;
    if (need_sort) {
        t_sort_logits = logits;
        qsort(s->order, V, sizeof *s->order, cmp_desc);
    }
    if (p->top_k > 0 && (size_t)p->top_k < V) {
        float kth = logits[s->order[p->top_k - 1]];
        n = (size_t)p->top_k;
        while (n < V && logits[s->order[n]] >= kth)
            n++;
    }
    double mx = logits[s->order[0]];
    if (!need_sort)
        for (size_t i = 1; i < V; i++)
            mx = logits[i] > mx ? logits[i] : mx;
    double total = 0;
    for (size_t i = 0; i < n; i++) {
        s->prob[i] = exp((double)logits[s->order[i]] - mx);
        total += s->prob[i];
    }
    if (p->top_p > 0 && p->top_p < 1) {
        /* TopPLogitsWarper: ascending cumulative probability; drop tokens while it stays <= 1 - top_p,
         * always keeping the most likely one. */
        double cum = 0;
        size_t keep = n;
        for (size_t i = n; i-- > 1;) {
            cum += s->prob[i] / total;
            if (cum <= 1.0 - p->top_p)
                keep = i;
            else
                break;
        }
        n = keep;
        total = 0;
        for (size_t i = 0; i < n; i++)
            total += s->prob[i];
    }
    double u = pf_rng_uniform(rng) * total, acc = 0;
    for (size_t i = 0; i < n; i++) {
        acc += s->prob[i];
        if (u < acc)
            return s->order[i];
    }
    return s->order[n - 1];
}
