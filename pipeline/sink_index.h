/* sink_index.h - the sink's dedupe set on disk: the identity of every record in the output, in a SQLite file
 * beside it (<out>.seen), with a checkpoint: the output offset up to which the index holds every record.
 *
 * Why on disk: the set used to live in memory (16 bytes + hash slack per record: ~4 GB at 100M records) and
 * was rebuilt at every sink start by parsing the whole output (10 s per million lines, nothing dispatched
 * meanwhile). Now the sink's memory is SQLite's bounded page cache whatever the output's size, and a start
 * reads only the output's tail past the checkpoint (records synced to the output whose index commit a crash
 * cut off), so a restart costs the same for 1k or 100M records.
 *
 * Order of writes (the crash guarantee): a batch's identities go into an open transaction as its records
 * arrive (so a duplicate inside the batch is caught); the output is written and fdatasync'ed; only then is
 * the transaction committed with the new checkpoint. So the index never claims a record the output does not
 * hold: a kill -9 before the commit rolls the batch back, and the tail scan at the next start adds the
 * records that did reach the output. An output that no longer matches the index (shorter than the checkpoint,
 * another file, its bytes before the checkpoint changed: compared by a hash of the 256 bytes before it, and
 * the file's inode), or an index of an older version or whose runs do not add up, makes the index start over
 * (a new file) from a full scan, logged.
 *
 * The identities are kept as sorted runs merged by levels (sink_idset.h): a new record costs a bounded
 * number of bytes written however many the output holds, and a lookup a B-tree lookup per run. */
#ifndef PF_PIPELINE_SINK_INDEX_H
#define PF_PIPELINE_SINK_INDEX_H

#include <stdint.h>

#include "base/err.h"

typedef struct pf_sink_index pf_sink_index;

/* A record's identity (xxh3-128 of key + path + kind; sink_output.c). */
typedef struct pf_rec_id {
    uint64_t hi, lo;
} pf_rec_id;

/* The identity of a record: the item key plus the raw path bytes (two files with the same bytes are two items,
 * each with its own record), plus its kind: a result and an error record of one item are two identities, so
 * that a later success (--retry-failed, a new --db) is written after an earlier error instead of being
 * dropped as its duplicate (compaction then drops the superseded error, compact.h). */
pf_rec_id pf_rec_identity(const char *key, const char *path, int ok);
/* What a success supersedes: the same path with the same task and settings, i.e. the key's settings half
 * ("<content>-<settings>"), not its content half: an unreadable or broken file that was fixed has other bytes
 * (another content hash) and is still the item whose error the new result replaces. */
pf_rec_id pf_rec_supersede_ident(const char *key, const char *path);

/* Open (create) the index of the output OUT (open as FD, locked by the caller) and make it match the output:
 * *FROM is where the caller must scan the output from and add what it finds (pf_sink_index_add, then
 * pf_sink_index_commit with the scan's end): the checkpoint when the index matches, 0 when it starts over. */
int pf_sink_index_open(const char *out, int fd, pf_sink_index **ix, int64_t *from, pf_err *err);
void pf_sink_index_close(pf_sink_index *ix);

/* 1 when ID is in the index (committed or added in the open batch), 0 not, -1 error. */
int pf_sink_index_has(pf_sink_index *ix, pf_rec_id id, pf_err *err);
/* Add ID to the open batch (a transaction begun on demand): 1 added, 0 it was there, -1 error. */
int pf_sink_index_add(pf_sink_index *ix, pf_rec_id id, pf_err *err);
/* A --path-only result's identity by its content key (pf_rec_identity(content_key, path, 1)): a file only
 * touched between two attempts gets a new `key` but keeps its bytes, and its redone record is a duplicate.
 * Kept apart from the records (pf_sink_index_count does not count them). Same returns as has/add. */
int pf_sink_index_has_content(pf_sink_index *ix, pf_rec_id id, pf_err *err);
int pf_sink_index_add_content(pf_sink_index *ix, pf_rec_id id, pf_err *err);
/* Add the N identities IDS with ADD (pf_sink_index_add or _add_content) to the open batch: reading an output
 * back (a batch grown large is written out as a sorted run inside the transaction: sink_idset.h). */
int pf_sink_index_add_sorted(pf_sink_index *ix, pf_rec_id *ids, size_t n,
                             int (*add)(pf_sink_index *, pf_rec_id, pf_err *), pf_err *err);
/* Commit the open batch: the output holds every record up to END (synced), FD is the output (for the
 * fingerprint of its bytes before END). */
int pf_sink_index_commit(pf_sink_index *ix, int fd, int64_t end, pf_err *err);
/* Drop the open batch (its records did not reach the output). */
void pf_sink_index_rollback(pf_sink_index *ix);
/* Remove ID (a record compaction dropped from the output): 1 removed, 0 absent, -1 error. Within the open
 * batch; pf_sink_index_commit makes it stick. */
int pf_sink_index_remove(pf_sink_index *ix, pf_rec_id id, pf_err *err);
/* Supersession (one final record per (item, task), compact.h): IDENT is pf_rec_supersede_ident of a record.
 * An error record written: noted. A result written: 1 when an error record of the same item was noted before
 * (that error is now superseded, and remembered for compaction), 0 not, -1 error. Both in the open batch. */
int pf_sink_index_note_error(pf_sink_index *ix, pf_rec_id ident, pf_err *err);
int pf_sink_index_note_result(pf_sink_index *ix, pf_rec_id ident, pf_err *err);
/* Superseded error records waiting for compaction (committed + open batch). */
int64_t pf_sink_index_superseded(const pf_sink_index *ix);
/* Call CB for each superseded identity (stops at a non-zero return, which is returned). */
int pf_sink_index_each_superseded(pf_sink_index *ix, int (*cb)(pf_rec_id ident, void *arg), void *arg, pf_err *err);
/* Compaction dropped the superseded errors (IDs: their record identities, N of them) from the output, now FD
 * (a new file) of END bytes: forget them, and commit. */
int pf_sink_index_compacted(pf_sink_index *ix, const pf_rec_id *ids, size_t n, int fd, int64_t end, pf_err *err);

/* Distinct records in the output (committed + the open batch's). */
int64_t pf_sink_index_count(const pf_sink_index *ix);
/* The checkpoint: the output offset up to which the committed index is complete. */
int64_t pf_sink_index_end(const pf_sink_index *ix);
/* The index's file name for OUT (malloc'd). */
char *pf_sink_index_path(const char *out);

#endif
