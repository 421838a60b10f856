/* producer_manifest.c - what becomes an item (issue 19): an item is a (canonical path, task) pair. A scanned
 * file gets one item per job task (--task given more than once), a manifest line one per prompt it lists
 * (or per job task when it names none), with its own settings and record additions (manifest.h).
 *
 * Identity: the path's realpath (canonical()), taken at scan time, so the same file typed two ways is one
 * item (the job store keeps it as items.ident; records show the path as found); the task is stored as canonical JSON (pf_prod_task_json: prompt + every generation setting + image
 * size), "" when it is the job's own, so an item's identity is source + task + settings. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/file.h"
#include "base/log.h"
#include "pipeline/manifest.h"
#include "pipeline/producer_internal.h"

static int push_task(prod *p, const char *json, pf_err *err)
{
    char **nv = realloc(p->tasks, (p->n_tasks + 1) * sizeof *nv);
    if (!nv)
        return pf_errf(err, "out of memory");
    p->tasks = nv;
    if (!(p->tasks[p->n_tasks] = strdup(json)))
        return pf_errf(err, "out of memory");
    p->n_tasks++;
    return 0;
}

/* The canonical JSON of the job's task with PROMPT and the settings S (may be NULL) in place; "" (as a
 * fresh string) when that is the job's task itself. */
static char *item_task_json(prod *p, const char *prompt, const pf_manifest_settings *s)
{
    pf_task t = p->task;
    if (prompt)
        t.prompt = prompt;
    if (s) {
        if (s->has_max_new_tokens)
            t.max_new_tokens = s->max_new_tokens;
        if (s->has_temperature)
            t.temperature = s->temperature;
        if (s->has_top_k)
            t.top_k = s->top_k;
        if (s->has_top_p)
            t.top_p = s->top_p;
        if (s->has_seed)
            t.seed = s->seed;
    }
    char *j = pf_prod_task_json(&t, p->image_size);
    if (j && !strcmp(j, p->task_json)) {
        free(j);
        return strdup("");
    }
    return j;
}

int pf_prod_setup_tasks(prod *p, pf_err *err)
{
    const pf_producer_params *o = p->o;
    if (!(p->task_json = pf_prod_task_json(&p->task, p->image_size)) || push_task(p, "", err))
        return p->task_json ? -1 : pf_errf(err, "out of memory");
    char *stored = NULL;
    if (pf_jobstore_meta_get(p->js, "more_tasks", &stored, err))
        return -1;
    json_t *list = NULL;
    if (o->n_more_tasks) {   /* given: they replace the stored list (items already made stay in the job) */
        list = json_array();
        for (size_t i = 0; list && i < o->n_more_tasks; i++)
            json_array_append_new(list, json_string(o->more_tasks[i]));
        char *s = list ? json_dumps(list, JSON_COMPACT) : NULL;
        int rc = s ? pf_jobstore_meta_set(p->js, "more_tasks", s, err) : pf_errf(err, "out of memory");
        free(s);
        if (rc) {
            json_decref(list);
            free(stored);
            return -1;
        }
    } else if (stored) {
        list = json_loads(stored, 0, NULL);
        if (!json_is_array(list)) {
            json_decref(list);
            free(stored);
            return pf_errf(err, "%s: job store: stored task list is not a JSON array", o->db);
        }
    }
    free(stored);
    for (size_t i = 0; i < json_array_size(list); i++) {
        const char *pr = json_string_value(json_array_get(list, i));
        char *j = pr ? item_task_json(p, pr, NULL) : NULL;
        int rc = !j ? pf_errf(err, "out of memory") : *j ? push_task(p, j, err) : 0;   /* the job's own: once */
        free(j);
        if (rc) {
            json_decref(list);
            return -1;
        }
    }
    json_decref(list);
    if (p->n_tasks > 1)
        pf_info(LOG, "%zu tasks per image: '%s' and %zu more", p->n_tasks, p->task.prompt, p->n_tasks - 1);
    return 0;
}

