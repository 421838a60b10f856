/* producer_job.c - the producer's side of the job store: transactions committed in groups, the job's
 * task settings (stored on the first run, checked on a resume), the inputs (stored so that an interrupted
 * scan can continue) and the scan itself, done in bounded chunks between socket polls. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/file.h"
#include "base/log.h"
#include "pipeline/producer_internal.h"

int pf_prod_tx(prod *p)
{
    pf_err e = {{0}};
    if (!pf_jobstore_in_tx(p->js) && pf_jobstore_begin(p->js, &e)) {
        pf_error(LOG, "%s", e.msg);
        return -1;
    }
    return 0;
}

/* Group commit (jobstore.h, pf_jobstore_commit_due, says why holding transitions back loses nothing):
 * at most COMMIT_EVERY_S of transitions wait in the open transaction, and at most COMMIT_MAX_OPS updates
 * (a bound on the memory SQLite holds for it, e.g. while a scan inserts). */
#define COMMIT_EVERY_S 0.2
#define COMMIT_MAX_OPS 20000
int pf_prod_commit_due(prod *p, pf_err *err)
{
    return pf_jobstore_commit_due(p->js, COMMIT_EVERY_S, COMMIT_MAX_OPS, err);
}

void pf_prod_dbcheck(int rc, const pf_err *e)
{
    if (rc)
        pf_error(LOG, "%s", e->msg);
}

char *pf_prod_task_json(const pf_task *t, int image_size)
{
    json_t *j = json_pack("{s:s, s:i, s:f, s:i, s:f, s:f, s:I, s:b, s:i}", "prompt", t->prompt ? t->prompt : "",
                          "max_new_tokens", t->max_new_tokens, "temperature", t->temperature, "top_k", t->top_k,
                          "top_p", t->top_p, "repetition_penalty", t->repetition_penalty, "seed",
                          (json_int_t)t->seed, "autorotate", t->autorotate, "image_size", image_size);
    char *s = j ? json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

int pf_prod_task_from_json(const char *s, pf_task *t, char **prompt, int *image_size, pf_err *err)
{
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);
    if (!j)
        return pf_errf(err, "job store: task settings are not JSON: %s", je.text);
    *t = pf_task_default_params();
    const char *pr = NULL;
    json_int_t seed = 0;
    int autorot = 0;
    if (json_unpack_ex(j, &je, 0, "{s:s, s:i, s:F, s:i, s:F, s:F, s:I, s:b, s:i}", "prompt", &pr, "max_new_tokens",
                       &t->max_new_tokens, "temperature", &t->temperature, "top_k", &t->top_k, "top_p", &t->top_p,
                       "repetition_penalty", &t->repetition_penalty, "seed", &seed, "autorotate", &autorot,
                       "image_size", image_size)) {
        json_decref(j);
        return pf_errf(err, "job store: task settings: %s", je.text);
    }
    t->seed = (uint64_t)seed;
    t->autorotate = autorot;
    *prompt = strdup(pr);
    json_decref(j);
    t->prompt = *prompt;
    return *prompt ? 0 : pf_errf(err, "out of memory");
}

int pf_prod_setup_job(prod *p, pf_err *err)
{
    const pf_producer_params *o = p->o;
    char *stored = NULL;
    if (pf_jobstore_meta_get(p->js, "task", &stored, err))
        return -1;
    if (stored) {
        pf_task st;
        char *sprompt = NULL;
        int ssize = 0;
        int rc = pf_prod_task_from_json(stored, &st, &sprompt, &ssize, err);
        free(stored);
        if (rc)
            return -1;
        if (o->have_task) {
            uint64_t a = pf_task_hash(&st, ssize), b = pf_task_hash(&o->task, o->image_size);
            if (a != b) {
                pf_errf(err, "%s holds a job for task '%s' (image size %d) with other settings than given; "
                        "resume with the same --task and settings, or use a new --db", o->db, sprompt, ssize);
                free(sprompt);
                return -1;
            }
        }
        p->task = st;
        p->prompt = sprompt;
        p->image_size = ssize;
        pf_info(LOG, "resuming the job in %s: task '%s', image size %d", o->db, p->prompt, p->image_size);
    } else {
        if (!o->have_task)
            return pf_errf(err, "%s holds no job yet: give --task and --image-size", o->db);
        p->task = o->task;
        p->prompt = strdup(o->task.prompt);
        if (!p->prompt)
            return pf_errf(err, "out of memory");
        p->task.prompt = p->prompt;
        p->image_size = o->image_size;
        char *js = pf_prod_task_json(&p->task, p->image_size);
        if (!js)
            return pf_errf(err, "out of memory");
        int rc = pf_jobstore_meta_set(p->js, "task", js, err);
        free(js);
        if (rc)
            return -1;
    }
    p->settings = pf_task_hash(&p->task, p->image_size);
    return 0;
}

