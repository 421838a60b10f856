/* compact.h - one final record per (item, task) in a finished output (issue 19).
 *
 * The sink writes a success after an earlier error record of the same item (a --retry-failed run, or a run
 * with a new job store over an old output): the error is then superseded. When a job ends, `run` drops every
 * superseded error record from the output: the file is rewritten beside it (<out>.compact), fsync'ed and
 * renamed over it, after the job store's record offsets were moved back by the bytes dropped before them (so
 * a later resume still reconciles the output with the job store). A crash before the rename leaves the old
 * output, whose records all still end where the store now says or later: nothing is lost or redone twice. */
#ifndef PF_PIPELINE_COMPACT_H
#define PF_PIPELINE_COMPACT_H

#include <stdint.h>

#include "base/err.h"

/* Drop OUT's error records that a result record of the same item (key + path) supersedes; DB (may be NULL)
 * is the job store whose offsets follow. *removed: records dropped (0: the file was left untouched). */
int pf_output_compact(const char *out, const char *db, int64_t *removed, pf_err *err);

#endif
