/* archive_open.c - the libarchive handle every shard read goes through: which formats and filters are
 * accepted, the walk over entries (counting them, watching the inflation ratio), the per-entry checks and
 * the bounded read of one member's bytes. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pipeline/archive/archive_internal.h"

/* The filters libarchive runs itself; a filter it would hand to an external program (ARCHIVE_WARN) is not
 * wanted (a process per shard, and a program we do not control reading hostile bytes): it stays off. */
static int support(struct archive *a, pf_err *err, const char *shard)
{
    int (*const filters[])(struct archive *) = {archive_read_support_filter_gzip, archive_read_support_filter_bzip2,
                                                archive_read_support_filter_xz, archive_read_support_filter_zstd};
    /* zip: the seekable reader (the central directory: member types, symlinks included, are only there) for a
     * whole zip, its directory size checked first (zip_directory_ok); the streaming one, local headers only,
     * takes a zip whose directory is gone (cut short) so that the members before the cut still count. */
    if (archive_read_support_format_tar(a) != ARCHIVE_OK || archive_read_support_format_zip(a) != ARCHIVE_OK)
        return pf_errf(err, "%s: libarchive: %s", shard, archive_error_string(a));
    for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++)
        filters[i](a);   /* ARCHIVE_WARN: built without that library; such shards fail to open, named */
    return 0;
}

static uint32_t le16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t le32(const uint8_t *p) { return le16(p) | le16(p + 2) << 16; }
static uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

/* LEN bytes at OFF of the shard into BUF: 0, or -1 when they are not all there. */
static int read_at(const pf_arc_src *src, int fd, uint64_t off, uint8_t *buf, size_t len)
{
    if (src->buf) {
        if (off > src->len || len > src->len - off)
            return -1;
        memcpy(buf, (const uint8_t *)src->buf + off, len);
        return 0;
    }
    return pread(fd, buf, len, (off_t)off) == (ssize_t)len ? 0 : -1;
}

/* libarchive's seekable zip reader loads the whole central directory before the first member, so its memory
 * grows with the member count before any cap of ours acts: a zip whose end-of-directory record (zip64's
 * included) announces more than PF_ARCHIVE_MAX_ENTRIES members or a directory over
 * PF_ARCHIVE_MAX_ZIP_DIRECTORY bytes is refused here, from the record (at most 64 KiB + 22 bytes read).
 * Anything else (a tar, no record found) is left to libarchive. */
static int zip_directory_ok(const pf_arc_src *src, int fd, uint64_t size, pf_err *err)
{
    uint8_t head[4];
    if (size < 22 || read_at(src, fd, 0, head, 4) || memcmp(head, "PK", 2))
        return 0;
    size_t tail = size < 65557 ? (size_t)size : 65557;
    uint8_t *t = malloc(tail);
    if (!t)
        return pf_errf(err, "%s: out of memory", src->path);
    int rc = 0;
    if (read_at(src, fd, size - tail, t, tail) == 0)
        for (size_t i = tail - 22 + 1; i-- > 0;) {
            if (memcmp(t + i, "PK\5\6", 4))
                continue;
            uint64_t n = le16(t + i + 10), cd = le32(t + i + 12);
            uint8_t z[56];
            if ((n == 0xFFFF || cd == 0xFFFFFFFFu) && i >= 20 && !memcmp(t + i - 20, "PK\6\7", 4) &&
                read_at(src, fd, le64(t + i - 20 + 8), z, sizeof z) == 0 && !memcmp(z, "PK\6\6", 4)) {
                n = le64(z + 32);
                cd = le64(z + 40);
            }
            if (n > PF_ARCHIVE_MAX_ENTRIES || cd > PF_ARCHIVE_MAX_ZIP_DIRECTORY)
                rc = pf_errf(err, "%s: zip directory of %llu members, %llu bytes: over the limit of %u members, "
                             "%llu bytes (its reading would hold it all in memory)", src->path,
                             (unsigned long long)n, (unsigned long long)cd, PF_ARCHIVE_MAX_ENTRIES,
                             (unsigned long long)PF_ARCHIVE_MAX_ZIP_DIRECTORY);
            break;
        }
    free(t);
    return rc;
}

int pf_arc_open(const pf_arc_src *src, pf_arc *h, pf_err *err)
{
    h->a = NULL;
    h->fd = -1;
    h->next = 0;
    const char *shard = src->path;
    uint64_t size = src->len;
    if (!src->buf) {
        /* O_NONBLOCK: opening a fifo must not hang the producer; cleared once we know it is a file */
        int fd = open(shard, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
            return pf_errf(err, "%s: cannot open the shard: %s", shard, strerror(errno));
        struct stat st;
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            close(fd);
            return pf_errf(err, "%s: not a regular file", shard);
        }
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0)
            fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
        h->fd = fd;
        size = (uint64_t)st.st_size;
    }
    if (zip_directory_ok(src, h->fd, size, err)) {
        pf_arc_close(h);
        return -1;
    }
    if (!(h->a = archive_read_new())) {
        pf_arc_close(h);
        return pf_errf(err, "%s: out of memory", shard);
    }
    if (support(h->a, err, shard)) {
        pf_arc_close(h);
        return -1;
    }
    int rc = src->buf ? archive_read_open_memory(h->a, src->buf, src->len) : archive_read_open_fd(h->a, h->fd, 65536);
    if (rc != ARCHIVE_OK) {
        pf_errf(err, "%s: not a readable tar or zip shard: %s", shard, archive_error_string(h->a));
        pf_arc_close(h);
        return -1;
    }
    return 0;
}

