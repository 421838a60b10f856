/* sink_idset.h - a set of record identities kept in the sink's index file (sink_index.h) as sorted runs: a
 * log-structured merge tree, so that what a new identity costs in writes does not grow with the set.
 *
 * Why: identities are random hashes. In one big B-tree each new one lands on a random leaf page, so once the
 * set outgrows its page cache every record dirtied a page of its own (plus its rollback-journal copy): ~2 KB
 * written per record at 1M records, ~5.9 KB at 10M. Here a new identity goes to an in-memory set (the open
 * batch); the batch is written, sorted, as a new table (a "run": pages filled in order, dense, new pages
 * need no journal copy); runs of about the same size are merged, FANOUT at a time and again in sorted order,
 * into one run of the next level. Each identity is so rewritten once per level, O(log N) times at ~24 bytes,
 * never a page of its own. A lookup probes every live run (a B-tree lookup each, in one SQL statement) but those
 * whose in-memory Bloom filter rules the identity out (the smaller runs: sink_idset.c).
 *
 * Merges advance in steps inside the index's transactions (sink_index.c commits them with the batch that
 * paid for them), a budget of identities per step in proportion to the identities the step's batch added:
 * a merge of a 10M-record run is spread over many commits instead of stalling the sink for seconds. A merge's
 * inputs stay live until its last step, which drops them and makes its output live, in one transaction; its
 * output is filled in order, so its largest identity is where the next step resumes. A crash or a failed
 * transaction at any point leaves the last committed state, a consistent one (no identity lost, none
 * counted twice: the output of an unfinished merge is never probed).
 *
 * The registry table `runs` (shared by the sets of one file, told apart by KIND) lists every run: its table
 * "run<t>", its size, its level, whether it is still being built and which merge it feeds. */
#ifndef PF_PIPELINE_SINK_IDSET_H
#define PF_PIPELINE_SINK_IDSET_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "pipeline/sink_index.h"

typedef struct pf_idset pf_idset;

/* Create the registry in DB when missing (inside the caller's schema setup). */
/* The index's error for WHAT failing on DB (FILE: the index's path), a full disk said as the output's own write
 * would say it. -1. */
int pf_idset_db_err(sqlite3 *db, const char *file, const char *what, pf_err *err);
int pf_idset_schema(sqlite3 *db, const char *file, pf_err *err);
/* Does the registry match the tables in DB (every run's table there, no table of a run it does not list,
 * every merge with inputs)? 1 yes, 0 no (*WHY says what), -1 error. */
int pf_idset_consistent(sqlite3 *db, const char *file, const char **why, pf_err *err);

/* The set KIND of DB (FILE names it in messages); DB stays the caller's. */
int pf_idset_open(sqlite3 *db, const char *file, int kind, pf_idset **set, pf_err *err);
void pf_idset_close(pf_idset *s);

/* 1 when ID is in the set (a live run or the open batch), 0 not, -1 error. */
int pf_idset_has(pf_idset *s, pf_rec_id id, pf_err *err);
/* Add ID to the open batch: 1 added, 0 it was there, -1 error. A batch grown past SPILL identities is written
 * as a run at once (inside the caller's open transaction: reading a whole output back is one transaction). */
int pf_idset_add(pf_idset *s, pf_rec_id id, pf_err *err);
/* Remove ID (from the open batch or the run holding it; from an unfinished merge's output too): 1 removed,
 * 0 absent, -1 error. Writes: the caller's transaction must be open. */
int pf_idset_remove(pf_idset *s, pf_rec_id id, pf_err *err);
/* Before the caller commits (its transaction open): the open batch becomes a run, and merges advance by a
 * budget in proportion to what the batch added. */
int pf_idset_flush(pf_idset *s, pf_err *err);
/* Bulk mode, for a set filled from scratch (a whole output read back, one transaction): an add does not probe
 * the runs (at 10M records they were most of a rebuild's time), only the open batch drops the duplicates it
 * holds; the next pf_idset_flush then merges every run into one, which drops the duplicates between them, so
 * that pf_idset_get_stats's in_runs is the set's exact size. The caller turns it off after that commit. */
void pf_idset_set_bulk(pf_idset *s, int bulk);
/* The caller's transaction was rolled back: forget the open batch and read the registry again (the runs
 * this transaction wrote or merged are gone). 0, or -1 when the registry cannot be read. */
int pf_idset_forget(pf_idset *s, pf_err *err);

/* Figures of the set, for tests and logs. */
typedef struct pf_idset_stats {
    int64_t pending;   /* identities in the open batch */
    int runs;          /* live runs (each probed by a lookup, unless its filter rules the identity out) */
    int filtered;      /* live runs with an in-memory Bloom filter */
    int merging;       /* merges under way */
    int levels;        /* highest live level + 1 */
    int64_t in_runs;   /* identities in live runs */
} pf_idset_stats;
void pf_idset_get_stats(const pf_idset *s, pf_idset_stats *st);
/* Run merges until none is due (a test's way to reach the final shape): 0 or -1. Transaction open. */
int pf_idset_merge_all(pf_idset *s, pf_err *err);

/* The 16 bytes of ID as stored: big-endian hi then lo, so that the B-trees' order is (hi, lo). */
void pf_rec_id_bytes(pf_rec_id id, unsigned char b[16]);
pf_rec_id pf_rec_id_from_bytes(const unsigned char b[16]);

#endif
