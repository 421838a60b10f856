#include "base/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *type_name(mode_t m)
{
    return S_ISDIR(m) ? "is a directory" : S_ISFIFO(m) ? "is a FIFO" : S_ISSOCK(m) ? "is a socket"
         : S_ISCHR(m) ? "is a character device" : S_ISBLK(m) ? "is a block device" : "is not a regular file";
}

static int fail(pf_file_fault *fault, pf_file_fault f)
{
    if (fault)
        *fault = f;
    return -1;
}

int pf_open_regular(const char *path, struct stat *st, pf_file_fault *fault, pf_err *err)
{
    if (fault)
        *fault = PF_FILE_OK;
    /* O_NONBLOCK: open() of a FIFO without a writer would wait forever (and a FIFO swapped in for an
     * input would hang a worker thread that no signal can free). The type check below refuses it. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        pf_errf(err, "%s: cannot open: %s", path, strerror(errno));
        return fail(fault, errno == ELOOP ? PF_FILE_NOT_REGULAR : PF_FILE_IO);
    }
    if (fstat(fd, st) != 0) {
        int e = errno;
        close(fd);
        pf_errf(err, "%s: cannot stat: %s", path, strerror(e));
        return fail(fault, PF_FILE_IO);
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        pf_errf(err, "%s: not a regular file: %s", path, type_name(st->st_mode));
        return fail(fault, PF_FILE_NOT_REGULAR);
    }
    /* A regular file: reads block as usual again (O_NONBLOCK means nothing for them on Linux, but a
     * network file system may honour it). */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

int pf_map_file(const char *path, pf_map *out, pf_err *err)
{
    out->data = NULL;
    out->size = 0;
    struct stat st;
    int fd = pf_open_regular(path, &st, NULL, err);
    if (fd < 0)
        return -1;
    if (st.st_size == 0) {
        close(fd);
        return 0;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED)
        return pf_errf(err, "%s: mmap: %s", path, strerror(e));
    out->data = p;
    out->size = (size_t)st.st_size;
    return 0;
}

void pf_unmap(pf_map *map)
{
    if (map->data)
        munmap((void *)map->data, map->size);
    map->data = NULL;
    map->size = 0;
}

int pf_read_file_safe(const char *path, size_t max_bytes, char **out, size_t *len, pf_file_fault *fault,
                      pf_err *err)
{
    *out = NULL;
    *len = 0;
    struct stat st;
    int fd = pf_open_regular(path, &st, fault, err);
    if (fd < 0)
        return -1;
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        pf_errf(err, "%s: file is %lld bytes, more than the limit of %zu", path, (long long)st.st_size, max_bytes);
        return fail(fault, PF_FILE_TOO_BIG);
    }
    size_t n = (size_t)st.st_size;
    /* One spare byte beyond the size fstat gave: reading into it tells a file that grew since. */
    char *buf = malloc(n + 2);
    if (!buf) {
        close(fd);
        pf_errf(err, "%s: out of memory reading %zu bytes", path, n);
        return fail(fault, PF_FILE_NO_MEMORY);
    }
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, buf + got, n + 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            close(fd);
            pf_errf(err, "%s: read failed after %zu of %zu bytes: %s", path, got, n, strerror(e));
            return fail(fault, PF_FILE_IO);
        }
        if (r == 0)
            break;
        got += (size_t)r;
        if (got > n) {   /* grew while we read: whatever we took is not one version of the file */
            free(buf);
            close(fd);
            pf_errf(err, "%s: file grew while being read (beyond the %zu bytes it had)", path, n);
            return fail(fault, PF_FILE_CHANGED);
        }
    }
    close(fd);
    if (got < n) {
        free(buf);
        pf_errf(err, "%s: file shrank while being read (%zu of %zu bytes)", path, got, n);
        return fail(fault, PF_FILE_CHANGED);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int pf_read_file(const char *path, size_t max_bytes, char **out, size_t *len, pf_err *err)
{
    return pf_read_file_safe(path, max_bytes, out, len, NULL, err);
}

int pf_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int pf_write_file_atomic(const char *path, const void *buf, size_t len, pf_err *err)
{
    size_t tl = strlen(path) + 32;
    char *tmp = malloc(tl);
    if (!tmp)
        return pf_errf(err, "%s: out of memory", path);
    snprintf(tmp, tl, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        pf_errf(err, "%s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    if (pf_write_all(fd, buf, len)) {
        pf_errf(err, "%s: write: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        free(tmp);
        return -1;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        pf_errf(err, "%s: fsync/close: %s", tmp, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        pf_errf(err, "%s: rename to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

char *pf_path_join(const char *dir, const char *name)
{
    size_t dl = strlen(dir), nl = strlen(name);
    char *p = malloc(dl + nl + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, dl);
    size_t k = dl;
    if (k > 0 && p[k - 1] != '/')
        p[k++] = '/';
    memcpy(p + k, name, nl + 1);
    return p;
}

double pf_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