void pf_prod_tasks_free(prod *p)
{
    for (size_t i = 0; i < p->n_tasks; i++)
        free(p->tasks[i]);
    free(p->tasks);
    p->tasks = NULL;
    p->n_tasks = 0;
    free(p->task_json);
    p->task_json = NULL;
    pf_manifest_close(p->manifest);
    p->manifest = NULL;
}

int pf_prod_open_manifest(prod *p, const char *path, pf_err *err)
{
    if (!path)
        return 0;
    if (pf_manifest_open(path, PF_MANIFEST_AUTO, &p->manifest, err))
        return -1;
    pf_info(LOG, "reading the manifest %s", path);
    return 0;
}

int pf_prod_add_one(prod *p, const char *path, const char *ident, int64_t size, const char *task, const char *meta,
                   int *added, pf_err *err)
{
    int64_t id;
    pf_prod_tx(p);
    if (pf_jobstore_add_item(p->js, path, ident, task, meta, size, &id, err))
        return -1;
    if (id >= 0) {
        p->total++;
        (*added)++;
    }
    return 0;
}

/* The working folder as the user sees it: $PWD when it names this folder (the shell keeps the symlinked
 * spelling the user cd'ed through; getcwd would give the physical one), else getcwd. */
static char *working_folder(void)
{
    const char *pwd = getenv("PWD");
    struct stat a, b;
    if (pwd && pwd[0] == '/' && stat(pwd, &a) == 0 && stat(".", &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino)
        return strdup(pwd);
    return getcwd(NULL, 0);
}

/* PATH's identity: its realpath, so "photos/a.jpg", "./photos/a.jpg", the absolute path and a path through a
 * symlinked folder are one item (records still show the path as found). A path realpath cannot resolve (a
 * broken link, a file gone) is made absolute lexically instead: the working folder in front, "//", "/./" and
 * "dir/.." folded. */
char *pf_prod_canonical(const char *path, int64_t *size)
{
    struct stat st;
    *size = stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
    char *real = realpath(path, NULL);
    if (real)
        return real;
    char *cwd = path[0] == '/' ? NULL : working_folder();
    if (path[0] != '/' && !cwd)
        return strdup(path);   /* no working folder (deleted): keep it as given */
    size_t n = (cwd ? strlen(cwd) + 1 : 0) + strlen(path) + 2;
    char *in = malloc(n), *out = malloc(n);
    if (!in || !out) {
        free(cwd);
        free(in);
        free(out);
        return NULL;
    }
    snprintf(in, n, "%s%s%s", cwd ? cwd : "", cwd ? "/" : "", path);
    free(cwd);
    size_t o = 0;   /* out holds "/seg/seg..." without a trailing slash */
    for (char *s = in; *s;) {
        while (*s == '/')
            s++;
        char *e = s;
        while (*e && *e != '/')
            e++;
        size_t len = (size_t)(e - s);
        if (len == 0 || (len == 1 && s[0] == '.')) {
            /* nothing */
        } else if (len == 2 && s[0] == '.' && s[1] == '.') {
            while (o > 0 && out[--o] != '/')
                ;
        } else {
            out[o++] = '/';
            memcpy(out + o, s, len);
            o += len;
        }
        s = e;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    free(in);
    return out;
}

int pf_prod_add_path(prod *p, const char *path, int *added, pf_err *err)
{
    int ar = pf_prod_archive_add(p, path, (const char *const *)p->tasks, p->n_tasks, NULL, added, err);
    if (ar)   /* a tar/zip shard or a member of one (producer_archive.c) */
        return ar < 0 ? -1 : 0;
    int64_t size;
    char *c = pf_prod_canonical(path, &size);
    if (!c)
        return pf_errf(err, "out of memory");
    int rc = 0;
    for (size_t i = 0; !rc && i < p->n_tasks; i++)
        rc = pf_prod_add_one(p, path, c, size, p->tasks[i], NULL, added, err);
    free(c);
    return rc;
}

/* The canonical task JSON of each item a manifest line makes, into TJ (at most max(n_tasks, n_prompts)). */
static int line_tasks(prod *p, const pf_manifest_item *it, char **tj, size_t *n, pf_err *err)
{
    *n = 0;
    if (it->n_prompts == 0) {   /* no prompt of its own: the job's task(s), with the line's settings */
        for (size_t i = 0; i < p->n_tasks; i++) {
            char *j = NULL;
            if (*p->tasks[i]) {
                pf_task t;
                char *pr = NULL;
                int sz;
                if (pf_prod_task_from_json(p->tasks[i], &t, &pr, &sz, err) == 0)
                    j = item_task_json(p, pr, &it->set);
                free(pr);
            } else {
                j = item_task_json(p, NULL, &it->set);
            }
            if (!j)
                return pf_errf(err, "out of memory");
            tj[(*n)++] = j;
        }
    }
    for (size_t i = 0; i < it->n_prompts; i++) {
        char *j = item_task_json(p, it->prompts[i], &it->set);
        if (!j)
            return pf_errf(err, "out of memory");
        tj[(*n)++] = j;
    }
    return 0;
}

static int add_manifest_item(prod *p, const pf_manifest_item *it, int *added, pf_err *err)
{
    size_t cap = p->n_tasks > it->n_prompts ? p->n_tasks : it->n_prompts, n = 0;
    char **tj = calloc(cap ? cap : 1, sizeof *tj);
    if (!tj)
        return pf_errf(err, "out of memory");
    int rc = line_tasks(p, it, tj, &n, err);
    /* a shard or "SHARD#MEMBER" (producer_archive.c): its members get the line's tasks and columns */
    int ar = rc ? 0 : pf_prod_archive_add(p, it->path, (const char *const *)tj, n, it->meta, added, err);
    if (ar < 0)
        rc = -1;
    if (!rc && !ar) {
        int64_t size;
        char *c = pf_prod_canonical(it->path, &size);
        if (!c)
            rc = pf_errf(err, "out of memory");
        for (size_t i = 0; !rc && i < n; i++)
            rc = pf_prod_add_one(p, it->path, c, size, tj[i], it->meta, added, err);
        free(c);
    }
    for (size_t i = 0; i < n; i++)
        free(tj[i]);
    free(tj);
    return rc;
}

int pf_prod_manifest_some(prod *p, double budget_s, pf_err *err)
{
    double t_end = pf_now() + budget_s;
    int added = 0;
    for (int k = 0; (p->manifest || pf_prod_archive_listing(p)) && k < 2000; k++) {
        if (pf_prod_archive_listing(p)) {   /* a shard the last line named: listed before the next line */
            if (pf_prod_archive_some(p, t_end, &added, err))
                return -1;
            if (pf_prod_archive_listing(p))
                break;
            continue;
        }
        pf_manifest_item it;
        int r = pf_manifest_next(p->manifest, &it, err);
        if (r < 0)
            return -1;
        if (r == 0) {
            size_t bad = pf_manifest_bad_lines(p->manifest);
            if (bad)
                pf_warn(LOG, "manifest: %zu bad line%s skipped (each named above); %zu lines taken", bad,
                        bad == 1 ? "" : "s", pf_manifest_items(p->manifest));
            else
                pf_info(LOG, "manifest: %zu lines taken", pf_manifest_items(p->manifest));
            pf_manifest_close(p->manifest);
            p->manifest = NULL;
            break;
        }
        if (add_manifest_item(p, &it, &added, err))
            return -1;
        if ((k & 63) == 63 && pf_now() > t_end)
            break;
    }
    if (added)
        p->db_exhausted = 0;
    if (!p->manifest) {
        p->scanning = 0;
        pf_prod_tx(p);
        if (pf_jobstore_meta_set(p->js, "scan_complete", "1", err))
            return -1;
        pf_info(LOG, "scan complete: %lld items in the job", (long long)p->total);
    }
    return 0;
}
