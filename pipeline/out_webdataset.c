/* out_webdataset.c - the WebDataset view (out_view.h): tar shards DIR/shard-000000.tar, ... of --shard-size
 * samples each; a sample is the item's original image bytes (<key>.jpg, .png, ... as the file's extension;
 * .img when it has none we know), its record (<key>.json, the JSONL line) and its text (<key>.txt). Only
 * result records become samples: an error record has no text to train on (it stays in the JSONL).
 *
 * The sample key is the image's file name without its extension, made safe (out_names.c: [A-Za-z0-9_-],
 * at most 40 bytes), then '-' and 16 hex digits of the record's identity (key + path): unique per (item,
 * task), and without the dots that WebDataset readers take as the start of the extension. Members carry no
 * folder, so nothing in a shard can name a path outside it when unpacked.
 *
 * The image bytes are read by the sink from the record's path (resolved from the sink's working folder, as the
 * producer found it), streamed into the shard while hashed, and kept only when they hash to the record's key
 * (the bytes that were annotated); a file that is gone, changed, or not a plain file gives a sample without
 * its image and a warning. So the sink must see the input like the producer does. An archive member
 * ("SHARD#MEMBER", pipeline/archive/archive.h) is read from its shard the same way (whole, at most 1 GiB).
 *
 * Crash safety: the state holds the current shard's number, its size without the end-of-archive blocks, and
 * its samples. Each sync writes the two zero blocks that end a tar after the last member (so every shard is a
 * valid tar after every batch), fdatasyncs, and then the state is saved. After a kill -9, shards past the
 * saved one are removed and the current one is cut back to the saved size (a half-written member goes with
 * it), and the JSONL is replayed from the checkpoint. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/log.h"
#include "pipeline/archive/archive.h"
#include "pipeline/out_view.h"
#include "pipeline/record.h"

#define BLOCK 512
#define MAX_IMAGE ((int64_t)1 << 33) /* what an ustar size field (11 octal digits) holds */

typedef struct wds {
    int dirfd, fd;
    int64_t shard, bytes, count;
    int64_t no_image;   /* samples written without their image (warned) */
} wds;

static void shard_name(int64_t i, char *buf, size_t cap) { snprintf(buf, cap, "shard-%06lld.tar", (long long)i); }

static int64_t st_int(const json_t *st, const char *k) { return json_integer_value(json_object_get(st, k)); }

/* Remove our shards from number FIRST on (they are consecutive). */
static int remove_from(wds *w, int64_t first, const char *dir, pf_err *err)
{
    char name[40];
    for (int64_t i = first;; i++) {
        shard_name(i, name, sizeof name);
        if (unlinkat(w->dirfd, name, 0) != 0)
            return errno == ENOENT ? 0 : pf_errf(err, "%s/%s: cannot remove it: %s", dir, name, strerror(errno));
    }
}

