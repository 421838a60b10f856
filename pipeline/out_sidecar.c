/* out_sidecar.c - the sidecar view (out_view.h): one <image file name>.json per image, a JSON array of its
 * records (one per task: a record replaces the one of the same task and settings, so a later success
 * supersedes an earlier error), either next to the image (--sidecar-next) or under a folder in the images'
 * folder tree (--sidecar-dir DIR: DIR/<the record's path>.json).
 *
 * Names: next to the image, the sidecar is the image's own name + ".json" in the image's own folder (that
 * name exists, so it is a valid name there). Under DIR, the path is rebuilt component by component: empty and
 * "." components are dropped, ".." becomes "_", control bytes become '_', a component is at most 200 bytes
 * (out_names.c), folders are made with mkdirat and entered with O_NOFOLLOW, so neither a hostile path nor a
 * symlink planted in DIR leads outside it. An absolute path is mirrored under DIR (DIR/home/u/a.jpg.json).
 *
 * A file already there that is not a sidecar of ours (not an array of records with a "key", e.g. a photo
 * service's own .json) is never overwritten: a warning, and the record stays in the JSONL only.
 *
 * Crash safety: each sidecar is written whole to a temporary beside it, fdatasync'ed and renamed over (never
 * half-written); the view's checkpoint advances after that, and a replay after a kill -9 writes the same
 * content again (replace by task is idempotent). The view's state holds nothing else. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "pipeline/out_view.h"
#include "pipeline/record.h"

#define MAX_SIDECAR ((size_t)64 << 20)   /* an existing sidecar read back (a few KB per task) */
#define MAX_DEPTH 64
#define MAX_COMP 200

typedef struct side {
    int rootfd;   /* --sidecar-dir, or -1 (next to the images) */
    int64_t skipped;
} side;

static int side_open(pf_view *v, int fresh, pf_err *err)
{
    (void)fresh;   /* nothing to cut: every sidecar is whole, and a replay rewrites the same ones */
    side *s = calloc(1, sizeof *s);
    if (!s)
        return pf_errf(err, "out of memory");
    s->rootfd = -1;
    v->impl = s;
    const char *dir = v->p->sidecar_dir;
    if (dir) {
        if (mkdir(dir, 0755) != 0 && errno != EEXIST)
            return pf_errf(err, "--sidecar-dir %s: cannot make the folder: %s", dir, strerror(errno));
        s->rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->rootfd < 0)
            return pf_errf(err, "--sidecar-dir %s: %s", dir, strerror(errno));
    }
    return 0;
}

/* One path component made safe for the mirrored tree into OUT (MAX_COMP + 1 bytes): readable names stay as
 * they are (spaces, UTF-8), control bytes become '_', ".." becomes "_" (never a way up). */
static void tree_component(const char *c, size_t n, char *out)
{
    if (n == 2 && c[0] == '.' && c[1] == '.') {
        strcpy(out, "_");
        return;
    }
    int plain = n <= MAX_COMP;
    for (size_t i = 0; i < n && plain; i++)
        plain = (unsigned char)c[i] >= 0x20 && c[i] != 0x7f;
    if (plain) {
        memcpy(out, c, n);
        out[n] = '\0';
        return;
    }
    pf_safe_component(c, n, 1, MAX_COMP, out);
}

