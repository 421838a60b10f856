/* sample.h - choosing the next token: greedy or seeded sampling, in transformers' processor order:
 * repetition penalty, then temperature, top-k, top-p (GenerationMixin with do_sample). */
#ifndef PF_MODEL_SAMPLE_H
#define PF_MODEL_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/generation.h"

typedef struct pf_sample_params {
    int max_new_tokens;
    float temperature;        /* <= 0: greedy (argmax, first index on ties) */
    int top_k;                /* <= 0: off */
    float top_p;              /* <= 0 or >= 1: off */
    float repetition_penalty; /* 1 (or <= 0): off; > 1 discourages tokens already in prompt or output */
    uint64_t seed;
    int ignore_eos;           /* benchmarks only: eos does not stop generation (always max_new_tokens) */
} pf_sample_params;

/* The generation defaults (base/generation.h: greedy, 64 new tokens, everything else off). */
pf_sample_params pf_sample_default_params(void);

/* xoshiro256** seeded through splitmix64: one per request, so a request's tokens do not depend on what
 * else is in the batch. */
typedef struct pf_rng {
    uint64_t s[4];
} pf_rng;
void pf_rng_seed(pf_rng *r, uint64_t seed);
uint64_t pf_rng_next(pf_rng *r);
double pf_rng_uniform(pf_rng *r); /* [0, 1), 53 bits */

/* Work space for vocabularies of V tokens; one per thread. */
typedef struct pf_sampler {
    size_t V;
    double *prob;
    int32_t *order;
    uint8_t *seen;
} pf_sampler;
int pf_sampler_init(pf_sampler *s, size_t V, pf_err *err);
void pf_sampler_free(pf_sampler *s);

/* Pick the next token from logits[V] (modified in place). history (n_hist ids: prompt + generated so far)
 * feeds the repetition penalty; rng is used only when sampling. */
int32_t pf_sample_next(pf_sampler *s, float *logits, const pf_sample_params *p, const int32_t *history,
                       size_t n_hist, pf_rng *rng);

#endif
