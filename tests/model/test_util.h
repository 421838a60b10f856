/* Helpers for model tests: load a golden case's checkpoint and its unpadded rows. */
#ifndef PF_TEST_MODEL_UTIL_H
#define PF_TEST_MODEL_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/io/model.h"
#include "model/io/safetensors.h"

typedef struct test_rows {
    int B, T;
    int32_t *ids[8], *tt[8], *labels[8];
    size_t n[8];
    float *pixels; /* [B][img] */
    size_t img;
} test_rows;

static inline pf_model *test_load_model(const char *case_name)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/model/%s/checkpoint", PF_GOLDEN_DIR, case_name);
    pf_model *m;
    pf_err err;
    if (pf_model_load(p, &m, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        abort();
    }
    return m;
}

static inline void test_load_rows(const char *case_name, const pf_model *m, test_rows *r)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/model/%s/inputs.safetensors", PF_GOLDEN_DIR, case_name);
    pf_st_file f;
    pf_err err;
    if (pf_st_open(p, &f, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        abort();
    }
    memset(r, 0, sizeof *r);
    const pf_st_tensor *ids = pf_st_find(&f, "input_ids"), *mask = pf_st_find(&f, "attention_mask");
    const pf_st_tensor *tt = pf_st_find(&f, "token_type_ids"), *lab = pf_st_find(&f, "labels");
    const pf_st_tensor *px = pf_st_find(&f, "pixel_values");
    r->B = (int)ids->shape[0];
    r->T = (int)ids->shape[1];
    int64_t *vi = malloc(ids->numel * 8), *vm = malloc(ids->numel * 8), *vt = malloc(ids->numel * 8),
            *vl = malloc(ids->numel * 8);
    pf_st_read_i64(ids, vi, &err);
    pf_st_read_i64(mask, vm, &err);
    if (tt)
        pf_st_read_i64(tt, vt, &err);
    if (lab)
        pf_st_read_i64(lab, vl, &err);
    for (int b = 0; b < r->B && b < 8; b++) {
        r->ids[b] = malloc(sizeof(int32_t) * (size_t)r->T);
        r->tt[b] = malloc(sizeof(int32_t) * (size_t)r->T);
        r->labels[b] = malloc(sizeof(int32_t) * (size_t)r->T);
        for (int t = 0; t < r->T; t++) {
            size_t at = (size_t)b * (size_t)r->T + (size_t)t;
            if (!vm[at])
                continue;
            r->tt[b][r->n[b]] = tt ? (int32_t)vt[at] : 0;
            r->labels[b][r->n[b]] = lab ? (int32_t)vl[at] : -100;
            r->ids[b][r->n[b]++] = (int32_t)vi[at];
        }
    }
    r->img = (size_t)m->cfg.vision.channels * (size_t)m->cfg.vision.image_size * (size_t)m->cfg.vision.image_size;
    r->pixels = malloc(px->numel * sizeof(float));
    pf_st_read_f32(px, r->pixels, &err);
    free(vi);
    free(vm);
    free(vt);
    free(vl);
    pf_st_close(&f);
}

static inline void test_free_rows(test_rows *r)
{
    for (int b = 0; b < 8; b++) {
        free(r->ids[b]);
        free(r->tt[b]);
        free(r->labels[b]);
    }
    free(r->pixels);
}

#endif
