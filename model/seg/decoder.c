/* decoder.c - see decoder.h. Plain loops: one object is ~60 MFLOP, milliseconds next to the language
 * model's seconds, so clarity and exactness win over a GEMM library here. */
#include "model/seg/decoder.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIM 128   /* the decoder's width, fixed in the reference (Decoder.dim) */

/* One conv (or transposed conv) layer, its weight re-laid as [cout][k][k][cin] so the inner loop runs over
 * input channels, contiguous in both the weight and the NHWC activations. */
typedef struct layer {
    int cin, cout, k;
    float *w;
    float *b;
} layer;

struct pf_seg_decoder {
    int dim;            /* D */
    int n_codes;        /* codebook rows (>= 128) */
    float *codebook;    /* [n_codes][D] */
    layer conv0;        /* decoder.0: 1x1 D->128 */
    layer res[2][3];    /* decoder.{2,3}.net.{0,2,4} */
    layer up[4];        /* decoder.{4,6,8,10}: transposed 4x4 stride 2 */
    layer conv1;        /* decoder.12: 1x1 16->1 */
};

int pf_seg_decoder_dim(const pf_seg_decoder *d)
{
    return d->dim;
}

static const pf_npy *get_f32(const pf_npz *z, const char *label, const char *name, int ndim, const int64_t *shape,
                             pf_err *err)
{
    const pf_npy *a = pf_npz_get(z, name);
    char want[128], got[128];
    pf_npy w = {.ndim = ndim};
    memcpy(w.shape, shape, (size_t)ndim * sizeof *shape);
    pf_npy_shape_str(&w, want, sizeof want);
    if (!a) {
        pf_errf(err, "%s: array '%s' is missing (want float32 %s)", label, name, want);
        return NULL;
    }
    if (!pf_npy_is_f32(a, ndim, shape)) {
        pf_errf(err, "%s: array '%s': want float32 %s in C order, got %c%d %s%s", label, name, want, a->kind,
                a->itemsize * 8, pf_npy_shape_str(a, got, sizeof got), a->fortran_order ? " (Fortran order)" : "");
        return NULL;
    }
    /* NaN or inf weights would turn every mask silently empty: refuse them here, by name. */
    const uint8_t *p = a->data;
    for (int64_t i = 0; i < a->count; i++) {
        float v;
        memcpy(&v, p + 4 * i, 4);
        if (!isfinite(v)) {
            pf_errf(err, "%s: array '%s': element %lld is not finite", label, name, (long long)i);
            return NULL;
        }
    }
    return a;
}

static float *copy_f32(const pf_npy *a)
{
    float *f = malloc((size_t)a->count * sizeof *f);
    if (f)
        memcpy(f, a->data, (size_t)a->count * sizeof *f);
    return f;
}

/* TRANSPOSED: the PyTorch ConvTranspose2d layout [cin][cout][k][k]; else Conv2d's [cout][cin][k][k]. */
static int load_layer(const pf_npz *z, const char *label, const char *prefix, int cin, int cout, int k,
                      int transposed, layer *L, pf_err *err)
{
    char wn[96], bn[96];
    snprintf(wn, sizeof wn, "%s.weight", prefix);
    snprintf(bn, sizeof bn, "%s.bias", prefix);
    int64_t ws[4] = {transposed ? cin : cout, transposed ? cout : cin, k, k}, bs[1] = {cout};
    const pf_npy *wa = get_f32(z, label, wn, 4, ws, err), *ba = wa ? get_f32(z, label, bn, 1, bs, err) : NULL;
    if (!wa || !ba)
        return -1;
    L->cin = cin;
    L->cout = cout;
    L->k = k;
    L->w = malloc((size_t)cout * (size_t)(k * k) * (size_t)cin * sizeof *L->w);
    L->b = copy_f32(ba);
    if (!L->w || !L->b)
        return pf_errf(err, "%s: out of memory for '%s'", label, wn);
    const uint8_t *src = wa->data;
    for (int o = 0; o < cout; o++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++)
                for (int i = 0; i < cin; i++) {
                    size_t s = transposed ? (((size_t)i * cout + o) * k + ky) * k + kx
                                          : (((size_t)o * cin + i) * k + ky) * k + kx;
                    memcpy(&L->w[(((size_t)o * k + ky) * k + kx) * cin + i], src + 4 * s, 4);
                }
    return 0;
}

