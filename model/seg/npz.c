/* npz.c - see npz.h. libarchive's seekable zip reader walks the central directory, so members written with
 * data descriptors (streamed zips) and zip64 members (np.savez forces zip64) both work. */
#include "model/seg/npz.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/grow.h"

pf_npz_limits pf_npz_default_limits(void)
{
    return (pf_npz_limits){.max_members = 4096, .max_member_bytes = 1ull << 30, .max_total_bytes = 4ull << 30};
}

void pf_npz_free(pf_npz *z)
{
    if (!z)
        return;
    for (size_t i = 0; i < z->n; i++) {
        free(z->m[i].name);
        free(z->m[i].bytes);
    }
    free(z->m);
    z->m = NULL;
    z->n = 0;
}

const pf_npy *pf_npz_get(const pf_npz *z, const char *name)
{
    for (size_t i = 0; i < z->n; i++)
        if (!strcmp(z->m[i].name, name))
            return &z->m[i].arr;
    return NULL;
}

/* Read exactly SIZE bytes of the current member; one more byte would mean the declared size lied. */
static int read_member(struct archive *a, uint8_t *dst, size_t size, const char *label, const char *name,
                       pf_err *err)
{
    size_t got = 0;
    while (got < size) {
        la_ssize_t r = archive_read_data(a, dst + got, size - got);
        if (r < 0)
            return pf_errf(err, "%s: member '%s': %s", label, name, archive_error_string(a));
        if (r == 0)
            return pf_errf(err, "%s: member '%s': %zu bytes where the directory declares %zu", label, name, got,
                           size);
        got += (size_t)r;
    }
    uint8_t extra;
    la_ssize_t r = archive_read_data(a, &extra, 1);
    if (r < 0)
        return pf_errf(err, "%s: member '%s': %s", label, name, archive_error_string(a));
    if (r > 0)
        return pf_errf(err, "%s: member '%s': more data than the %zu bytes the directory declares", label, name,
                       size);
    return 0;
}

int pf_npz_read_memory(const void *buf, size_t len, const char *label, const pf_npz_limits *lim, pf_npz *out,
                       pf_err *err)
{
    pf_npz_limits def = pf_npz_default_limits();
    if (!lim)
        lim = &def;
    if (!label)
        label = "(npz)";
    memset(out, 0, sizeof *out);
    if (len == 0)
        return pf_errf(err, "%s: empty file, not an .npz archive", label);
    struct archive *a = archive_read_new();
    if (!a)
        return pf_errf(err, "%s: out of memory", label);
    int rc = -1;
    size_t cap = 0;
    uint64_t total = 0;
    /* Zip only, through the central directory: an .npz is never anything else. */
    if (archive_read_support_format_zip_seekable(a) != ARCHIVE_OK ||
        archive_read_open_memory(a, buf, len) != ARCHIVE_OK) {
        pf_errf(err, "%s: not a zip archive (.npz): %s", label, archive_error_string(a));
        goto done;
    }
    for (;;) {
        struct archive_entry *e;
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK) {
            pf_errf(err, "%s: bad zip entry after %zu members: %s", label, out->n, archive_error_string(a));
            goto done;
        }
        const char *path = archive_entry_pathname(e);
        if (!path || !*path) {
            pf_errf(err, "%s: a zip member without a name", label);
            goto done;
        }
        size_t pl = strlen(path);
        if (archive_entry_filetype(e) != AE_IFREG || pl < 5 || strcmp(path + pl - 4, ".npy") != 0)
            continue;   /* np.load ignores members that are not .npy arrays too (it returns their bytes) */
        if (archive_entry_is_encrypted(e)) {
            pf_errf(err, "%s: member '%s' is encrypted", label, path);
            goto done;
        }
        if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0) {
            pf_errf(err, "%s: member '%s' has no declared size", label, path);
            goto done;
        }
        uint64_t size = (uint64_t)archive_entry_size(e);
        if (size > lim->max_member_bytes || size > lim->max_total_bytes - total) {
            pf_errf(err, "%s: member '%s' declares %llu bytes, above the limit (%llu per member, %llu in all)",
                    label, path, (unsigned long long)size, (unsigned long long)lim->max_member_bytes,
                    (unsigned long long)lim->max_total_bytes);
            goto done;
        }
        if (out->n == lim->max_members) {
            pf_errf(err, "%s: more than %zu members", label, lim->max_members);
            goto done;
        }
        char *name = strndup(path, pl - 4);
        if (!name) {
            pf_errf(err, "%s: out of memory", label);
            goto done;
        }
        if (pf_npz_get(out, name)) {
            pf_errf(err, "%s: member '%s' appears twice", label, path);
            free(name);
            goto done;
        }
        if (PF_GROW(out->m, cap, out->n, 1, 32)) {
            free(name);
            pf_errf(err, "%s: out of memory", label);
            goto done;
        }
        pf_npz_member *m = &out->m[out->n];
        memset(m, 0, sizeof *m);
        m->name = name;
        m->bytes = malloc(size ? (size_t)size : 1);
        out->n++;
        if (!m->bytes) {
            pf_errf(err, "%s: member '%s': out of memory for %llu bytes", label, path, (unsigned long long)size);
            goto done;
        }
        m->len = (size_t)size;
        total += size;
        if (read_member(a, m->bytes, m->len, label, path, err))
            goto done;
        if (pf_npy_parse(m->bytes, m->len, m->name, &m->arr, err)) {
            pf_err_prefix(err, "%s", label);
            goto done;
        }
    }
    rc = 0;
done:
    archive_read_free(a);
    if (rc)
        pf_npz_free(out);
    return rc;
}

int pf_npz_read_file(const char *path, const pf_npz_limits *lim, pf_npz *out, pf_err *err)
{
    pf_npz_limits def = pf_npz_default_limits();
    if (!lim)
        lim = &def;
    memset(out, 0, sizeof *out);
    /* Mapped, not read: the members are copied out (inflated) once, the archive itself never is. */
    pf_map map;
    if (pf_map_file(path, &map, err))
        return -1;
    int rc;
    if ((uint64_t)map.size > lim->max_total_bytes)
        rc = pf_errf(err, "%s: %zu bytes, above the limit of %llu", path, map.size,
                     (unsigned long long)lim->max_total_bytes);
    else
        rc = pf_npz_read_memory(map.data, map.size, path, lim, out, err);
    pf_unmap(&map);
    return rc;
}
