/* npy.c - see npy.h. The header is a Python dict literal written by numpy's format.py
 * (`{'descr': '<f4', 'fortran_order': False, 'shape': (128, 512), }` padded with spaces to a 64-byte
 * boundary and ended by '\n'); this is a small recursive-descent reader of exactly that grammar. */
#include "model/seg/npy.h"

#include <stdio.h>
#include <string.h>

typedef struct cur {
    const char *p, *end;
    const char *name;
    pf_err *err;
} cur;

static void skip_ws(cur *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int bad(cur *c, const char *what)
{
    return pf_errf(c->err, "%s: .npy header: %s", c->name, what);
}

/* A quoted Python string without escapes (numpy's keys and dtype strings never hold any). */
static int quoted(cur *c, const char **s, size_t *n)
{
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return bad(c, "expected a quoted string");
    char q = *c->p++;
    const char *start = c->p;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\')
            return bad(c, "escapes in strings are not supported");
        c->p++;
    }
    if (c->p >= c->end)
        return bad(c, "unterminated string");
    *s = start;
    *n = (size_t)(c->p - start);
    c->p++;
    return 0;
}

static int word(cur *c, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) >= n && memcmp(c->p, w, n) == 0) {
        c->p += n;
        return 1;
    }
    return 0;
}

/* Dims above 2^40 are refused outright: no real array has them, and it keeps the product check simple. */
#define DIM_MAX ((int64_t)1 << 40)

static int shape_tuple(cur *c, pf_npy *a)
{
    if (c->p >= c->end || *c->p != '(')
        return bad(c, "'shape' must be a tuple");
    c->p++;
    a->ndim = 0;
    for (;;) {
        skip_ws(c);
        if (c->p < c->end && *c->p == ')') {
            c->p++;
            return 0;
        }
        if (a->ndim == PF_NPY_MAX_DIMS)
            return pf_errf(c->err, "%s: .npy header: more than %d dimensions", c->name, PF_NPY_MAX_DIMS);
        int64_t v = 0;
        int digits = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            v = v * 10 + (*c->p - '0');
            if (v > DIM_MAX)
                return pf_errf(c->err, "%s: .npy header: dimension above 2^40", c->name);
            c->p++;
            digits++;
        }
        if (!digits)
            return bad(c, "a shape entry is not a non-negative integer");
        if (c->p < c->end && *c->p == 'L')   /* Python 2 long literals in old files */
            c->p++;
        a->shape[a->ndim++] = v;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        if (c->p < c->end && *c->p == ')') {
            c->p++;
            return 0;
        }
        return bad(c, "expected ',' or ')' in 'shape'");
    }
}

static int dtype(cur *c, const char *s, size_t n, pf_npy *a)
{
    char d[16];
    if (n < 3 || n >= sizeof d)
        return pf_errf(c->err, "%s: .npy dtype '%.*s' is not supported (want e.g. '<f4')", c->name,
                       (int)(n < 32 ? n : 32), s);
    memcpy(d, s, n);
    d[n] = '\0';
    char order = d[0], kind = d[1];
    int size = 0;
    for (size_t i = 2; i < n; i++) {
        if (d[i] < '0' || d[i] > '9')
            return pf_errf(c->err, "%s: .npy dtype '%s' is not supported", c->name, d);
        size = size * 10 + (d[i] - '0');
        if (size > 64)
            return pf_errf(c->err, "%s: .npy dtype '%s' is not supported", c->name, d);
    }
    if (order == '>')
        return pf_errf(c->err, "%s: .npy dtype '%s' is big-endian (not supported)", c->name, d);
    if (order != '<' && order != '|')
        return pf_errf(c->err, "%s: .npy dtype '%s' is not supported", c->name, d);
    int ok = (kind == 'f' && (size == 2 || size == 4 || size == 8)) ||
             ((kind == 'i' || kind == 'u') && (size == 1 || size == 2 || size == 4 || size == 8)) ||
             (kind == 'b' && size == 1);
    if (!ok)
        return pf_errf(c->err, "%s: .npy dtype '%s' is not supported (numeric and bool arrays only)", c->name, d);
    if (order == '|' && size != 1)
        return pf_errf(c->err, "%s: .npy dtype '%s': no byte order on a multi-byte type", c->name, d);
    a->kind = kind;
    a->itemsize = size;
    return 0;
}

