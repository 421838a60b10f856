/* out_view.h - output forms beside the JSON-lines file (issue 19): WebDataset tar shards, sidecar files,
 * size-rotated JSONL shards. Each is a *view* of the JSONL output, which stays the job's ledger.
 *
 * Why views and not other writers: the JSONL already carries every guarantee (one record per item, the
 * record index and its checkpoint, the acks' offsets that reconcile it with the job store, compaction). A
 * view only has to follow it: after each batch is synced to the JSONL, the view appends the batch's records,
 * makes them durable, and saves its checkpoint: the JSONL offset it holds everything up to, with what it needs
 * to cut its own files back to that point (the current tar shard's size, ...), in <out>.<view>.state
 * (written beside, fsync'ed, renamed over). After a kill -9 the view is cut back to its checkpoint (a
 * half-written tar member, a sample written after it, a later shard are removed; a sidecar is simply written
 * again, whole, by rename) and replays the JSONL from there: exactly one sample/sidecar entry per record. A
 * state that does not match the JSONL (its offset past the file's end, another file) starts the view over.
 * A batch is acknowledged only once its views are synced too, so "the job is complete" means every form is.
 */
#ifndef PF_PIPELINE_OUT_VIEW_H
#define PF_PIPELINE_OUT_VIEW_H

#include <jansson.h>
#include <stdint.h>

#include "base/err.h"
#include "base/optable.h"

/* What views the sink keeps (sink options). */
typedef struct pf_view_params {
    const char *webdataset;    /* folder of tar shards (made if absent) */
    int shard_size;            /* samples per tar shard */
    int sidecar_next;          /* a <image>.json next to each image */
    const char *sidecar_dir;   /* or under this folder, in the images' folder tree */
    const char *jsonl_shards;  /* folder of size-rotated JSONL shards + index.json */
    double shard_mb;           /* size of a JSONL shard, MiB */
} pf_view_params;

void pf_view_default_params(pf_view_params *p);

/* The views' rows of a command's option table (base/optable.h), for sink and run: T the command's struct, P
 * the path of its pf_view_params. */
#define PF_VIEW_OPT_ROWS(T, P)                                                                                     \
    PF_OPT_ROW_HEADING("other output forms, beside the JSONL (which stays the job's ledger; each form follows it\n"  \
                       "after every batch and is repaired and caught up after a crash):"),                          \
        PF_OPT_ROW_STR("webdataset", T, P.webdataset, PF_OPT_NONEMPTY, "DIR",                                       \
                       "WebDataset tar shards DIR/shard-000000.tar, ...: per result the original image bytes "     \
                       "(read from the item's path or shard: this process must see the input), its record (.json) "   \
                       "and text (.txt); error records stay in the JSONL only"),                                    \
        PF_OPT_ROW_INT("shard-size", T, P.shard_size, 1, 1000000000, 0, "N", "samples per tar shard"),              \
        PF_OPT_ROW_FLAG("sidecar-next", T, P.sidecar_next, 0,                                                      \
                        "a sidecar <image>.json next to each image: a JSON array, one record per task"),            \
        PF_OPT_ROW_STR("sidecar-dir", T, P.sidecar_dir, PF_OPT_NONEMPTY, "DIR",                                     \
                       "the sidecars under DIR instead, in the images' folder tree"),                               \
        PF_OPT_ROW_STR("jsonl-shards", T, P.jsonl_shards, PF_OPT_NONEMPTY, "DIR",                                   \
                       "the records also as size-rotated JSONL shards DIR/records-000000.jsonl, ... with "         \
                       "DIR/index.json (records and bytes per shard)"),                                             \
        PF_OPT_ROW_DOUBLE("shard-mb", T, P.shard_mb, 0.001, 1048576, 0, "N", "size of a JSONL shard, in MiB")
/* Checks across the view options (ERR names them): 0 fine, -1 not. */
int pf_view_params_check(const pf_view_params *p, pf_err *err);
/* After `run` compacted OUT: bring the views P asks for up to date (rotated shards are rebuilt). */
int pf_views_refresh(const pf_view_params *p, const char *out, pf_err *err);
int pf_view_params_any(const pf_view_params *p);

typedef struct pf_view pf_view;

typedef struct pf_view_ops {
    const char *name;   /* in logs and in the state file's name */
    /* Open the view's files and cut them back to the saved state V->st (FRESH: to nothing: remove what the
     * view made before). */
    int (*open)(pf_view *v, int fresh, pf_err *err);
    /* Add one record (the JSON object of a JSONL line). */
    int (*apply)(pf_view *v, const json_t *rec, pf_err *err);
    /* Make what was applied durable and put what a restart needs into V->st. */
    int (*sync)(pf_view *v, pf_err *err);
    void (*close)(pf_view *v);
} pf_view_ops;

struct pf_view {
    const pf_view_ops *ops;
    const pf_view_params *p;
    const char *out;      /* the JSONL */
    char *state_path;     /* <out>.<name>.state */
    int64_t end;          /* JSONL offset the view holds everything up to */
    json_t *st;           /* the view's own state (an object), saved with end */
    int owned;            /* a state file was there: the view's files in its folder are ours to cut or remove;
                           * without one, files of the view's names there are someone else's: refused */
    void *impl;
};

extern const pf_view_ops pf_view_webdataset, pf_view_sidecar, pf_view_jsonl_shards;

typedef struct pf_views pf_views;

/* Open the views P asks for over the JSONL OUT (open as FD, synced up to OUT_END), each cut back to its
 * checkpoint and caught up with the JSONL. *VS is NULL when P asks for none. */
int pf_views_open(const pf_view_params *p, const char *out, int fd, int64_t out_end, pf_views **vs, pf_err *err);
/* The JSONL grew to NEW_END with the N records RECS (NULL entries: duplicates, skipped): add them to every
 * view, sync, save the checkpoints. */
int pf_views_apply(pf_views *vs, json_t *const *recs, size_t n, int64_t new_end, pf_err *err);
void pf_views_close(pf_views *vs);

/* Compaction rewrote OUT from OLD_END bytes to NEW_END: a view that held all of it now holds all of the new
 * file (WebDataset samples and sidecars hold no superseded error); rotated JSONL shards, copies of the old
 * lines, start over. Works on the state files (no view open). */
int pf_views_compacted(const char *out, int64_t old_end, int64_t new_end, pf_err *err);

/* --- helpers for the views (out_names.c) --- */

/* NAME made safe as one path component or WebDataset key: bytes other than [A-Za-z0-9_-] (and '.' when
 * KEEP_DOT) become '_', a component of only dots becomes "_", at most MAX bytes (a longer one is cut and ends
 * with 8 hex digits of its hash, so two long names stay apart). Never empty, never "." or "..", no '/'. */
void pf_safe_component(const char *name, size_t len, int keep_dot, size_t max, char *out);
/* Write all of BUF at OFF of FD (pwrite, retried). */
int pf_pwrite_all(int fd, const void *buf, size_t len, int64_t off);
/* Write DATA to NAME in the folder DIRFD atomically (a temporary in the same folder, then rename over NAME,
 * never following a symlink at NAME). */
int pf_write_replace(int dirfd, const char *name, const void *data, size_t len, const char *shown, pf_err *err);

#endif