static json_t *string_array(const char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

/* The strings of a JSON array (they live in the array), NULL-terminated; NULL when out of memory. */
static const char **string_values(const json_t *a, size_t *n)
{
    *n = json_array_size(a);
    const char **v = calloc(*n + 1, sizeof *v);
    for (size_t i = 0; v && i < *n; i++)
        v[i] = json_string_value(json_array_get(a, i));
    return v;
}

/* The given inputs go into the job store, so that a resume without inputs can scan them again. */
static int store_inputs(prod *p, pf_err *err)
{
    const pf_scan_params *so = &p->o->scan;
    json_t *j = json_pack("{s:o, s:o, s:o, s:s?, s:b, s:s?}", "roots", string_array(so->roots, so->n_roots),
                          "include", string_array(so->include, so->n_include), "exclude",
                          string_array(so->exclude, so->n_exclude), "list", so->list_file, "include_hidden",
                          so->include_hidden, "manifest", p->o->manifest);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s || pf_jobstore_meta_set(p->js, "inputs", s, err) ||
        pf_jobstore_meta_set(p->js, "scan_complete", "0", err)) {
        free(s);
        return s ? -1 : pf_errf(err, "out of memory");
    }
    free(s);
    return 0;
}

/* Open the scan of the inputs stored by an earlier run (TEXT: their JSON). */
static int open_stored_inputs(prod *p, const char *text, pf_err *err)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (!j)
        return pf_errf(err, "job store: stored inputs are not JSON");
    pf_scan_params so = {0};
    const char **vr = string_values(json_object_get(j, "roots"), &so.n_roots);
    const char **vi = string_values(json_object_get(j, "include"), &so.n_include);
    const char **ve = string_values(json_object_get(j, "exclude"), &so.n_exclude);
    int rc = -1;
    if (vr && vi && ve) {
        so.roots = vr;
        so.include = vi;
        so.exclude = ve;
        so.list_file = json_string_value(json_object_get(j, "list"));
        so.include_hidden = json_is_true(json_object_get(j, "include_hidden"));
        rc = pf_scan_open(&so, &p->scan, err);   /* copies the strings */
        if (!rc)
            rc = pf_prod_open_manifest(p, json_string_value(json_object_get(j, "manifest")), err);
    } else {
        pf_errf(err, "out of memory");
    }
    free(vr);
    free(vi);
    free(ve);
    json_decref(j);
    return rc;
}

/* Inputs: the given ones (stored for later resumes), or the stored ones when none are given and their scan
 * did not complete. */
int pf_prod_setup_scan(prod *p, pf_err *err)
{
    const pf_producer_params *o = p->o;
    int given = o->scan.n_roots > 0 || o->scan.list_file || o->manifest;
    char *scan_complete = NULL;
    if (pf_jobstore_meta_get(p->js, "scan_complete", &scan_complete, err))
        return -1;
    int complete = scan_complete && !strcmp(scan_complete, "1");
    free(scan_complete);
    if (given) {
        if (store_inputs(p, err) || pf_scan_open(&o->scan, &p->scan, err) ||
            pf_prod_open_manifest(p, o->manifest, err))
            return -1;
        p->scanning = 1;
        return 0;
    }
    if (complete)
        return 0;
    char *s = NULL;
    if (pf_jobstore_meta_get(p->js, "inputs", &s, err))
        return -1;
    if (!s) {
        if (p->total == 0)
            return pf_errf(err, "no inputs: give folders, files or --list");
        return 0;
    }
    int rc = open_stored_inputs(p, s, err);
    free(s);
    if (rc)
        return -1;
    p->scanning = 1;
    pf_info(LOG, "continuing the interrupted scan of the stored inputs");
    return 0;
}

/* The files the scan thread found (producer_scan.c) go into the job store, at most SCAN_TAKE_MAX per loop
 * turn and for at most the caller's budget: the loop never waits for the walk (an empty queue is "nothing new
 * yet"), and inserting is all the walk costs it. The inserts are not committed per chunk (pf_prod_commit_due),
 * so short chunks cost no extra writes. After the files, the manifest's lines (read here: a bounded chunk).
 *
 * Paced while workers are connected: a chunk of SCAN_SLICE_BUSY_S, then the loop serves the workers for
 * (1 - SCAN_SHARE) / SCAN_SHARE times as long before the next one. Unpaced, a loop that found entries waiting
 * on every turn inserted on every turn: a 1M-file scan went into the job store in 7-14 s and dispatch during
 * it fell to 47-86% of the rate after it (issue 18, bench/hub_scale.sh). At SCAN_SHARE the inserts still add
 * ~40k files/s (~2.5 us each), ten times what the fastest dispatch takes out, so the job store never runs dry
 * ahead of the scan. A loop that waited in its poll and heard nothing (p->scan_idle: workers busy with real
 * compute) loses nothing to a chunk: it takes one at once. */
