/* out_view.c - the views of the JSONL output (out_view.h): their checkpoints, the catch-up at start, the batch
 * hand-over after each sync, and what compaction changes in their state. The forms themselves are in
 * out_webdataset.c, out_sidecar.c and out_rotate.c. */
#include "pipeline/out_view.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


#include "base/log.h"
#include "pipeline/outfile.h"

#define MAX_STATE (1u << 20)   /* a state file is a few hundred bytes (rotated shards: 20 per shard) */

struct pf_views {
    pf_view *v[3];
    int n;
};

void pf_view_default_params(pf_view_params *p)
{
    memset(p, 0, sizeof *p);
    p->shard_size = 1000;
    p->shard_mb = 256;
}

int pf_view_params_any(const pf_view_params *p)
{
    return p->webdataset || p->sidecar_next || p->sidecar_dir || p->jsonl_shards;
}

int pf_view_params_check(const pf_view_params *p, pf_err *err)
{
    if (p->sidecar_next && p->sidecar_dir)
        return pf_errf(err, "--sidecar-next and --sidecar-dir: give one of them");
    return 0;
}

int pf_views_refresh(const pf_view_params *p, const char *out, pf_err *err)
{
    if (!pf_view_params_any(p))
        return 0;
    int fd = -1;
    struct stat st;
    pf_views *vs = NULL;
    int rc = pf_outfile_open(out, &fd, err);
    if (!rc && fstat(fd, &st) != 0)
        rc = pf_errf(err, "%s: %s", out, strerror(errno));
    if (!rc)
        rc = pf_views_open(p, out, fd, (int64_t)st.st_size, &vs, err);
    pf_views_close(vs);
    if (fd >= 0)
        close(fd);
    return rc;
}

static char *state_path(const char *out, const char *name)
{
    size_t n = strlen(out) + strlen(name) + 9;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s.%s.state", out, name);
    return p;
}

/* The saved state of a view: {"end": N, "view": {...}}; absent: end -1 (start over). */
static int load_state(const char *path, int64_t *end, json_t **st, int *exists, pf_err *err)
{
    *end = -1;
    *st = NULL;
    *exists = 0;
    json_error_t je;
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? 0 : pf_errf(err, "%s: %s", path, strerror(errno));
    *exists = 1;
    json_t *j = json_loadf(f, JSON_DISABLE_EOF_CHECK, &je);
    fclose(f);
    json_t *e = j ? json_object_get(j, "end") : NULL, *v = j ? json_object_get(j, "view") : NULL;
    if (!json_is_integer(e) || !json_is_object(v)) {
        /* written by rename, so never torn: someone else's file; the view starts over rather than trusting it */
        pf_warn("sink", "%s: not a view state (%s): the view starts over", path, j ? "fields missing" : je.text);
        json_decref(j);
        return 0;
    }
    *end = json_integer_value(e);
    *st = json_incref(v);
    json_decref(j);
    return 0;
}

static int save_state(const char *path, int64_t end, json_t *st, pf_err *err)
{
    json_t *j = json_pack("{s:I, s:O}", "end", (json_int_t)end, "view", st);
    char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!txt)
        return pf_errf(err, "%s: out of memory", path);
    /* the folder of the output, by its path */
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, (size_t)(slash - path + (slash == path))) : strdup(".");
    int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    int rc = dfd < 0 ? pf_errf(err, "%s: cannot open its folder: %s", path, strerror(errno))
                     : pf_write_replace(dfd, slash ? slash + 1 : path, txt, strlen(txt), path, err);
    if (dfd >= 0)
        close(dfd);
    free(dir);
    free(txt);
    return rc;
}

typedef struct catch_ctx {
    pf_view *v;
    int64_t applied;
    pf_err *err;
} catch_ctx;

static int catch_line(const char *line, size_t n, off_t end, void *arg)
{
    (void)end;
    catch_ctx *c = arg;
    json_t *j = json_loadb(line, n, 0, NULL);
    int rc = 0;
    if (json_is_object(j)) {   /* a line that is not a record of ours is not a record of the view's either */
        rc = c->v->ops->apply(c->v, j, c->err);
        c->applied++;
    }
    json_decref(j);
    return rc;
}

