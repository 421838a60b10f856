/* npy.h - one NumPy .npy array held in memory (format versions 1.0, 2.0, 3.0), parsed with every size
 * checked against the bytes present before anything is used.
 *
 * Only what big_vision's checkpoints and our golden data use is accepted: little-endian or byte-order-free
 * numeric dtypes ('<f4', '<f8', '<i4', '<i8', '|u1', '|b1', ...), C or Fortran order, up to 8 dimensions,
 * and a payload of exactly prod(shape) * itemsize bytes. Object arrays (pickles), big-endian data, structured
 * dtypes and trailing or missing bytes are refused with the array's name and the reason.
 */
#ifndef PF_MODEL_SEG_NPY_H
#define PF_MODEL_SEG_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define PF_NPY_MAX_DIMS 8

typedef struct pf_npy {
    char kind;                  /* 'f' float, 'i' signed int, 'u' unsigned int, 'b' bool */
    int itemsize;               /* bytes per element */
    int fortran_order;
    int ndim;
    int64_t shape[PF_NPY_MAX_DIMS];
    int64_t count;              /* elements: the product of shape (1 for a 0-d array) */
    const uint8_t *data;        /* points into the parsed buffer (not owned) */
    size_t nbytes;
} pf_npy;

/* Parse the .npy bytes BUF[0..LEN). NAME (the array's name, e.g. "decoder.0.weight") goes in messages. */
int pf_npy_parse(const uint8_t *buf, size_t len, const char *name, pf_npy *out, pf_err *err);

/* True when A holds float32 ("<f4") elements in C order with exactly the NDIM dims in SHAPE. */
int pf_npy_is_f32(const pf_npy *a, int ndim, const int64_t *shape);

/* "[128, 512, 1, 1]" (or "[]") into BUF of N bytes, for messages. */
const char *pf_npy_shape_str(const pf_npy *a, char *buf, size_t n);

#endif