static int open_shard(wds *w, const char *dir, pf_err *err)
{
    char name[40];
    shard_name(w->shard, name, sizeof name);
    w->fd = openat(w->dirfd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (w->fd < 0)
        return pf_errf(err, "%s/%s: cannot open it: %s", dir, name, strerror(errno));
    return 0;
}

static int wds_open(pf_view *v, int fresh, pf_err *err)
{
    const char *dir = v->p->webdataset;
    wds *w = calloc(1, sizeof *w);
    if (!w)
        return pf_errf(err, "out of memory");
    w->fd = w->dirfd = -1;
    v->impl = w;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return pf_errf(err, "--webdataset %s: cannot make the folder: %s", dir, strerror(errno));
    w->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->dirfd < 0)
        return pf_errf(err, "--webdataset %s: %s", dir, strerror(errno));
    if (!v->owned && faccessat(w->dirfd, "shard-000000.tar", F_OK, AT_SYMLINK_NOFOLLOW) == 0)
        return pf_errf(err, "--webdataset %s: holds shard-000000.tar but no checkpoint of this output (%s): shards of another job? "
                       "Give an empty or new folder, or remove them", dir, v->state_path);
    if (!fresh) {
        w->shard = st_int(v->st, "shard");
        w->bytes = st_int(v->st, "bytes");
        w->count = st_int(v->st, "count");
    }
    if (remove_from(w, fresh ? 0 : w->shard + 1, dir, err) || open_shard(w, dir, err))
        return -1;
    struct stat st;
    if (fstat(w->fd, &st) != 0)
        return pf_errf(err, "%s: %s", dir, strerror(errno));
    if (st.st_size < w->bytes)
        return pf_errf(err, "%s: shard %lld holds %lld bytes, its checkpoint says %lld: edited? Remove %s and its "
                       "state %s to rebuild it", dir, (long long)w->shard, (long long)st.st_size, (long long)w->bytes,
                       dir, v->state_path);
    if (st.st_size > w->bytes) {
        if (!fresh)
            pf_warn("sink", "%s: shard %lld: cutting %lld bytes written after its checkpoint (a crash); their "
                    "samples are written again", dir, (long long)w->shard, (long long)(st.st_size - w->bytes));
        if (ftruncate(w->fd, w->bytes) != 0)
            return pf_errf(err, "%s: cannot cut shard %lld: %s", dir, (long long)w->shard, strerror(errno));
    }
    return 0;
}

/* An ustar header for a regular file NAME (< 100 bytes) of SIZE bytes. */
static void tar_header(char h[BLOCK], const char *name, int64_t size)
{
    memset(h, 0, BLOCK);
    snprintf(h, 100, "%s", name);
    memcpy(h + 100, "0000644", 8);
    memcpy(h + 108, "0000000", 8);
    memcpy(h + 116, "0000000", 8);
    snprintf(h + 124, 12, "%011llo", (unsigned long long)size);
    snprintf(h + 136, 12, "%011llo", (unsigned long long)time(NULL));
    h[156] = '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < BLOCK; i++)
        sum += (unsigned char)h[i];
    snprintf(h + 148, 8, "%06o", sum);   /* six digits, NUL, and the space left there */
}

/* Append member NAME with DATA at the shard's end (header, data, padding to a block). */
static int put_member(wds *w, const char *name, const void *data, size_t len)
{
    char h[BLOCK];
    tar_header(h, name, (int64_t)len);
    static const char zero[BLOCK];
    size_t pad = (BLOCK - len % BLOCK) % BLOCK;
    if (pf_pwrite_all(w->fd, h, BLOCK, w->bytes) || pf_pwrite_all(w->fd, data, len, w->bytes + BLOCK) ||
        pf_pwrite_all(w->fd, zero, pad, w->bytes + BLOCK + (int64_t)len))
        return -1;
    w->bytes += BLOCK + (int64_t)len + (int64_t)pad;
    return 0;
}

/* The image member: the file at PATH streamed in, kept only if its bytes hash to KEY's content half. 1 written,
 * 0 not (WHY says why), -1 the shard could not be written. */
