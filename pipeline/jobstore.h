/* jobstore.h - a job's durable state in SQLite (WAL): its settings and every item's state.
 *
 * Item states: queued -> leased (stage, worker, deadline) -> done | failed; a lost lease goes back to
 * queued (attempts + 1). done and failed are final: nothing moves an item out of them, so a restarted
 * producer never redoes a finished item. Writes are grouped in transactions by the caller: the producer
 * commits every 0.2 s or few thousand updates (pf_jobstore_commit_due), so that an item's three updates
 * (leased twice, finished) land in the same pages of the same commit instead of a commit of whole WAL pages
 * each; bytes written per item fell from ~16 KB to well under 1 KB (bench/bench_hub.c measures it). synchronous=NORMAL: a power cut may
 * lose the last commits (never corrupt the file); the worst case is an item redone, which the sink's
 * dedupe turns into no extra record.
 *
 * One process at a time: open takes an exclusive lock (outfile.h) and refuses a job store in use, naming
 * the holder. Every finished item keeps the end offset of its record in the output (out_end), so that the
 * output and the job store can be reconciled when a sink (re)connects: records the output lost are redone.
 */
#ifndef PF_PIPELINE_JOBSTORE_H
#define PF_PIPELINE_JOBSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "proto/proto.h"

typedef enum pf_item_state {
    PF_ITEM_QUEUED = 0,
    PF_ITEM_LEASED = 1,
    PF_ITEM_DONE = 2,
    PF_ITEM_FAILED = 3,
} pf_item_state;

typedef struct pf_jobstore pf_jobstore;

typedef struct pf_item_row {
    int64_t id;
    char *path;                 /* malloc'd */
    char key[PF_KEY_LEN + 1];
    int64_t size;
    int attempts;
    int state;
    char *task;                 /* malloc'd canonical task JSON of this item, NULL = the job's task */
    char *meta;                 /* malloc'd JSON object its record carries (manifest id, extra), or NULL */
} pf_item_row;

int pf_jobstore_open(const char *path, pf_jobstore **out, pf_err *err);
/* The same, with the store's lock already held by the caller (HELD_LOCK from pf_dblock_acquire on PATH; -1: take
 * it here, as pf_jobstore_open): the store keeps a copy of that descriptor. */
int pf_jobstore_open_held(const char *path, int held_lock, pf_jobstore **out, pf_err *err);
void pf_jobstore_close(pf_jobstore *js);

/* WAL checkpoints in a thread with a connection of its own (every 0.5 s, PASSIVE), instead of inside the
 * commit that fills the WAL past 1000 pages: that commit then wrote and synced the database file on the
 * caller's thread, which for the producer is the loop that hands out work (a 1M-file scan inserts ~400 MB of
 * pages). Stopped by pf_jobstore_close. */
int pf_jobstore_checkpoint_thread(pf_jobstore *js, pf_err *err);

int pf_jobstore_begin(pf_jobstore *js, pf_err *err);
int pf_jobstore_commit(pf_jobstore *js, pf_err *err);
int pf_jobstore_in_tx(const pf_jobstore *js);
/* Group commit: commit the open transaction once it is MAX_AGE_S old or holds MAX_OPS updates, else
 * nothing. Why it is safe to hold transitions back (see also the top of this file): a transition lost with
 * a crash leaves the item queued or leased, and leases go back to the queue at startup, so the item is
 * redone; the sink acknowledges only records already on disk and drops the second copy of a record it
 * holds, acknowledging it again with an output offset at or past the first copy's, so the redo writes
 * nothing and the reconciliation by offsets (out_end) stays on the safe side. */
int pf_jobstore_commit_due(pf_jobstore *js, double max_age_s, int64_t max_ops, pf_err *err);

/* Job settings (key/value text). get gives a malloc'd copy, or NULL when absent. */
int pf_jobstore_meta_get(pf_jobstore *js, const char *k, char **v, pf_err *err);
int pf_jobstore_meta_set(pf_jobstore *js, const char *k, const char *v, pf_err *err);

int pf_jobstore_has_path(pf_jobstore *js, const char *path, int *has, pf_err *err);
/* Add a queued item; *id = its id, or -1 when the path was already in the job. The key is computed when
 * the item is first handed out (the producer reads the file then, so a scan never reads every byte twice). */
int pf_jobstore_add(pf_jobstore *js, const char *path, int64_t size, int64_t *id, pf_err *err);
/* The same for one (path, task) pair: IDENT is the canonical path (NULL: PATH), TASK the item's canonical task
 * JSON ("" = the job's task), META the JSON object its record carries (NULL: none). Identity is (ident, task):
 * the same image with two tasks is two items, the same file typed two ways one; the same pair again is
 * ignored (*id = -1). PATH, as found, is what workers read and records show. */
