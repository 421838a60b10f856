/* compact.h - one final record per (item, task) in a finished output (issue 19).
 *
 * The sink writes a success after an earlier error record of the same item (a --retry-failed run, or a run
 * with a new job store over an old output): the error is then superseded. When a job ends, `run` (after its
 * sink closed) and a separate `sink` (when its producer reports the job complete) drop every superseded error
 * record from the output: the file is rewritten beside it (<out>.compact), fsync'ed and
 * renamed over it, after the job store's record offsets were moved back by the bytes dropped before them (so
 * a later resume still reconciles the output with the job store). A crash before the rename leaves the old
 * output, whose records all still end where the store now says or later: nothing is lost or redone twice. */
#ifndef PF_PIPELINE_COMPACT_H
#define PF_PIPELINE_COMPACT_H

#include <stdint.h>

#include "base/err.h"
#include "pipeline/sink_index.h"

/* Drop OUT's error records that a result record of the same item (key + path) supersedes; DB (may be NULL)
 * is the job store whose offsets follow. *removed: records dropped (0: the file was left untouched). */
int pf_output_compact(const char *out, const char *db, int64_t *removed, pf_err *err);

/* The same in the sink, which holds OUT open and locked as *FD (END bytes, all of it in the index IX):
 * the index lists the superseded errors (nothing is read when there are none). When records are dropped, *FD
 * becomes the new file (locked before it replaced the old one) and *END its size; the index and the views'
 * checkpoints follow. DB NULL: a separate producer owns the job store (its offsets are not moved; see
 * PROTOCOL.md, Records). */
int pf_output_compact_indexed(const char *out, int *fd, int64_t *end, pf_sink_index *ix, const char *db,
                              int64_t *removed, pf_err *err);

#endif