static int open_one(pf_view *v, int fd, int64_t out_end, pf_err *err)
{
    json_t *st = NULL;
    int64_t end = -1;
    if (load_state(v->state_path, &end, &st, &v->owned, err))
        return -1;
    int fresh = end < 0 || end > out_end;
    if (end > out_end)
        pf_warn("sink", "%s view: its checkpoint (%lld) is past the output's end (%lld bytes; cut or replaced): it "
                "starts over", v->ops->name, (long long)end, (long long)out_end);
    if (fresh) {
        json_decref(st);
        st = json_object();
        end = 0;
    }
    v->st = st;
    v->end = end;
    if (!v->st || v->ops->open(v, fresh, err))
        return -1;
    /* from now on the view's files are ours: a crash before the first batch's checkpoint must not make them
     * look like someone else's at the next start */
    if (fresh && save_state(v->state_path, 0, v->st, err))
        return -1;
    if (end == out_end)
        return 0;
    /* replay the JSONL from the checkpoint: the records a kill -9 kept out of the view */
    catch_ctx c = {v, 0, err};
    off_t good = 0;
    if (pf_outfile_scan_from(fd, v->out, (off_t)end, PF_OUT_MAX_LINE, catch_line, &c, &good, err) ||
        v->ops->sync(v, err) || save_state(v->state_path, (int64_t)good, v->st, err))
        return -1;
    v->end = (int64_t)good;
    pf_info("sink", "%s view: caught up with %lld records of %s", v->ops->name, (long long)c.applied, v->out);
    return 0;
}

static void close_one(pf_view *v)
{
    if (!v)
        return;
    if (v->impl)
        v->ops->close(v);
    json_decref(v->st);
    free(v->state_path);
    free(v);
}

int pf_views_open(const pf_view_params *p, const char *out, int fd, int64_t out_end, pf_views **vsp, pf_err *err)
{
    *vsp = NULL;
    if (!pf_view_params_any(p))
        return 0;
    pf_views *vs = calloc(1, sizeof *vs);
    if (!vs)
        return pf_errf(err, "out of memory");
    const pf_view_ops *want[3];
    int n = 0;
    if (p->webdataset)
        want[n++] = &pf_view_webdataset;
    if (p->sidecar_next || p->sidecar_dir)
        want[n++] = &pf_view_sidecar;
    if (p->jsonl_shards)
        want[n++] = &pf_view_jsonl_shards;
    for (int i = 0; i < n; i++) {
        pf_view *v = calloc(1, sizeof *v);
        if (!v || !(v->state_path = state_path(out, want[i]->name))) {
            free(v);
            pf_views_close(vs);
            return pf_errf(err, "out of memory");
        }
        v->ops = want[i];
        v->p = p;
        v->out = out;
        vs->v[vs->n++] = v;
        if (open_one(v, fd, out_end, err)) {
            pf_views_close(vs);
            return -1;
        }
    }
    *vsp = vs;
    return 0;
}

int pf_views_apply(pf_views *vs, json_t *const *recs, size_t n, int64_t new_end, pf_err *err)
{
    if (!vs)
        return 0;
    for (int i = 0; i < vs->n; i++) {
        pf_view *v = vs->v[i];
        for (size_t k = 0; k < n; k++)
            if (recs[k] && v->ops->apply(v, recs[k], err))
                return -1;
        if (v->ops->sync(v, err) || save_state(v->state_path, new_end, v->st, err))
            return -1;
        v->end = new_end;
    }
    return 0;
}

void pf_views_close(pf_views *vs)
{
    if (!vs)
        return;
    for (int i = 0; i < vs->n; i++)
        close_one(vs->v[i]);
    free(vs);
}

int pf_views_compacted(const char *out, int64_t old_end, int64_t new_end, pf_err *err)
{
    const pf_view_ops *all[3] = {&pf_view_webdataset, &pf_view_sidecar, &pf_view_jsonl_shards};
    int rc = 0;
    for (int i = 0; i < 3 && !rc; i++) {
        char *sp = state_path(out, all[i]->name);
        int64_t end;
        int exists = 0;
        json_t *st = NULL;
        if (!sp)
            return pf_errf(err, "out of memory");
        if (!(rc = load_state(sp, &end, &st, &exists, err)) && exists && end >= 0) {
            /* rotated shards copy the lines, superseded errors included: they start over at the next open;
             * so does a view behind the compacted file (its offset means nothing in the new one) */
            int keep = end == old_end && all[i] != &pf_view_jsonl_shards;
            rc = save_state(sp, keep ? new_end : -1, st, err);
        }
        json_decref(st);
        free(sp);
    }
    return rc;
}