static void free_layer(layer *L)
{
    free(L->w);
    free(L->b);
}

void pf_seg_decoder_free(pf_seg_decoder *d)
{
    if (!d)
        return;
    free(d->codebook);
    free_layer(&d->conv0);
    for (int r = 0; r < 2; r++)
        for (int j = 0; j < 3; j++)
            free_layer(&d->res[r][j]);
    for (int j = 0; j < 4; j++)
        free_layer(&d->up[j]);
    free_layer(&d->conv1);
    free(d);
}

int pf_seg_decoder_from_npz(const pf_npz *z, const char *label, pf_seg_decoder **out, pf_err *err)
{
    *out = NULL;
    const char *ek = "_vq_vae._embedding";
    const pf_npy *emb = pf_npz_get(z, ek);
    if (!emb)
        return pf_errf(err, "%s: array '%s' is missing: not a big_vision mask decoder (vae-oid.npz)", label, ek);
    if (emb->kind != 'f' || emb->itemsize != 4 || emb->ndim != 2 || emb->fortran_order ||
        emb->shape[0] < PF_SEG_CODEBOOK || emb->shape[0] > 65536 || emb->shape[1] < 1 || emb->shape[1] > 65536) {
        char sh[128];
        return pf_errf(err, "%s: array '%s': want float32 [N >= %d, D] in C order (D <= 65536), got %c%d %s", label,
                       ek, PF_SEG_CODEBOOK, emb->kind, emb->itemsize * 8, pf_npy_shape_str(emb, sh, sizeof sh));
    }
    pf_seg_decoder *d = calloc(1, sizeof *d);
    if (!d)
        return pf_errf(err, "%s: out of memory", label);
    d->n_codes = (int)emb->shape[0];
    d->dim = (int)emb->shape[1];
    int64_t es[2] = {d->n_codes, d->dim};
    if (!get_f32(z, label, ek, 2, es, err) || !(d->codebook = copy_f32(emb)))
        goto fail;
    if (load_layer(z, label, "decoder.0", d->dim, DIM, 1, 0, &d->conv0, err))
        goto fail;
    for (int r = 0; r < 2; r++) {
        static const int ks[3] = {3, 3, 1}, idx[3] = {0, 2, 4};
        for (int j = 0; j < 3; j++) {
            char p[64];
            snprintf(p, sizeof p, "decoder.%d.net.%d", 2 + r, idx[j]);
            if (load_layer(z, label, p, DIM, DIM, ks[j], 0, &d->res[r][j], err))
                goto fail;
        }
    }
    for (int j = 0, c = DIM; j < 4; j++) {
        char p[64];
        snprintf(p, sizeof p, "decoder.%d", 4 + 2 * j);
        int co = j == 0 ? DIM : c / 2;   /* 128->128, then halving: 64, 32, 16 */
        if (load_layer(z, label, p, c, co, 4, 1, &d->up[j], err))
            goto fail;
        c = co;
    }
    if (load_layer(z, label, "decoder.12", DIM / 8, 1, 1, 0, &d->conv1, err))
        goto fail;
    *out = d;
    return 0;
fail:
    pf_seg_decoder_free(d);
    return -1;
}

int pf_seg_decoder_load(const char *path, pf_seg_decoder **out, pf_err *err)
{
    *out = NULL;
    pf_npz z;
    if (pf_npz_read_file(path, NULL, &z, err))
        return -1;
    int rc = pf_seg_decoder_from_npz(&z, path, out, err);
    pf_npz_free(&z);
    return rc;
}

/* Four partial sums: lets the compiler overlap the multiply-adds; the order is fixed, so results are
 * the same on every run. */
