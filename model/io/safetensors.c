/* safetensors.c - see safetensors.h. A checkpoint file is untrusted input: every number its JSON header
 * states (dtype, shape, data_offsets) is checked against the file's real size before a tensor pointer is
 * handed out, so a truncated or lying file is refused by name at open instead of faulting at first use. */
#include "model/io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/file.h"

/* ---- reading ---------------------------------------------------------------------------------- */

/* Tensors are kept sorted by name: a load looks up about a thousand of them by name (pf_st_find), so a
 * binary search instead of a scan per lookup. */
static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const pf_st_tensor *)a)->name, ((const pf_st_tensor *)b)->name);
}

/* By start address, for check_overlaps: overlaps are found between neighbours in O(n log n). */
static int cmp_tensor_ptr_offset(const void *a, const void *b)
{
    const pf_st_tensor *x = *(const pf_st_tensor *const *)a, *y = *(const pf_st_tensor *const *)b;
    return x->data < y->data ? -1 : x->data > y->data;
}

/* json integer in [0, max] */
static int json_uint(const json_t *v, uint64_t max, uint64_t *out)
{
    if (!json_is_integer(v))
        return -1;
    json_int_t x = json_integer_value(v);
    if (x < 0 || (uint64_t)x > max)
        return -1;
    *out = (uint64_t)x;
    return 0;
}

static int parse_entry(const char *path, const char *name, json_t *desc, const uint8_t *data, size_t data_size,
                       pf_st_tensor *t, pf_err *err)
{
    if (!json_is_object(desc))
        return pf_errf(err, "%s: tensor %s: header entry is not an object", path, name);
    json_t *jdt = json_object_get(desc, "dtype");
    json_t *jshape = json_object_get(desc, "shape");
    json_t *joff = json_object_get(desc, "data_offsets");
    if (!json_is_string(jdt))
        return pf_errf(err, "%s: tensor %s: missing or non-string dtype", path, name);
    if (pf_dtype_from_name(json_string_value(jdt), &t->dtype) != 0)
        return pf_errf(err, "%s: tensor %s: unknown dtype \"%s\"", path, name, json_string_value(jdt));
    if (!json_is_array(jshape) || json_array_size(jshape) > PF_ST_MAX_DIMS)
        return pf_errf(err, "%s: tensor %s: shape must be an array of at most %d dimensions", path, name,
                       PF_ST_MAX_DIMS);
    t->ndim = (int)json_array_size(jshape);
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t dim;
        /* 2^40 is far above any real dimension; the cap keeps a hostile value from wrapping the int64_t shape
         * and keeps the overflow checks below meaningful. */
        if (json_uint(json_array_get(jshape, (size_t)d), (uint64_t)1 << 40, &dim) != 0)
            return pf_errf(err, "%s: tensor %s: shape[%d] is not a sane non-negative integer", path, name, d);
        t->shape[d] = (int64_t)dim;
        if (dim != 0 && numel > UINT64_MAX / dim)
            return pf_errf(err, "%s: tensor %s: shape overflows", path, name);
        numel *= dim;
    }
    uint64_t esize = pf_dtype_size(t->dtype);
    if (numel > UINT64_MAX / esize)
        return pf_errf(err, "%s: tensor %s: byte size overflows", path, name);
    uint64_t nbytes = numel * esize;
    uint64_t b, e;
    if (!json_is_array(joff) || json_array_size(joff) != 2 || json_uint(json_array_get(joff, 0), data_size, &b) ||
        json_uint(json_array_get(joff, 1), data_size, &e) || e < b)
        return pf_errf(err, "%s: tensor %s: data_offsets must be [begin, end] within the %zu data bytes", path,
                       name, data_size);
    /* The span must be exactly what dtype x shape needs: a longer one would hide bytes another tensor may
     * claim, a shorter one would let readers of numel elements run past it. */
    if (e - b != nbytes)
        return pf_errf(err, "%s: tensor %s: data_offsets span %llu bytes but dtype %s x shape needs %llu", path,
                       name, (unsigned long long)(e - b), pf_dtype_name(t->dtype), (unsigned long long)nbytes);
    t->numel = (size_t)numel;
    t->nbytes = (size_t)nbytes;
    t->data = data + b;
    t->name = strdup(name);
    if (!t->name)
        return pf_errf(err, "%s: out of memory", path);
    return 0;
}