static int put_image(wds *w, const char *name, const char *path, const char *key, const char **why)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    struct stat st;
    *why = NULL;
    if (fd < 0) {
        *why = strerror(errno);
        return 0;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_IMAGE) {
        *why = "not a regular file (an archive member, a device?) or too large for a tar member";
        close(fd);
        return 0;
    }
    XXH3_state_t *hs = XXH3_createState();
    char *buf = malloc(1 << 16);
    int64_t at = w->bytes + BLOCK, left = st.st_size;
    int rc = 1;
    if (!hs || !buf) {
        *why = "out of memory";
        rc = 0;
    }
    if (rc == 1)
        XXH3_128bits_reset(hs);
    while (rc == 1 && left > 0) {
        ssize_t r = read(fd, buf, left < (1 << 16) ? (size_t)left : (1 << 16));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            *why = r < 0 ? strerror(errno) : "the file shrank while read";
            rc = 0;
            break;
        }
        XXH3_128bits_update(hs, buf, (size_t)r);
        if (pf_pwrite_all(w->fd, buf, (size_t)r, at))
            rc = -1;
        at += r;
        left -= r;
    }
    if (rc == 1) {
        XXH128_hash_t h = XXH3_128bits_digest(hs);
        char hex[33];
        snprintf(hex, sizeof hex, "%016llx%016llx", (unsigned long long)h.high64, (unsigned long long)h.low64);
        if (strncmp(hex, key, 32) != 0) {
            *why = "its bytes changed since it was annotated";
            rc = 0;
        }
    }
    free(buf);
    XXH3_freeState(hs);
    close(fd);
    if (rc != 1)   /* not kept: what was streamed in past the shard's end goes */
        return rc < 0 || ftruncate(w->fd, w->bytes) != 0 ? -1 : 0;
    char hd[BLOCK];
    static const char zero[BLOCK];
    tar_header(hd, name, st.st_size);
    size_t pad = (size_t)((BLOCK - st.st_size % BLOCK) % BLOCK);
    if (pf_pwrite_all(w->fd, hd, BLOCK, w->bytes) || pf_pwrite_all(w->fd, zero, pad, at))
        return -1;
    w->bytes = at + (int64_t)pad;
    return 1;
}

/* An archive member "SHARD#MEMBER" (pipeline/archive/archive.h): read whole (bounded), kept only if it hashes to
 * KEY's content half. 1 written, 0 not (WHY), -1 the shard could not be written. */
static int put_archived(wds *w, const char *name, const char *ref, size_t shard_len, const char *key,
                        const char **why, char *whybuf, size_t whycap)
{
    char *shard = strndup(ref, shard_len);
    uint8_t *data = NULL;
    size_t len = 0;
    pf_err e = {{0}};
    int rc = 0;
    if (!shard) {
        *why = "out of memory";
        return 0;
    }
    if (pf_archive_read_one(shard, ref + shard_len + 1, (size_t)1 << 30, &data, &len, &e)) {
        size_t n = strnlen(e.msg, whycap - 1);   /* the reason, cut to the buffer */
        memcpy(whybuf, e.msg, n);
        whybuf[n] = '\0';
        *why = whybuf;
    } else {
        XXH128_hash_t h = XXH3_128bits(data, len);
        char hex[33];
        snprintf(hex, sizeof hex, "%016llx%016llx", (unsigned long long)h.high64, (unsigned long long)h.low64);
        if (strncmp(hex, key, 32) != 0)
            *why = "its bytes changed since it was annotated";
        else
            rc = put_member(w, name, data, len) ? -1 : 1;
    }
    free(data);
    free(shard);
    return rc;
}

/* The image's extension as a WebDataset reader expects it (lower case, a known image type), else "img". */
static void image_ext(const char *base, char ext[8])
{
    static const char *const known[] = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff",
                                        "ppm", "pgm", "heic", "heif", "avif", "jxl"};
    const char *dot = strrchr(base, '.');
    snprintf(ext, 8, "img");
    if (!dot || strlen(dot + 1) >= 8)
        return;
    char low[8];
    size_t i = 0;
    for (; dot[1 + i]; i++)
        low[i] = (char)(dot[1 + i] >= 'A' && dot[1 + i] <= 'Z' ? dot[1 + i] + 32 : dot[1 + i]);
    low[i] = '\0';
    for (size_t k = 0; k < sizeof known / sizeof *known; k++)
        if (!strcmp(low, known[k]))
            snprintf(ext, 8, "%s", low);
}

/* The sample key of (KEY, PATH): safe stem + '-' + 16 hex of the identity. */
static void sample_key(const char *key, const char *path, char out[80])
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot > base ? (size_t)(dot - base) : strlen(base);
    char stem[48];
    pf_safe_component(base, n, 0, 40, stem);
    XXH3_state_t *st = XXH3_createState();
    uint64_t h = 0;
    if (st) {
        XXH3_64bits_reset(st);
        XXH3_64bits_update(st, key, strlen(key) + 1);
        XXH3_64bits_update(st, path, strlen(path));
        h = XXH3_64bits_digest(st);
        XXH3_freeState(st);
    }
    snprintf(out, 80, "%s-%016llx", stem, (unsigned long long)h);
}

