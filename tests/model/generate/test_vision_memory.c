/* Memory bound at 896 px: one SigLIP layer at So400m shapes (4096 tokens, width 1152, 16 heads,
 * intermediate 4304; random weights made here) must stay within PF_VISION_896_EXTRA_MB of extra peak
 * memory (model/README.md). A materialized [16, 4096, 4096] f32 score tensor alone would be 1 GiB. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/ref/ref.h"

#define PF_VISION_896_EXTRA_MB 96

/* kB value of a /proc/self/status field, or -1. */
static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            v = strtol(line + n + 1, NULL, 10);
    fclose(f);
    return v;
}

static float *random_floats(size_t n, float scale, uint64_t *seed)
{
    float *p = malloc(n * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = ((float)(*seed >> 40) / (float)(1 << 24) - 0.5f) * 2 * scale;
    }
    return p;
}

static void test_vision_layer_896(void **state)
{
    (void)state;
    pf_vision_config vc = {.hidden = 1152, .intermediate = 4304, .layers = 1, .heads = 16, .head_dim = 72,
                           .patch_size = 14, .image_size = 896, .channels = 3, .num_patches = 4096,
                           .layer_norm_eps = 1e-6f, .act = PF_ACT_GELU_TANH};
    size_t P = 4096, D = 1152, I = 4304;
    uint64_t seed = 12345;
    float s = 1.0f / sqrtf((float)D);
    pf_vision_layer_w L = {
        .ln1_w = random_floats(D, 1, &seed), .ln1_b = random_floats(D, 0.1f, &seed),
        .q_w = random_floats(D * D, s, &seed), .q_b = random_floats(D, 0.1f, &seed),
        .k_w = random_floats(D * D, s, &seed), .k_b = random_floats(D, 0.1f, &seed),
        .v_w = random_floats(D * D, s, &seed), .v_b = random_floats(D, 0.1f, &seed),
        .o_w = random_floats(D * D, s, &seed), .o_b = random_floats(D, 0.1f, &seed),
        .ln2_w = random_floats(D, 1, &seed), .ln2_b = random_floats(D, 0.1f, &seed),
        .fc1_w = random_floats(I * D, s, &seed), .fc1_b = random_floats(I, 0.1f, &seed),
        .fc2_w = random_floats(D * I, 1.0f / sqrtf((float)I), &seed), .fc2_b = random_floats(D, 0.1f, &seed),
    };
    float *x = random_floats(P * D, 1, &seed);

    /* Reset the peak to the current RSS where the kernel allows it (Linux >= 4.0), so VmHWM measures
     * this call only; otherwise the baseline is the current RSS anyway (nothing big ran before). */
    FILE *cr = fopen("/proc/self/clear_refs", "w");
    if (cr) {
        fputs("5", cr);
        fclose(cr);
    }
    long rss0 = status_kb("VmRSS"), hwm0 = status_kb("VmHWM");
    assert_true(rss0 > 0 && hwm0 > 0);
    pf_err err;
    if (pf_ref_vision_layer(&vc, &L, x, P, &err) != 0)
        fail_msg("%s", err.msg);
    long hwm1 = status_kb("VmHWM");
    long extra_kb = hwm1 - rss0;
    pf_config cfg = {.vision = vc};
    double scratch_mb = (double)pf_ref_vision_scratch_floats(&cfg) * 4 / (1 << 20);
    printf("vision layer 896px: extra peak %.1f MiB (bound %d MiB; scratch of a full tower %.1f MiB)\n",
           (double)extra_kb / 1024, PF_VISION_896_EXTRA_MB, scratch_mb);
    assert_true(extra_kb <= PF_VISION_896_EXTRA_MB * 1024L);
    assert_true(scratch_mb <= PF_VISION_896_EXTRA_MB + 24);
    for (size_t i = 0; i < P * D; i += 997)
        assert_true(isfinite(x[i]));

    free(x);
    const float *ws[] = {L.ln1_w, L.ln1_b, L.q_w, L.q_b, L.k_w, L.k_b, L.v_w, L.v_b, L.o_w, L.o_b, L.ln2_w, L.ln2_b,
                         L.fc1_w, L.fc1_b, L.fc2_w, L.fc2_b};
    for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
        free((void *)ws[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_vision_layer_896)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