/* Tensors must not share bytes (zero-sized tensors excepted): the format lays tensors end to end, so shared
 * bytes mean a corrupt or crafted header, and one region would be read as two different weights. */
static int check_overlaps(const pf_st_file *f, pf_err *err)
{
    if (f->count < 2)
        return 0;
    const pf_st_tensor **order = malloc(f->count * sizeof *order);
    if (!order)
        return pf_errf(err, "%s: out of memory", f->path);
    size_t k = 0;
    for (size_t i = 0; i < f->count; i++)
        if (f->tensors[i].nbytes > 0)
            order[k++] = &f->tensors[i];
    qsort(order, k, sizeof *order, cmp_tensor_ptr_offset);
    for (size_t i = 1; i < k; i++) {
        if (order[i - 1]->data + order[i - 1]->nbytes > order[i]->data) {
            pf_errf(err, "%s: tensors %s and %s overlap in the data section", f->path, order[i - 1]->name,
                    order[i]->name);
            free(order);
            return -1;
        }
    }
    free(order);
    return 0;
}

static int parse_header(pf_st_file *f, const uint8_t *hdr, size_t hlen, const uint8_t *data, size_t dsize,
                        pf_err *err)
{
    json_error_t jerr;
    /* A name given twice would make which tensor wins depend on the JSON parser: refuse it. */
    json_t *root = json_loadb((const char *)hdr, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return pf_errf(err, "%s: header is not valid JSON (line %d column %d: %s)", f->path, jerr.line,
                       jerr.column, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return pf_errf(err, "%s: header is not a JSON object", f->path);
    }
    size_t n = json_object_size(root);
    /* At least one slot: calloc(0) may return NULL, which would read as out of memory for an empty file. */
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    if (!f->tensors) {
        json_decref(root);
        return pf_errf(err, "%s: out of memory", f->path);
    }
    const char *key;
    json_t *val;
    int rc = 0;
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0) /* free-form strings (e.g. "format": "pt"), not a tensor */
            continue;
        rc = parse_entry(f->path, key, val, data, dsize, &f->tensors[f->count], err);
        if (rc != 0)
            break;
        f->count++;
    }
    json_decref(root);
    if (rc != 0)
        return -1;
    qsort(f->tensors, f->count, sizeof *f->tensors, cmp_tensor_name);
    return check_overlaps(f, err);
}

/* Validate the whole file image buf[0, size) and index its tensors (which point into buf). */
static int parse_buffer(pf_st_file *out, const uint8_t *buf, size_t size, pf_err *err)
{
    const char *path = out->path;
    if (size < 8)
        return pf_errf(err, "%s: file is %zu bytes, too short for a safetensors header", path, size);
    /* The header length is a little-endian u64 whatever the host; assembled byte by byte (no unaligned load). */
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | buf[i];
    /* Checked before anything is allocated or parsed: the JSON parser never sees more than the file holds, and
     * a huge claimed length costs nothing. */
    if (hlen > PF_ST_MAX_HEADER || hlen > size - 8)
        return pf_errf(err, "%s: header length %llu exceeds the file (%zu bytes) or the %u-byte limit: truncated "
                            "or not a safetensors file",
                       path, (unsigned long long)hlen, size, PF_ST_MAX_HEADER);
    const uint8_t *data = buf + 8 + hlen;
    size_t dsize = size - 8 - (size_t)hlen;
    return parse_header(out, buf + 8, (size_t)hlen, data, dsize, err);
}

