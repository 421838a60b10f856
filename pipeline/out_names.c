/* out_names.c - safe names and whole writes for the output views (out_view.h).
 *
 * Why sanitize: member and file names in the views come from the images' paths, which come from whoever
 * filled the input folders or wrote the manifest. A name like "../../x", "/etc/passwd", a component "..", a
 * NUL-free but control-filled name, or a 4 KB one must never put a file outside the view's folder or make
 * an invalid tar member; so names are rebuilt from a small alphabet, component by component. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "pipeline/out_view.h"

void pf_safe_component(const char *name, size_t len, int keep_dot, size_t max, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n < max; i++) {
        unsigned char c = (unsigned char)name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
                 (keep_dot && c == '.');
        out[n++] = ok ? (char)c : '_';
    }
    if (len > max && max > 9) {   /* cut: the end names the whole, so that long names stay apart */
        snprintf(out + max - 9, 10, "-%08x", (unsigned)XXH3_64bits(name, len));
        n = max;
    }
    int only_dots = 1;   /* ".", "..", "...": a way up or nothing, as a name */
    for (size_t i = 0; i < n; i++)
        only_dots &= out[i] == '.';
    if (only_dots) {
        out[0] = '_';
        n = 1;
    }
    out[n] = '\0';
}

int pf_pwrite_all(int fd, const void *buf, size_t len, int64_t off)
{
    const char *p = buf;
    while (len) {
        ssize_t w = pwrite(fd, p, len, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
        off += w;
    }
    return 0;
}

int pf_write_replace(int dirfd, const char *name, const void *data, size_t len, const char *shown, pf_err *err)
{
    size_t tl = strlen(name) + 16;
    char *tmp = malloc(tl);
    if (!tmp)
        return pf_errf(err, "%s: out of memory", shown);
    /* one temporary name per target: a kill -9 leaves at most one, which the replay overwrites */
    snprintf(tmp, tl, ".%s.pf-tmp", name);
    int rc = 0;
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = pf_errf(err, "%s: cannot write it: %s", shown, strerror(errno));
    } else {
        if (pf_pwrite_all(fd, data, len, 0) != 0)
            rc = pf_errf(err, "%s: write: %s", shown, strerror(errno));
        else if (fdatasync(fd) != 0)
            rc = pf_errf(err, "%s: fdatasync: %s", shown, strerror(errno));
        close(fd);
        /* rename replaces a symlink at NAME itself, never the file it points to */
        if (!rc && renameat(dirfd, tmp, dirfd, name) != 0)
            rc = pf_errf(err, "%s: rename: %s", shown, strerror(errno));
        if (rc) {
            int e = errno;   /* the caller tells a full disk from a bad name by it */
            unlinkat(dirfd, tmp, 0);
            errno = e;
        }
    }
    free(tmp);
    return rc;
}