/* The folder of the sidecar for PATH under ROOT (made as needed; an fd) and its file name into NAME. */
static int tree_target(int root, const char *path, char *name, size_t cap, pf_err *err)
{
    int dfd = dup(root);
    const char *p = path;
    char comp[MAX_COMP + 1];
    int depth = 0;
    if (dfd < 0)
        return pf_errf(err, "%s: %s", path, strerror(errno));
    for (;;) {
        while (*p == '/')
            p++;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (!e) {   /* the file's own name */
            if (n == 0 || (n == 1 && *p == '.') || (n == 2 && !strncmp(p, "..", 2))) {
                close(dfd);
                return pf_errf(err, "%s: not a file name", path);
            }
            tree_component(p, n, comp);
            snprintf(name, cap, "%s.json", comp);
            return dfd;
        }
        if (!(n == 0 || (n == 1 && *p == '.'))) {
            if (++depth > MAX_DEPTH) {
                close(dfd);
                return pf_errf(err, "%s: more than %d folders deep", path, MAX_DEPTH);
            }
            tree_component(p, n, comp);
            if (mkdirat(dfd, comp, 0755) != 0 && errno != EEXIST) {
                pf_errf(err, "%s: cannot make folder %s: %s", path, comp, strerror(errno));
                close(dfd);
                return -1;
            }
            int nfd = openat(dfd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            close(dfd);
            if (nfd < 0)
                return pf_errf(err, "%s: cannot enter folder %s: %s", path, comp,
                               errno == ELOOP || errno == ENOTDIR ? "a symlink or a file is in the way" : strerror(errno));
            dfd = nfd;
        }
        p = e + 1;
    }
}

/* Next to the image: its folder (an fd) and its name + ".json". */
static int next_target(const char *path, char *name, size_t cap, pf_err *err)
{
    char *a = strdup(path), *b = strdup(path);
    int fd = -1;
    if (!a || !b) {
        pf_errf(err, "out of memory");
    } else {
        const char *base = basename(b);
        if (!*base || !strcmp(base, ".") || !strcmp(base, "..") || !strcmp(base, "/") ||
            strlen(base) + 6 > cap || strlen(base) > 250)
            pf_errf(err, "%s: no sidecar name for it", path);
        else if ((fd = open(dirname(a), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
            pf_errf(err, "%s: its folder: %s", path, strerror(errno));
        else
            snprintf(name, cap, "%s.json", base);
    }
    free(a);
    free(b);
    return fd;
}

/* The settings half of a record's key ("<content>-<settings>"): its task. */
static const char *settings_of(const json_t *rec)
{
    const char *k = json_string_value(json_object_get(rec, "key"));
    const char *dash = k ? strrchr(k, '-') : NULL;
    return dash ? dash + 1 : k;
}

/* The sidecar NAME in DFD as it is: an array (new: empty). NULL with *FOREIGN set when the file is not ours. */
static json_t *read_sidecar(int dfd, const char *name, int *foreign)
{
    *foreign = 0;
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        *foreign = errno != ENOENT;   /* a symlink or unreadable: leave it alone */
        return *foreign ? NULL : json_array();
    }
    struct stat st;
    json_t *j = NULL;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size <= MAX_SIDECAR) {
        FILE *f = fdopen(fd, "r");
        if (f) {
            j = json_loadf(f, 0, NULL);
            fclose(f);
            fd = -1;
        }
    }
    if (fd >= 0)
        close(fd);
    int ours = json_is_array(j);
    for (size_t i = 0; ours && i < json_array_size(j); i++)
        ours = json_is_string(json_object_get(json_array_get(j, i), "key"));
    if (!ours) {
        json_decref(j);
        *foreign = 1;
        return NULL;
    }
    return j;
}

static int side_apply(pf_view *v, const json_t *rec, pf_err *err)
{
    side *s = v->impl;
    char *path = NULL;
    const char *shown = json_string_value(json_object_get(rec, "path"));
    if (!settings_of(rec) || pf_record_path(rec, &path) != 0)
        return 0;   /* not a record of ours */
    char name[MAX_COMP + 16];
    pf_err e = {{0}};
    int dfd = s->rootfd >= 0 ? tree_target(s->rootfd, path, name, sizeof name, &e)
                             : next_target(path, name, sizeof name, &e);
    int rc = 0;
    if (dfd >= 0) {
        int foreign = 0;
        json_t *arr = read_sidecar(dfd, name, &foreign);
        if (!arr) {
            pf_errf(&e, "%s: %s is not a sidecar of ours: left as it is", shown, name);
        } else {
            const char *set = settings_of(rec);
            size_t i = 0;
            for (; i < json_array_size(arr); i++)
                if (!strcmp(settings_of(json_array_get(arr, i)) ? settings_of(json_array_get(arr, i)) : "", set))
                    break;
            json_t *r = (json_t *)rec;   /* jansson takes a reference, never changes it */
            if (i < json_array_size(arr) ? json_array_set(arr, i, r) : json_array_append(arr, r))
                rc = pf_errf(err, "out of memory");
            char *txt = rc ? NULL : json_dumps(arr, JSON_COMPACT);
            if (rc)
                ;
            else if (!txt)
                rc = pf_errf(err, "out of memory");
            else if (pf_write_replace(dfd, name, txt, strlen(txt), shown, &e) &&
                     (errno == ENOSPC || errno == EIO || errno == EDQUOT))
                rc = pf_errf(err, "sidecar of %s: %s", shown, e.msg);   /* the disk, not the name: stop */
            free(txt);
            json_decref(arr);
        }
        close(dfd);
    }
    if (!rc && e.msg[0]) {
        s->skipped++;
        pf_warn("sink", "sidecar: %s (the record is in the JSONL)", e.msg);
    }
    free(path);
    return rc;
}

static int side_sync(pf_view *v, pf_err *err)
{
    (void)v;
    (void)err;   /* each sidecar was synced before its rename */
    return 0;
}

static void side_close(pf_view *v)
{
    side *s = v->impl;
    if (s->rootfd >= 0)
        close(s->rootfd);
    free(s);
    v->impl = NULL;
}

const pf_view_ops pf_view_sidecar = {"sidecar", side_open, side_apply, side_sync, side_close};