int pf_npy_parse(const uint8_t *buf, size_t len, const char *name, pf_npy *out, pf_err *err)
{
    memset(out, 0, sizeof *out);
    if (!name)
        name = "(array)";
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0)
        return pf_errf(err, "%s: not a .npy array (no \\x93NUMPY magic)", name);
    int major = buf[6];
    size_t hlen, hstart;
    if (major == 1) {
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8;
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12)
            return pf_errf(err, "%s: .npy header truncated", name);
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
        hstart = 12;
    } else {
        return pf_errf(err, "%s: .npy format version %d.%d is not supported", name, major, buf[7]);
    }
    if (hlen > len - hstart)
        return pf_errf(err, "%s: .npy header of %zu bytes but only %zu bytes follow", name, hlen, len - hstart);
    cur c = {(const char *)buf + hstart, (const char *)buf + hstart + hlen, name, err};
    int have_descr = 0, have_order = 0, have_shape = 0;
    skip_ws(&c);
    if (c.p >= c.end || *c.p != '{')
        return bad(&c, "not a dict");
    c.p++;
    for (;;) {
        skip_ws(&c);
        if (c.p < c.end && *c.p == '}') {
            c.p++;
            break;
        }
        const char *k;
        size_t kn;
        if (quoted(&c, &k, &kn))
            return -1;
        skip_ws(&c);
        if (c.p >= c.end || *c.p != ':')
            return bad(&c, "expected ':' after a key");
        c.p++;
        skip_ws(&c);
        if (kn == 5 && !memcmp(k, "descr", 5)) {
            const char *s;
            size_t sn;
            if (c.p < c.end && *c.p == '[')
                return bad(&c, "structured dtypes are not supported");
            if (quoted(&c, &s, &sn) || dtype(&c, s, sn, out))
                return -1;
            have_descr = 1;
        } else if (kn == 13 && !memcmp(k, "fortran_order", 13)) {
            if (word(&c, "True"))
                out->fortran_order = 1;
            else if (word(&c, "False"))
                out->fortran_order = 0;
            else
                return bad(&c, "'fortran_order' must be True or False");
            have_order = 1;
        } else if (kn == 5 && !memcmp(k, "shape", 5)) {
            if (shape_tuple(&c, out))
                return -1;
            have_shape = 1;
        } else {
            return pf_errf(err, "%s: .npy header: unexpected key '%.*s'", name, (int)(kn < 32 ? kn : 32), k);
        }
        skip_ws(&c);
        if (c.p < c.end && *c.p == ',') {
            c.p++;
            continue;
        }
        if (c.p < c.end && *c.p == '}') {
            c.p++;
            break;
        }
        return bad(&c, "expected ',' or '}'");
    }
    skip_ws(&c);
    if (c.p != c.end)
        return bad(&c, "bytes after the dict");
    if (!have_descr || !have_order || !have_shape)
        return bad(&c, "needs 'descr', 'fortran_order' and 'shape'");
    /* Product of dims, each <= 2^40: check against the payload before multiplying further. */
    size_t payload = len - hstart - hlen;
    uint64_t count = 1;
    for (int i = 0; i < out->ndim; i++) {
        if (out->shape[i] != 0 && count > (uint64_t)payload / (uint64_t)out->shape[i]) {
            char sh[128];
            return pf_errf(err, "%s: .npy shape %s needs more than the %zu data bytes present", name,
                           pf_npy_shape_str(out, sh, sizeof sh), payload);
        }
        count *= (uint64_t)out->shape[i];
    }
    if (count * (uint64_t)out->itemsize != (uint64_t)payload) {
        char sh[128];
        return pf_errf(err, "%s: .npy shape %s of %d-byte elements needs %llu data bytes, the array has %zu", name,
                       pf_npy_shape_str(out, sh, sizeof sh), out->itemsize,
                       (unsigned long long)(count * (uint64_t)out->itemsize), payload);
    }
    out->count = (int64_t)count;
    out->data = buf + hstart + hlen;
    out->nbytes = payload;
    return 0;
}

int pf_npy_is_f32(const pf_npy *a, int ndim, const int64_t *shape)
{
    if (a->kind != 'f' || a->itemsize != 4 || a->ndim != ndim)
        return 0;
    if (a->fortran_order && ndim > 1)
        return 0;
    for (int i = 0; i < ndim; i++)
        if (a->shape[i] != shape[i])
            return 0;
    return 1;
}

const char *pf_npy_shape_str(const pf_npy *a, char *buf, size_t n)
{
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < a->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)a->shape[i]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
    return buf;
}