void pf_arc_close(pf_arc *h)
{
    if (h->a)
        archive_read_free(h->a);
    if (h->fd >= 0)
        close(h->fd);
    h->a = NULL;
    h->fd = -1;
}

int pf_arc_is_bomb(pf_arc *h)
{
    if (archive_filter_count(h->a) < 2)   /* no compression filter: bytes out = bytes in */
        return 0;
    int64_t out = archive_filter_bytes(h->a, 0), in = archive_filter_bytes(h->a, -1);
    return out > (int64_t)PF_ARCHIVE_RATIO_FLOOR && in > 0 && out / in > PF_ARCHIVE_MAX_RATIO;
}

int pf_arc_next(pf_arc *h, const char *shard, struct archive_entry **e, const char **name, pf_err *err)
{
    if (pf_arc_is_bomb(h))
        return pf_errf(err, "%s: inflates to over %u times its compressed size (a compression bomb): the rest of "
                       "the shard is not read", shard, PF_ARCHIVE_MAX_RATIO);
    int rc = archive_read_next_header(h->a, e);
    if (rc == ARCHIVE_EOF)
        return 0;
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
        const char *why = archive_error_string(h->a);
        return pf_errf(err, "%s: truncated or corrupt shard after %lld member%s: %s", shard, (long long)h->next,
                       h->next == 1 ? "" : "s", why ? why : "unknown libarchive error");
    }
    h->next++;
    *name = archive_entry_pathname(*e);
    if (!*name)   /* not convertible to the locale's charset: the UTF-8 form, if the format kept one */
        *name = archive_entry_pathname_utf8(*e);
    return 1;
}

const char *pf_arc_entry_refusal(struct archive_entry *e, size_t max, char *buf, size_t cap)
{
    if (archive_entry_hardlink(e))
        return "a hard link to another member, not a file";
    switch (archive_entry_filetype(e)) {
    case AE_IFREG:
        break;
    case AE_IFLNK:
        return "a symbolic link, not a file";
    case AE_IFDIR:
        return "a directory, not a file";
    case AE_IFCHR:
    case AE_IFBLK:
        return "a device, not a file";
    case AE_IFIFO:
        return "a fifo, not a file";
    default:
        return "not a regular file";
    }
    if (archive_entry_size_is_set(e) && archive_entry_size(e) > (la_int64_t)max) {
        snprintf(buf, cap, "member of %lld bytes is over the limit of %zu bytes (--max-file-mb)",
                 (long long)archive_entry_size(e), max);
        return buf;
    }
    return NULL;
}

int pf_arc_read_data(pf_arc *h, const char *shard, const char *name, int64_t size_hint, size_t max,
                     uint8_t **data, size_t *len, int *refused, pf_err *err)
{
    *data = NULL;
    *len = 0;
    *refused = 0;
    /* The stored size only sizes the first buffer (never past MAX); the bytes are counted as they come. */
    size_t cap = size_hint >= 0 && (uint64_t)size_hint <= max ? (size_t)size_hint : (max < 65536 ? max : 65536);
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf)
        return pf_errf(err, "%s#%s: out of memory", shard, name);
    size_t n = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= max) {   /* full at the limit: one byte more means too big */
                char probe;
                la_ssize_t r = archive_read_data(h->a, &probe, 1);
                if (r == 0)
                    break;
                free(buf);
                if (r < 0)
                    return pf_errf(err, "%s#%s: truncated or corrupt member: %s", shard, name,
                                   archive_error_string(h->a));
                *refused = 1;
                return pf_errf(err, "%s#%s: member is over the limit of %zu bytes (--max-file-mb; counted while "
                               "reading)", shard, name, max);
            }
            /* grow (a stored size of 0 may hide bytes: a zip's local header can lie); cap < max here */
            size_t nc = cap == 0 ? (max < 65536 ? max : 65536) : cap > max / 2 ? max : 2 * cap;
            uint8_t *nb = realloc(buf, nc);
            if (!nb) {
                free(buf);
                return pf_errf(err, "%s#%s: out of memory", shard, name);
            }
            buf = nb;
            cap = nc;
        }
        la_ssize_t r = archive_read_data(h->a, buf + n, cap - n);
        if (r == 0)
            break;
        if (r < 0) {
            free(buf);
            return pf_errf(err, "%s#%s: truncated or corrupt member: %s", shard, name, archive_error_string(h->a));
        }
        n += (size_t)r;
        if (pf_arc_is_bomb(h)) {
            free(buf);
            return pf_errf(err, "%s#%s: the shard inflates to over %u times its compressed size (a compression "
                           "bomb)", shard, name, PF_ARCHIVE_MAX_RATIO);
        }
    }
    *data = buf;
    *len = n;
    return 0;
}

char *pf_archive_printable(const char *s)
{
    size_t cap = 4 * strlen(s) + 6;   /* every byte escaped, at worst; the display's own reserve */
    char *buf = malloc(cap);
    return buf ? (char *)pf_arc_display(s, buf, cap) : NULL;
}

const char *pf_arc_display(const char *name, char *buf, size_t cap)
{
    size_t o = 0, n = strlen(name);
    for (size_t i = 0; i < n && o + 5 < cap;) {
        unsigned char c = (unsigned char)name[i];
        size_t k = pf_arc_utf8_len((const unsigned char *)name + i, n - i);
        if (k == 0 || c < 0x20 || c == 0x7f) {   /* not well-formed, or a control byte: escaped */
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
            i++;
        } else if (o + k < cap) {
            memcpy(buf + o, name + i, k);
            o += k;
            i += k;
        } else {
            break;
        }
    }
    buf[o < cap ? o : cap - 1] = '\0';
    return buf;
}
