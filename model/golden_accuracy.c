/* golden_accuracy.c - how close reduced-precision logits are to the fp32 expected ones (cosine, max-abs),
 * the measure case.json's bf16_reference uses. */
#include <math.h>

#include "model/golden.h"

static double cosine(double dot, double na, double nb)
{
    return na > 0 && nb > 0 ? dot / (sqrt(na) * sqrt(nb)) : (na == nb ? 1.0 : 0.0);
}

void pf_golden_closeness_of(const float *got, const float *expected, const int64_t *mask, int64_t B, int64_t T,
                            int64_t V, pf_golden_closeness *out)
{
    double dot = 0, na = 0, nb = 0, mx = 0;
    out->worst_last_cosine = 1.0;
    out->worst_last_max_abs = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t last = -1;
        for (int64_t t = 0; t < T; t++) {
            if (!mask[b * T + t])
                continue;
            last = t;
            const float *g = got + (b * T + t) * V, *e = expected + (b * T + t) * V;
            for (int64_t v = 0; v < V; v++) {
                double x = g[v], y = e[v], d = fabs(x - y);
                dot += x * y;
                na += x * x;
                nb += y * y;
                mx = d > mx || isnan(d) ? d : mx;
            }
        }
        if (last < 0)
            continue;
        const float *g = got + (b * T + last) * V, *e = expected + (b * T + last) * V;
        double d2 = 0, a2 = 0, b2 = 0, m2 = 0;
        for (int64_t v = 0; v < V; v++) {
            double x = g[v], y = e[v], d = fabs(x - y);
            d2 += x * y;
            a2 += x * x;
            b2 += y * y;
            m2 = d > m2 || isnan(d) ? d : m2;
        }
        double c = cosine(d2, a2, b2);
        if (c < out->worst_last_cosine || isnan(c))
            out->worst_last_cosine = c;
        if (m2 > out->worst_last_max_abs || isnan(m2))
            out->worst_last_max_abs = m2;
    }
    out->cosine = cosine(dot, na, nb);
    out->max_abs = mx;
}