int pf_st_open(const char *path, pf_st_file *out, pf_err *err)
{
    memset(out, 0, sizeof *out);
    out->path = strdup(path);
    if (!out->path)
        return pf_errf(err, "%s: out of memory", path);
    /* The one file we map rather than read: checkpoint weights are gigabytes, read-only and static for the
     * life of the process (a deployment swaps a model by restarting workers, never by rewriting the file
     * in place), and mapping them lets the kernel share and evict the pages. pf_map_file still refuses
     * anything but a regular file before mapping (no FIFO or device). */
    if (pf_map_file(path, &out->map, err) != 0 || parse_buffer(out, out->map.data, out->map.size, err) != 0) {
        pf_st_close(out);
        return -1;
    }
    return 0;
}

int pf_st_open_memory(const char *name, const uint8_t *buf, size_t size, pf_st_file *out, pf_err *err)
{
    memset(out, 0, sizeof *out);
    out->path = strdup(name);
    if (!out->path)
        return pf_errf(err, "%s: out of memory", name);
    if (parse_buffer(out, buf, size, err) != 0) {
        pf_st_close(out);
        return -1;
    }
    return 0;
}

void pf_st_close(pf_st_file *f)
{
    if (f->tensors)
        for (size_t i = 0; i < f->count; i++)
            free(f->tensors[i].name);
    free(f->tensors);
    pf_unmap(&f->map);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const pf_st_tensor *pf_st_find(const pf_st_file *f, const char *name)
{
    size_t lo = 0, hi = f->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->tensors[mid].name);
        if (c == 0)
            return &f->tensors[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

int pf_st_read_f32(const pf_st_tensor *t, float *dst, pf_err *err)
{
    if (pf_convert_to_f32(t->dtype, t->data, t->numel, dst) != 0)
        return pf_errf(err, "tensor %s: dtype %s is not a float type", t->name, pf_dtype_name(t->dtype));
    return 0;
}

/* memcpy per element: a tensor's data starts wherever the header's length puts it, so it may be unaligned. */
int pf_st_read_i64(const pf_st_tensor *t, int64_t *dst, pf_err *err)
{
    const uint8_t *p = t->data;
    for (size_t i = 0; i < t->numel; i++) {
        switch (t->dtype) {
        case PF_DT_I64: memcpy(&dst[i], p + 8 * i, 8); break;
        case PF_DT_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); dst[i] = v; break; }
        case PF_DT_I16: { int16_t v; memcpy(&v, p + 2 * i, 2); dst[i] = v; break; }
        case PF_DT_I8: dst[i] = (int8_t)p[i]; break;
        case PF_DT_U8:
        case PF_DT_BOOL: dst[i] = p[i]; break;
        default:
            return pf_errf(err, "tensor %s: dtype %s is not an integer type", t->name, pf_dtype_name(t->dtype));
        }
    }
    return 0;
}

/* ---- writing ---------------------------------------------------------------------------------- */

static int entry_bytes(const pf_st_entry *e, size_t *out, pf_err *err)
{
    if (e->ndim < 0 || e->ndim > PF_ST_MAX_DIMS)
        return pf_errf(err, "tensor %s: %d dimensions", e->name, e->ndim);
    uint64_t n = pf_dtype_size(e->dtype);
    for (int d = 0; d < e->ndim; d++) {
        if (e->shape[d] < 0 || (e->shape[d] != 0 && n > UINT64_MAX / (uint64_t)e->shape[d]))
            return pf_errf(err, "tensor %s: bad shape", e->name);
        n *= (uint64_t)e->shape[d];
    }
    *out = (size_t)n;
    return 0;
}

