/* out_rotate.c - the rotated JSONL view (out_view.h): the records as DIR/records-000000.jsonl, ... each
 * closed before it would pass --shard-mb (a record is never split; one longer than that has a shard of its
 * own), and DIR/index.json: {"records": N, "shards": [{"file": "records-000000.jsonl", "records": n, "bytes":
 * b}, ...]}, rewritten (by rename) after every batch, listing only whole, synced lines.
 *
 * Crash safety: the state holds the finished shards' sizes and counts and the current shard's; after a kill -9
 * later shards are removed, the current one is cut back to its saved size (a torn line goes with it) and the
 * JSONL is replayed from the checkpoint. The shards copy the JSONL's lines, so compaction (superseded errors
 * dropped) makes this view start over from the compacted file (out_view.c). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "pipeline/out_view.h"

typedef struct rot {
    int dirfd, fd;
    int64_t shard, bytes, count;
    json_t *done;   /* [[bytes, records], ...] of the finished shards */
} rot;

static void shard_name(int64_t i, char *buf, size_t cap) { snprintf(buf, cap, "records-%06lld.jsonl", (long long)i); }

static int open_shard(rot *r, const char *dir, pf_err *err)
{
    char name[48];
    shard_name(r->shard, name, sizeof name);
    r->fd = openat(r->dirfd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    return r->fd < 0 ? pf_errf(err, "%s/%s: cannot open it: %s", dir, name, strerror(errno)) : 0;
}

static int rot_open(pf_view *v, int fresh, pf_err *err)
{
    const char *dir = v->p->jsonl_shards;
    rot *r = calloc(1, sizeof *r);
    if (!r)
        return pf_errf(err, "out of memory");
    r->fd = r->dirfd = -1;
    v->impl = r;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return pf_errf(err, "--jsonl-shards %s: cannot make the folder: %s", dir, strerror(errno));
    if ((r->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return pf_errf(err, "--jsonl-shards %s: %s", dir, strerror(errno));
    if (!v->owned && faccessat(r->dirfd, "records-000000.jsonl", F_OK, AT_SYMLINK_NOFOLLOW) == 0)
        return pf_errf(err, "--jsonl-shards %s: holds records-000000.jsonl but no checkpoint of this output (%s): shards of another job? "
                       "Give an empty or new folder, or remove them", dir, v->state_path);
    json_t *d = fresh ? NULL : json_object_get(v->st, "done");
    r->done = json_is_array(d) ? json_deep_copy(d) : json_array();
    if (!fresh) {
        r->shard = json_integer_value(json_object_get(v->st, "shard"));
        r->bytes = json_integer_value(json_object_get(v->st, "bytes"));
        r->count = json_integer_value(json_object_get(v->st, "count"));
    }
    char name[48];
    for (int64_t i = fresh ? 0 : r->shard + 1;; i++) {   /* shards made after the checkpoint (consecutive) */
        shard_name(i, name, sizeof name);
        if (unlinkat(r->dirfd, name, 0) != 0) {
            if (errno != ENOENT)
                return pf_errf(err, "%s/%s: cannot remove it: %s", dir, name, strerror(errno));
            break;
        }
    }
    if (!r->done || open_shard(r, dir, err))
        return r->done ? -1 : pf_errf(err, "out of memory");
    struct stat st;
    if (fstat(r->fd, &st) != 0 || st.st_size < r->bytes)
        return pf_errf(err, "%s: shard %lld is shorter than its checkpoint (%lld bytes): edited? Remove %s and %s "
                       "to rebuild it", dir, (long long)r->shard, (long long)r->bytes, dir, v->state_path);
    if (st.st_size > r->bytes && ftruncate(r->fd, r->bytes) != 0)
        return pf_errf(err, "%s: cannot cut shard %lld: %s", dir, (long long)r->shard, strerror(errno));
    return 0;
}

static int rot_apply(pf_view *v, const json_t *rec, pf_err *err)
{
    rot *r = v->impl;
    const char *dir = v->p->jsonl_shards;
    char *txt = json_dumps(rec, JSON_COMPACT);
    if (!txt)
        return pf_errf(err, "out of memory");
    size_t n = strlen(txt);
    int rc = 0;
    if (r->bytes > 0 && r->bytes + (int64_t)n + 1 > (int64_t)(v->p->shard_mb * 1048576.0)) {   /* this line would pass the size */
        json_t *e = json_pack("[I,I]", (json_int_t)r->bytes, (json_int_t)r->count);
        if (fdatasync(r->fd) != 0)
            rc = pf_errf(err, "%s: shard %lld: fdatasync: %s", dir, (long long)r->shard, strerror(errno));
        else if (!e || json_array_append_new(r->done, e))
            rc = pf_errf(err, "out of memory");
        if (!rc) {
            close(r->fd);
            r->shard++;
            r->bytes = r->count = 0;
            rc = open_shard(r, dir, err);
        }
    }
    if (!rc && (pf_pwrite_all(r->fd, txt, n, r->bytes) || pf_pwrite_all(r->fd, "\n", 1, r->bytes + (int64_t)n)))
        rc = pf_errf(err, "%s: shard %lld: write: %s", dir, (long long)r->shard, strerror(errno));
    if (!rc) {
        r->bytes += (int64_t)n + 1;
        r->count++;
    }
    free(txt);
    return rc;
}

/* index.json from the state: every finished shard and the current one. */
static int write_index(rot *r, const char *dir, pf_err *err)
{
    json_t *shards = json_array(), *idx = NULL;
    int64_t total = 0;
    char name[48];
    for (size_t i = 0; shards && i <= json_array_size(r->done); i++) {
        int64_t b = r->bytes, c = r->count;
        if (i < json_array_size(r->done)) {
            b = json_integer_value(json_array_get(json_array_get(r->done, i), 0));
            c = json_integer_value(json_array_get(json_array_get(r->done, i), 1));
        }
        shard_name((int64_t)i, name, sizeof name);
        json_array_append_new(shards, json_pack("{s:s, s:I, s:I}", "file", name, "records", (json_int_t)c, "bytes",
                                                (json_int_t)b));
        total += c;
    }
    idx = shards ? json_pack("{s:I, s:o}", "records", (json_int_t)total, "shards", shards) : NULL;
    char *txt = idx ? json_dumps(idx, JSON_INDENT(1)) : NULL;
    json_decref(idx);
    char shown[600];
    snprintf(shown, sizeof shown, "%s/index.json", dir);
    int rc = txt ? pf_write_replace(r->dirfd, "index.json", txt, strlen(txt), shown, err) : pf_errf(err, "out of memory");
    free(txt);
    return rc;
}

static int rot_sync(pf_view *v, pf_err *err)
{
    rot *r = v->impl;
    if (fdatasync(r->fd) != 0)
        return pf_errf(err, "%s: shard %lld: fdatasync: %s", v->p->jsonl_shards, (long long)r->shard, strerror(errno));
    if (write_index(r, v->p->jsonl_shards, err))
        return -1;
    json_object_set_new(v->st, "shard", json_integer(r->shard));
    json_object_set_new(v->st, "bytes", json_integer(r->bytes));
    json_object_set_new(v->st, "count", json_integer(r->count));
    json_object_set(v->st, "done", r->done);
    return 0;
}

static void rot_close(pf_view *v)
{
    rot *r = v->impl;
    if (r->fd >= 0)
        close(r->fd);
    if (r->dirfd >= 0)
        close(r->dirfd);
    json_decref(r->done);
    free(r);
    v->impl = NULL;
}

const pf_view_ops pf_view_jsonl_shards = {"jsonl-shards", rot_open, rot_apply, rot_sync, rot_close};
