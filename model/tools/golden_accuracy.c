/* golden_accuracy.c - how close reduced-precision logits are to the fp32 expected ones (cosine, max-abs),
 * the measure case.json's bf16_reference uses. */
#include <math.h>

#include "model/tools/golden.h"

/* Running sums for a cosine and the largest |difference| (NaN sticks). */
typedef struct closeness_sums {
    double dot, na, nb, max_abs;
} closeness_sums;

static void add_row(closeness_sums *s, const float *g, const float *e, int64_t V)
{
    for (int64_t v = 0; v < V; v++) {
        double x = g[v], y = e[v], d = fabs(x - y);
        s->dot += x * y;
        s->na += x * x;
        s->nb += y * y;
        s->max_abs = d > s->max_abs || isnan(d) ? d : s->max_abs;
    }
}

static double cosine(const closeness_sums *s)
{
    return s->na > 0 && s->nb > 0 ? s->dot / (sqrt(s->na) * sqrt(s->nb)) : (s->na == s->nb ? 1.0 : 0.0);
}

void pf_golden_closeness_of(const float *got, const float *expected, const int64_t *mask, int64_t B, int64_t T,
                            int64_t V, pf_golden_closeness *out)
{
    closeness_sums all = {0};
    out->worst_last_cosine = 1.0;
    out->worst_last_max_abs = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t last = -1;
        for (int64_t t = 0; t < T; t++) {
            if (!mask[b * T + t])
                continue;
            last = t;
            add_row(&all, got + (b * T + t) * V, expected + (b * T + t) * V, V);
        }
        if (last < 0)
            continue;
        closeness_sums row = {0};
        add_row(&row, got + (b * T + last) * V, expected + (b * T + last) * V, V);
        double c = cosine(&row);
        if (c < out->worst_last_cosine || isnan(c))
            out->worst_last_cosine = c;
        if (row.max_abs > out->worst_last_max_abs || isnan(row.max_abs))
            out->worst_last_max_abs = row.max_abs;
    }
    out->cosine = cosine(&all);
    out->max_abs = all.max_abs;
}