#define SCAN_TAKE_MAX 512
#define SCAN_SLICE_BUSY_S 0.002
#define SCAN_SHARE 0.1
static int scan_busy(const prod *p)
{
    return pf_prod_count_role(p, ROLE_PRE) > 0 || pf_prod_count_role(p, ROLE_INF) > 0;
}

static int scan_more(prod *p, double budget_s, pf_err *err);

int pf_prod_scan_some(prod *p, double budget_s, pf_err *err)
{
    int busy = scan_busy(p), idle = p->scan_idle;
    p->scan_idle = 0;
    double t0 = pf_now();
    if (!busy)
        return scan_more(p, budget_s, err);
    if (!idle && t0 < p->scan_next)
        return 0;
    int rc = scan_more(p, budget_s < SCAN_SLICE_BUSY_S ? budget_s : SCAN_SLICE_BUSY_S, err);
    double t1 = pf_now();
    p->scan_next = t1 + (t1 - t0) * (1 - SCAN_SHARE) / SCAN_SHARE;
    return rc;
}

long pf_prod_scan_wait_ms(prod *p, double now)
{
    if (!p->feed && !p->files_scanned)
        return 0;   /* the walk starts on the next turn */
    int waiting = p->files_scanned || p->stash_i < p->stash_n || pf_prod_archive_listing(p) ||
                  pf_prod_feed_waiting(p->feed) > 0;
    if (!waiting)
        return 5;   /* the walk goes on with nothing new yet: look again soon */
    if (!scan_busy(p) || now >= p->scan_next)
        return 0;
    long ms = (long)((p->scan_next - now) * 1000) + 1;
    return ms > 5 ? 5 : ms;
}

static int scan_more(prod *p, double budget_s, pf_err *err)
{
    if (p->files_scanned)
        return pf_prod_manifest_some(p, budget_s, err);
    if (!p->feed && pf_prod_feed_start(p->scan, &p->feed, err))
        return -1;
    pf_prod_feed_yield(p->feed, scan_busy(p));
    double t_end = pf_now() + budget_s;
    int added = 0, state = 0;
    for (size_t taken = 0; taken < SCAN_TAKE_MAX;) {
        if (pf_prod_archive_listing(p)) {   /* a shard found: its members before the next file */
            if (pf_prod_archive_some(p, t_end, &added, err))
                return -1;
            if (pf_prod_archive_listing(p))
                break;
            continue;
        }
        if (p->stash_i == p->stash_n) {   /* all taken entries added: take more from the walk */
            p->stash_i = 0;
            p->stash_n = pf_prod_feed_take(p->feed, p->stash, PF_PROD_STASH, &state, err);
            if (state < 0)
                return -1;
            taken += p->stash_n;
            if (p->stash_n == 0)
                break;
        }
        /* A shard starts a listing that must end before the next entry is added (one listing at a time): the
         * entries after it wait in the stash. */
        while (p->stash_i < p->stash_n && !pf_prod_archive_listing(p)) {
            pf_prod_scan_entry *en = p->stash[p->stash_i++];
            int ar = pf_prod_archive_add(p, en->path, (const char *const *)p->tasks, p->n_tasks, NULL, &added, err);
            int rc = ar < 0 ? -1 : ar ? 0 : pf_prod_add_found(p, en->path, en->ident, en->size, &added, err);
            pf_prod_scan_entry_free(en);
            if (rc)
                return -1;
        }
        if (pf_now() > t_end)
            break;
    }
    if (added)
        p->db_exhausted = 0;
    if (state == 0 || p->stash_i < p->stash_n || pf_prod_archive_listing(p))
        return 0;
    pf_prod_feed_stop(p->feed);   /* the walk is complete and joined: its counters may be read */
    p->feed = NULL;
    if (p->manifest) {   /* the files first, then the manifest's lines */
        p->files_scanned = 1;
        return 0;
    }
    p->scanning = 0;
    pf_prod_tx(p);
    if (pf_jobstore_meta_set(p->js, "scan_complete", "1", err))
        return -1;
    pf_info(LOG, "scan complete: %lld items in the job, %zu hidden files or folders skipped", (long long)p->total,
            pf_scan_hidden_skipped(p->scan));
    return 0;
}

void pf_prod_refill(prod *p)
{
    if (p->raw.n >= 256 || p->db_exhausted)
        return;
    pf_item_row rows[256];
    size_t n = 0;
    pf_err e = {{0}};
    if (pf_jobstore_next_queued(p->js, p->cursor, 256, rows, &n, &e)) {
        pf_error(LOG, "%s", e.msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!pf_prod_flight_find(p, rows[i].id))
            pf_prod_queue_push(p, rows[i].id, rows[i].path, rows[i].attempts, 0);
        p->cursor = rows[i].id;
    }
    pf_item_rows_free(rows, n);
    if (n < 256)
        p->db_exhausted = 1;
}
