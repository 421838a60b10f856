/* bench_tokenizer: tokenizer.json load time and encode throughput (issue 3).
 *
 * usage: bench_tokenizer [TOKENIZER_JSON [CASES_JSONL]]   (defaults: ../shared/golden/tokenizer/...)
 * Prints the median of 5 loads, and the median of 5 runs of: encoding all texts of CASES_JSONL joined by
 * "\n" as one text, and encoding them one by one. One thread. Targets (issue 3): load < 250 ms, encode
 * >= 5 MB/s. Reference (README, Rust tokenizers via Node on the same kind of VM): load 1143 ms, joined
 * 1.97 MB/s, per line 2.44 MB/s.
 */
#include <jansson.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "model/tokenizer/tokenizer.h"

#define RUNS 5

/* CPU time of this thread: on a shared machine wall time also counts waiting for a core. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

int main(int argc, char **argv)
{
    const char *tok_path = argc > 1 ? argv[1] : "../shared/golden/tokenizer/tokenizer.json";
    const char *cases_path = argc > 2 ? argv[2] : "../shared/golden/tokenizer/cases.jsonl";
    if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        printf("usage: bench_tokenizer [TOKENIZER_JSON [CASES_JSONL]]\n");
        return 0;
    }
    pf_err err;

    /* texts */
    FILE *f = fopen(cases_path, "r");
    if (!f) {
        fprintf(stderr, "bench_tokenizer: cannot open %s\n", cases_path);
        return 2;
    }
    size_t n = 0, cap = 0, total = 0;
    char **texts = NULL;
    size_t *lens = NULL;
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, f) != -1) {
        json_error_t jerr;
        json_t *o = json_loads(line, JSON_ALLOW_NUL, &jerr);
        json_t *t = o ? json_object_get(o, "text") : NULL;
        if (t && json_is_string(t)) {
            if (n == cap) {
                cap = cap ? cap * 2 : 512;
                texts = realloc(texts, cap * sizeof *texts);
                lens = realloc(lens, cap * sizeof *lens);
            }
            lens[n] = json_string_length(t);
            texts[n] = malloc(lens[n] + 1);
            memcpy(texts[n], json_string_value(t), lens[n]);
            total += lens[n];
            n++;
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    char *joined = malloc(total + n + 1);
    size_t jl = 0;
    for (size_t i = 0; i < n; i++) {
        if (i)
            joined[jl++] = '\n';
        memcpy(joined + jl, texts[i], lens[i]);
        jl += lens[i];
    }

    /* load */
    double t_load[RUNS], c_load[RUNS];
    pf_tokenizer *tok = NULL;
    for (int r = 0; r < RUNS; r++) {
        if (tok)
            pf_tokenizer_free(tok);
        double t0 = pf_now(), c0 = cpu_now();
        if (pf_tokenizer_load(tok_path, &tok, &err) != 0) {
            fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
            return 2;
        }
        t_load[r] = (pf_now() - t0) * 1e3;
        c_load[r] = (cpu_now() - c0) * 1e3;
    }
    printf("load %s: median %.1f ms wall (runs:", tok_path, median(t_load, RUNS));
    for (int r = 0; r < RUNS; r++)
        printf(" %.1f", t_load[r]);
    printf("), median %.1f ms CPU\n", median(c_load, RUNS));

    /* encode */
    pf_ids ids = {0};
    double t_join[RUNS], t_line[RUNS], c_join[RUNS], c_line[RUNS];
    size_t tok_join = 0, tok_line = 0;
    for (int r = 0; r < RUNS; r++) {
        ids.n = 0;
        double t0 = pf_now(), c0 = cpu_now();
        if (pf_tokenizer_encode(tok, joined, jl, &ids, &err) != 0) {
            fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
            return 2;
        }
        t_join[r] = pf_now() - t0;
        c_join[r] = cpu_now() - c0;
        tok_join = ids.n;
        t0 = pf_now();
        c0 = cpu_now();
        tok_line = 0;
        for (size_t i = 0; i < n; i++) {
            ids.n = 0;
            if (pf_tokenizer_encode(tok, texts[i], lens[i], &ids, &err) != 0) {
                fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
                return 2;
            }
            tok_line += ids.n;
        }
        t_line[r] = pf_now() - t0;
        c_line[r] = cpu_now() - c0;
    }
    double mj = median(t_join, RUNS), ml = median(t_line, RUNS);
    double cj = median(c_join, RUNS), cl = median(c_line, RUNS);
    printf("encode joined: %zu bytes -> %zu tokens, median %.2f ms = %.2f MB/s wall, %.2f MB/s CPU\n", jl,
           tok_join, mj * 1e3, jl / mj / 1e6, jl / cj / 1e6);
    printf("encode per line: %zu texts, %zu bytes -> %zu tokens, median %.2f ms = %.2f MB/s wall (%.1f "
           "us/text), "
           "%.2f MB/s CPU\n",
           n, total, tok_line, ml * 1e3, total / ml / 1e6, ml / (double)n * 1e6, total / cl / 1e6);
    printf("targets: load < 250 ms, encode >= 5 MB/s; Rust reference (README): load 1143 ms, 1.97 / 2.44 "
           "MB/s\n");

    pf_ids_free(&ids);
    pf_tokenizer_free(tok);
    for (size_t i = 0; i < n; i++)
        free(texts[i]);
    free(texts);
    free(lens);
    free(joined);
    return 0;
}