static char *build_header(const pf_st_entry *entries, size_t n, const char *metadata_json, size_t *hlen,
                          pf_err *err)
{
    json_t *root = json_object();
    if (metadata_json) {
        json_error_t jerr;
        json_t *meta = json_loads(metadata_json, 0, &jerr);
        if (!json_is_object(meta)) {
            json_decref(meta);
            json_decref(root);
            pf_errf(err, "safetensors metadata is not a JSON object");
            return NULL;
        }
        json_object_set_new(root, "__metadata__", meta);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t nb = 0;
        if (entry_bytes(&entries[i], &nb, err) != 0) {
            json_decref(root);
            return NULL;
        }
        json_t *shape = json_array();
        for (int d = 0; d < entries[i].ndim; d++)
            json_array_append_new(shape, json_integer(entries[i].shape[d]));
        json_t *desc = json_pack("{s:s, s:o, s:[I,I]}", "dtype", pf_dtype_name(entries[i].dtype), "shape", shape,
                                 "data_offsets", (json_int_t)off, (json_int_t)(off + nb));
        if (!desc || json_object_set_new(root, entries[i].name, desc) != 0) {
            json_decref(root);
            pf_errf(err, "tensor %s: cannot build header entry (duplicate name?)", entries[i].name);
            return NULL;
        }
        off += nb;
    }
    /* Insertion order = data order: the same entries always give the same bytes (reproducible files). */
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text) {
        pf_errf(err, "out of memory building safetensors header");
        return NULL;
    }
    /* Pad with spaces so the data section starts 8-byte aligned, as the reference writer does. */
    size_t len = strlen(text), padded = (len + 7) & ~(size_t)7;
    char *out = realloc(text, padded + 1);
    if (!out) {
        free(text);
        pf_errf(err, "out of memory building safetensors header");
        return NULL;
    }
    memset(out + len, ' ', padded - len);
    out[padded] = '\0';
    *hlen = padded;
    return out;
}

static int write_all(int fd, const void *buf, size_t n, const char *path, pf_err *err)
{
    return pf_write_all(fd, buf, n) ? pf_errf(err, "%s: write: %s", path, strerror(errno)) : 0;
}

/* A tensor with a fill callback is produced chunk by chunk (random checkpoints): a 3B model's LM head is over
 * a gigabyte, which the writer never needs to hold at once. */
static int write_entry_data(int fd, const pf_st_entry *e, size_t nbytes, const char *path, uint8_t *chunk,
                            size_t chunk_size, pf_err *err)
{
    if (e->data)
        return write_all(fd, e->data, nbytes, path, err);
    if (!e->fill)
        return pf_errf(err, "tensor %s: neither data nor fill given", e->name);
    for (size_t off = 0; off < nbytes; off += chunk_size) {
        size_t n = nbytes - off < chunk_size ? nbytes - off : chunk_size;
        if (e->fill(e->fill_ctx, chunk, off, n, err) != 0)
            return pf_err_prefix(err, "tensor %s", e->name);
        if (write_all(fd, chunk, n, path, err) != 0)
            return -1;
    }
    return 0;
}

int pf_st_write(const char *path, const pf_st_entry *entries, size_t n, const char *metadata_json, pf_err *err)
{
    size_t hlen;
    char *header = build_header(entries, n, metadata_json, &hlen, err);
    if (!header)
        return pf_err_prefix(err, "%s", path);
    size_t tl = strlen(path) + 32;
    char *tmp = malloc(tl);
    size_t chunk_size = 4u << 20;
    uint8_t *chunk = malloc(chunk_size);
    int fd = -1, rc = -1;
    if (!tmp || !chunk) {
        pf_errf(err, "%s: out of memory", path);
        goto done;
    }
    /* Written beside the target, synced, then renamed over it: a crash leaves the old file or the new one,
     * never a torn checkpoint under the real name. The pid keeps two writers off each other's temp file. */
    snprintf(tmp, tl, "%s.tmp.%d", path, (int)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        pf_errf(err, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    if (write_all(fd, len8, 8, tmp, err) || write_all(fd, header, hlen, tmp, err))
        goto done;
    for (size_t i = 0; i < n; i++) {
        size_t nb = 0;
        if (entry_bytes(&entries[i], &nb, err) || write_entry_data(fd, &entries[i], nb, tmp, chunk, chunk_size, err))
            goto done;
    }
    if (fsync(fd) != 0) {
        pf_errf(err, "%s: fsync: %s", tmp, strerror(errno));
        goto done;
    }
    if (close(fd) != 0) {
        fd = -1;
        pf_errf(err, "%s: close: %s", tmp, strerror(errno));
        goto done;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        pf_errf(err, "%s: rename: %s", path, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    if (fd >= 0)
        close(fd);
    if (rc != 0 && tmp)
        unlink(tmp);
    free(tmp);
    free(chunk);
    free(header);
    return rc;
}
