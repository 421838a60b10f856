/* producer_reconcile.c - the output and the job store as one truth.
 *
 * The sink acknowledges each record with where its line ends in the output file, and the job store keeps
 * that offset with the finished item (jobstore.h, out_end). When a sink says hello it reports its output's
 * committed size (after cutting a torn last line): every finished item whose record ends beyond it is not in
 * the output (the file was deleted, cut, or replaced by a shorter one), so it goes back to the queue and is
 * redone instead of being counted. The job is complete only after a sink has reported, so "N records" in a
 * summary means N records in the output.
 *
 * Why offsets and not a list of what the output holds: the check is one indexed query, whatever the size of
 * the job or of the output, and needs no memory per record; the sink reads nothing for it that it does not
 * already read. Its limit: an output edited in the middle (a line removed, the rest kept) keeps its size
 * past those records and is not caught; deletion, truncation and a torn tail are. */
#include <string.h>

#include "base/log.h"
#include "pipeline/producer_internal.h"

void pf_prod_on_sink_output(prod *p, const pf_msg *m)
{
    const char *out = m->path ? m->path : "(its output)";
    if (m->out_end < 0) {
        if (!p->out_checked)
            pf_warn(LOG, "sink %s does not report its output's size: finished items are not checked against %s",
                    m->name, out);
        p->out_checked = 1;
        return;
    }
    pf_err e = {{0}};
    int64_t nd = 0, nf = 0;
    if (pf_prod_tx(p))
        return;
    if (pf_jobstore_requeue_beyond(p->js, m->out_end, &nd, &nf, &e)) {
        pf_error(LOG, "%s", e.msg);   /* out_checked stays 0: the job cannot complete unchecked */
        return;
    }
    if (!p->out_checked) {
        int64_t unplaced = 0;
        if (pf_jobstore_count_unplaced(p->js, &unplaced, &e))
            pf_error(LOG, "%s", e.msg);
        else if (unplaced)
            pf_warn(LOG, "%lld finished items have no output offset (finished by an older paliflow): they are "
                    "not checked against %s", (long long)unplaced, out);
    }
    p->out_checked = 1;
    if (nd + nf == 0) {
        pf_info(LOG, "output %s (%lld bytes) holds the records of the %lld finished items", out,
                (long long)m->out_end, (long long)(p->done + p->failed));
        return;
    }
    pf_warn(LOG, "output %s holds %lld bytes: %lld done and %lld failed items have no record in it (the file was "
            "deleted, cut or replaced): redoing them", out, (long long)m->out_end, (long long)nd, (long long)nf);
    p->done -= nd;
    p->failed -= nf;
    p->at_start_done = p->at_start_done > nd ? p->at_start_done - nd : 0;
    /* they may sit before the refill cursor; and an id finished earlier in this run must not be skipped as
     * stale when it comes round again (a stale entry that slips through is only redone, and deduplicated) */
    p->cursor = 0;
    p->db_exhausted = 0;
    pf_keyset_free(&p->finished);
    pf_keyset_init(&p->finished);
}