static double dot(const float *a, const float *b, int n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += (double)a[i] * b[i];
        s1 += (double)a[i + 1] * b[i + 1];
        s2 += (double)a[i + 2] * b[i + 2];
        s3 += (double)a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += (double)a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

/* Stride-1 conv with "same" zero padding (k = 1 or 3, pad k/2), NHWC [n][n][cin] -> [n][n][cout]. */
static void conv(const layer *L, const float *in, int n, float *out, int relu)
{
    int pad = L->k / 2;
    for (int y = 0; y < n; y++)
        for (int x = 0; x < n; x++)
            for (int o = 0; o < L->cout; o++) {
                double acc = L->b[o];
                for (int ky = 0; ky < L->k; ky++) {
                    int yy = y + ky - pad;
                    if (yy < 0 || yy >= n)
                        continue;
                    for (int kx = 0; kx < L->k; kx++) {
                        int xx = x + kx - pad;
                        if (xx < 0 || xx >= n)
                            continue;
                        acc += dot(&L->w[(((size_t)o * L->k + ky) * L->k + kx) * L->cin],
                                   &in[((size_t)yy * n + xx) * L->cin], L->cin);
                    }
                }
                float v = (float)acc;
                out[((size_t)y * n + x) * L->cout + o] = relu && v < 0 ? 0.0f : v;
            }
}

/* PyTorch conv_transpose2d(stride=2, padding=1), 4x4 kernel: out[oy] gathers in[iy] * w[ky] over
 * oy = 2*iy - 1 + ky, i.e. ky of the parity of oy+1 and iy = (oy + 1 - ky) / 2. [n][n][cin] -> [2n][2n][cout]. */
static void conv_t(const layer *L, const float *in, int n, float *out)
{
    int m = 2 * n;
    for (int oy = 0; oy < m; oy++)
        for (int ox = 0; ox < m; ox++)
            for (int o = 0; o < L->cout; o++) {
                double acc = L->b[o];
                for (int ky = (oy + 1) & 1; ky < 4; ky += 2) {
                    int iy = (oy + 1 - ky) / 2;
                    if (iy < 0 || iy >= n)
                        continue;
                    for (int kx = (ox + 1) & 1; kx < 4; kx += 2) {
                        int ix = (ox + 1 - kx) / 2;
                        if (ix < 0 || ix >= n)
                            continue;
                        acc += dot(&L->w[(((size_t)o * 4 + ky) * 4 + kx) * L->cin],
                                   &in[((size_t)iy * n + ix) * L->cin], L->cin);
                    }
                }
                float v = (float)acc;
                out[((size_t)oy * m + ox) * L->cout + o] = v < 0 ? 0.0f : v;   /* every up layer has a ReLU */
            }
}

int pf_seg_decode(const pf_seg_decoder *d, const int codes[PF_SEG_CODES], float out[PF_SEG_OUT * PF_SEG_OUT],
                  pf_err *err)
{
    for (int i = 0; i < PF_SEG_CODES; i++)
        if (codes[i] < 0 || codes[i] >= PF_SEG_CODEBOOK)
            return pf_errf(err, "seg decoder: code %d of 16 is %d, want 0..%d", i, codes[i], PF_SEG_CODEBOOK - 1);
    /* Largest activation: 64x64x16 = 32x32x32 = 16x16x64 = 65536 floats; the 4x4 input is 16*D. */
    size_t big = 65536, first = (size_t)PF_SEG_CODES * (size_t)d->dim;
    float *a = malloc((big > first ? big : first) * sizeof *a), *b = malloc(big * sizeof *b),
          *c = malloc(big * sizeof *c);
    if (!a || !b || !c) {
        free(a);
        free(b);
        free(c);
        return pf_errf(err, "seg decoder: out of memory");
    }
    for (int i = 0; i < PF_SEG_CODES; i++)   /* code i -> (row i/4, column i%4): a row-major reshape */
        memcpy(&a[(size_t)i * d->dim], &d->codebook[(size_t)codes[i] * d->dim], (size_t)d->dim * sizeof *a);
    conv(&d->conv0, a, 4, b, 1);
    for (int r = 0; r < 2; r++) {   /* x (in b) -> b + conv1x1(relu(conv3(relu(conv3(x))))) */
        conv(&d->res[r][0], b, 4, a, 1);
        conv(&d->res[r][1], a, 4, c, 1);
        conv(&d->res[r][2], c, 4, a, 0);
        for (int i = 0; i < 4 * 4 * DIM; i++)
            b[i] += a[i];
    }
    float *src = b, *dst = a;
    for (int j = 0, n = 4; j < 4; j++, n *= 2) {
        conv_t(&d->up[j], src, n, dst);
        float *t = src;
        src = dst;
        dst = t;
    }
    conv(&d->conv1, src, PF_SEG_OUT, out, 0);
    free(a);
    free(b);
    free(c);
    return 0;
}
