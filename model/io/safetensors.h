/* safetensors.h - read (memory-mapped, fully validated) and write .safetensors files.
 *
 * Format: u64 little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ..., "__metadata__": {...}}
 * then the data; offsets are relative to the first byte after the header.
 * The reader trusts nothing: header length, JSON, dtypes, shapes (overflow), offsets (inside the file,
 * matching dtype*shape, not overlapping) are all checked before any tensor is handed out.
 */
#ifndef PF_MODEL_SAFETENSORS_H
#define PF_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/file.h"
#include "model/math/dtype.h"

#define PF_ST_MAX_DIMS 8
#define PF_ST_MAX_HEADER (100u << 20) /* 100 MB of JSON is far beyond any real checkpoint */

typedef struct pf_st_tensor {
    char *name;
    pf_dtype dtype;
    int ndim;
    int64_t shape[PF_ST_MAX_DIMS];
    size_t numel;
    const uint8_t *data; /* inside the mapping; may be unaligned for dtype: read with memcpy or convert */
    size_t nbytes;
} pf_st_tensor;

typedef struct pf_st_file {
    char *path;
    pf_map map;
    pf_st_tensor *tensors; /* sorted by name */
    size_t count;
} pf_st_file;

int pf_st_open(const char *path, pf_st_file *out, pf_err *err);
/* The same validation over a caller's buffer holding a whole file (fuzzing, tests). Tensors point into
 * buf, which must outlive the pf_st_file; name is used in messages. */
int pf_st_open_memory(const char *name, const uint8_t *buf, size_t size, pf_st_file *out, pf_err *err);
void pf_st_close(pf_st_file *f);
/* Binary search by name; NULL if absent. */
const pf_st_tensor *pf_st_find(const pf_st_file *f, const char *name);

/* Copy a float tensor (F32/F16/BF16/F64) into dst as f32 (numel elements). */
int pf_st_read_f32(const pf_st_tensor *t, float *dst, pf_err *err);
/* Copy an integer tensor (I64/I32/I16/I8/U8/BOOL) into dst as int64. */
int pf_st_read_i64(const pf_st_tensor *t, int64_t *dst, pf_err *err);

/* Writing: describe each tensor; data is either a buffer (data != NULL) or produced in chunks by fill()
 * so multi-GB checkpoints never sit in memory at once. */
typedef struct pf_st_entry {
    const char *name;
    pf_dtype dtype;
    int ndim;
    int64_t shape[PF_ST_MAX_DIMS];
    const void *data;
    /* fill(ctx, dst, offset, n): write bytes [offset, offset+n) of this tensor into dst. */
    int (*fill)(void *ctx, uint8_t *dst, size_t offset, size_t n, pf_err *err);
    void *fill_ctx;
} pf_st_entry;

/* Write entries (in the given order) to PATH, atomically (PATH.tmp then rename).
 * metadata_json may be NULL or a JSON object text for "__metadata__" (string values only). */
int pf_st_write(const char *path, const pf_st_entry *entries, size_t n, const char *metadata_json, pf_err *err);

#endif