int pf_jobstore_add_item(pf_jobstore *js, const char *path, const char *ident, const char *task, const char *meta,
                         int64_t size, int64_t *id, pf_err *err);

/* Up to MAX queued items with id > after_id, in id order. Free rows with pf_item_rows_free. */
int pf_jobstore_next_queued(pf_jobstore *js, int64_t after_id, size_t max, pf_item_row *rows, size_t *n,
                            pf_err *err);
void pf_item_rows_free(pf_item_row *rows, size_t n);
int pf_jobstore_get(pf_jobstore *js, int64_t id, pf_item_row *row, pf_err *err);
/* *state = the item's state (pf_item_state), or -1 when there is no item ID. */
int pf_jobstore_state(pf_jobstore *js, int64_t id, int *state, pf_err *err);

/* Transitions. Each only applies to an item that is not final; *changed (may be NULL) says if it did. */
int pf_jobstore_lease(pf_jobstore *js, int64_t id, const char *key, const char *stage, const char *worker,
                      double deadline_unix, pf_err *err);
int pf_jobstore_requeue(pf_jobstore *js, int64_t id, int attempts, const char *reason, pf_err *err);
int pf_jobstore_finish(pf_jobstore *js, int64_t id, const char *key, int ok, const char *error, int *changed,
                       pf_err *err);
/* finish, and note where the item's record ends in the output file (OUT_END bytes; -1 unknown). */
int pf_jobstore_finish_at(pf_jobstore *js, int64_t id, const char *key, int ok, const char *error, int64_t out_end,
                          int *changed, pf_err *err);
/* The reason of a failed item (ID, KEY) whose error record the sink acknowledged before its worker's `done`
 * (which carries the reason) arrived: set once the `done` comes. */
int pf_jobstore_set_reason(pf_jobstore *js, int64_t id, const char *key, const char *error, pf_err *err);
/* Reconciliation with the output (its committed size OUT_SIZE, from the sink): every finished item whose
 * record ends beyond it is not in the output, so it goes back to queued (attempts kept) and is redone.
 * *n_done / *n_failed: how many done / failed items went back. */
int pf_jobstore_requeue_beyond(pf_jobstore *js, int64_t out_size, int64_t *n_done, int64_t *n_failed, pf_err *err);
/* Finished items with an output offset (the ones reconciliation can check). */
int pf_jobstore_count_placed(pf_jobstore *js, int64_t *n, pf_err *err);
/* Finished items with no output offset (finished before offsets were recorded): they cannot be checked. */
int pf_jobstore_count_unplaced(pf_jobstore *js, int64_t *n, pf_err *err);
/* --retry-failed: every failed item back to queued with its attempts reset (*n: how many). Its error record
 * stays in the output until a success supersedes it (pf_output_compact). */
int pf_jobstore_requeue_failed(pf_jobstore *js, int64_t *n, pf_err *err);
/* The output lost LEN bytes ending at END (a superseded record dropped by pf_output_compact): every record
 * end at or beyond END moves back by LEN. */
int pf_jobstore_shift_out_end(pf_jobstore *js, int64_t end, int64_t len, pf_err *err);
/* At startup: every leased item back to queued (its workers belong to the previous run). */
int pf_jobstore_reset_leases(pf_jobstore *js, int64_t *n, pf_err *err);
/* counts[state] for the four states. All but the leased are kept in the store (updated with every change
 * paliflow makes, committed with it), so this costs the same at 100M items as at 10; a program other than
 * paliflow that edits the store leaves them wrong until pf_jobstore_recount. */
int pf_jobstore_counts(pf_jobstore *js, int64_t counts[4], pf_err *err);
/* Count every item again into the kept counts (linear: ~0.25 s per million items). Commits first. */
int pf_jobstore_recount(pf_jobstore *js, pf_err *err);
/* *any = 1 when some item is queued or leased (one index lookup). */
int pf_jobstore_any_open(pf_jobstore *js, int *any, pf_err *err);
/* The failed items' reasons, grouped: CB(reason, count, arg) for each distinct reason, most frequent first
 * (at most MAX groups; reason "" = none stored). */
int pf_jobstore_error_reasons(pf_jobstore *js, size_t max, void (*cb)(const char *reason, int64_t n, void *arg),
                              void *arg, pf_err *err);

#endif