static int roll(wds *w, const char *dir, pf_err *err)
{
    static const char zero[2 * BLOCK];
    if (pf_pwrite_all(w->fd, zero, sizeof zero, w->bytes) || ftruncate(w->fd, w->bytes + (int64_t)sizeof zero) ||
        fdatasync(w->fd) != 0)
        return pf_errf(err, "%s: finishing shard %lld: %s", dir, (long long)w->shard, strerror(errno));
    close(w->fd);
    w->fd = -1;
    w->shard++;
    w->bytes = w->count = 0;
    return open_shard(w, dir, err);
}

static int wds_apply(pf_view *v, const json_t *rec, pf_err *err)
{
    wds *w = v->impl;
    const char *dir = v->p->webdataset;
    const char *key = json_string_value(json_object_get(rec, "key"));
    const char *text = json_string_value(json_object_get(rec, "text"));
    char *path = NULL;
    if (json_object_get(rec, "error") || !key || !text || pf_record_path(rec, &path) != 0)
        return 0;   /* error records, and lines that are not results of ours: no sample */
    if (w->count >= v->p->shard_size && roll(w, dir, err)) {
        free(path);
        return -1;
    }
    char skey[80], ext[8], name[100];
    sample_key(key, path, skey);
    const char *slash = strrchr(path, '/');
    image_ext(slash ? slash + 1 : path, ext);
    snprintf(name, sizeof name, "%s.%s", skey, ext);
    const char *why = NULL;
    char whybuf[sizeof(((pf_err *)0)->msg)];
    size_t shard_len = 0;
    int img = pf_archive_split_ref(path, &shard_len) ? put_archived(w, name, path, shard_len, key, &why, whybuf,
                                                                    sizeof whybuf)
                                                     : put_image(w, name, path, key, &why);
    char *line = json_dumps(rec, JSON_COMPACT);
    int rc = 0;
    if (img < 0 || !line)
        rc = -1;
    if (!rc) {
        snprintf(name, sizeof name, "%s.json", skey);
        rc = put_member(w, name, line, strlen(line));
    }
    if (!rc) {
        snprintf(name, sizeof name, "%s.txt", skey);
        rc = put_member(w, name, text, strlen(text));
    }
    if (rc)
        pf_errf(err, "%s: writing shard %lld: %s", dir, (long long)w->shard, line ? strerror(errno) : "out of memory");
    else if (img == 0) {
        w->no_image++;
        pf_warn("sink", "%s: WebDataset sample %s without its image: %s (the sink reads each image from its path "
                "or its shard, like the producer: run it where the paths resolve)",
                json_string_value(json_object_get(rec, "path")), skey, why);
    }
    w->count += !rc;
    free(line);
    free(path);
    return rc;
}

static int wds_sync(pf_view *v, pf_err *err)
{
    wds *w = v->impl;
    static const char zero[2 * BLOCK];
    /* end-of-archive after the last member (overwritten by the next batch): a valid tar after every batch */
    if (pf_pwrite_all(w->fd, zero, sizeof zero, w->bytes) ||
        ftruncate(w->fd, w->bytes + (int64_t)sizeof zero) != 0 || fdatasync(w->fd) != 0)
        return pf_errf(err, "%s: shard %lld: %s", v->p->webdataset, (long long)w->shard, strerror(errno));
    json_object_set_new(v->st, "shard", json_integer(w->shard));
    json_object_set_new(v->st, "bytes", json_integer(w->bytes));
    json_object_set_new(v->st, "count", json_integer(w->count));
    return 0;
}

static void wds_close(pf_view *v)
{
    wds *w = v->impl;
    if (w->fd >= 0)
        close(w->fd);
    if (w->dirfd >= 0)
        close(w->dirfd);
    free(w);
    v->impl = NULL;
}

const pf_view_ops pf_view_webdataset = {"webdataset", wds_open, wds_apply, wds_sync, wds_close};
