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
 * already read. An output edited inside (lines removed, its size still past the records) is caught at the end
 * of the job by a count (pf_prod_output_verified). Not caught: a removed record offset by foreign lines
 * (records of items not in this job) in the same file. */
#include <string.h>

#include "base/log.h"
#include "pipeline/producer_internal.h"

/* ND done and NF failed items went back to the queue: the counts follow, and the refill starts over. */
static void sent_back(prod *p, int64_t nd, int64_t nf)
{
    p->done -= nd;
    p->failed -= nf;
    p->at_start_done = p->at_start_done > nd ? p->at_start_done - nd : 0;
    /* they may sit before the refill cursor (whether an entry is stale is asked of the job store when it is
     * handed out, so an item finished earlier in this run is not skipped when it comes round again) */
    p->cursor = 0;
    p->db_exhausted = 0;
}

void pf_prod_on_sink_output(prod *p, const pf_msg *m)
{
    const char *out = m->path ? m->path : "(its output)";
    if (m->out_records >= 0) {
        p->sink_records = m->out_records;
        p->has_sink_records = 1;
    }
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
    int said = p->out_checked && p->out_said_end == m->out_end;
    p->out_checked = 1;
    if (nd + nf == 0) {
        /* A sink that waited for us queued a hello a second: each is checked, the same answer said once. */
        if (!said)
            pf_info(LOG, "output %s: %lld bytes; no record of the %lld finished items ends beyond them", out,
                    (long long)m->out_end, (long long)(p->done + p->failed));
        p->out_said_end = m->out_end;
        return;
    }
    pf_warn(LOG, "output %s holds %lld bytes: %lld done and %lld failed items have no record in it (the file was "
            "deleted, cut or replaced): redoing them", out, (long long)m->out_end, (long long)nd, (long long)nf);
    sent_back(p, nd, nf);
}

/* At the end of the job the offsets have done their part; the count closes the gap they leave: the sink's
 * latest ack says how many distinct records its output holds, and fewer than the items finished with an
 * offset means lines were removed from inside the file (its size still past those records). Every finished
 * item is then redone, once per run; the sink writes only the ones it does not hold. */
int pf_prod_output_verified(prod *p)
{
    if (!p->out_checked)
        return 0;
    if (!p->has_sink_records)
        return 1;
    pf_err e = {{0}};
    int64_t placed = 0;
    if (pf_jobstore_count_placed(p->js, &placed, &e)) {
        pf_error(LOG, "%s", e.msg);
        return 1;
    }
    if (p->sink_records >= placed)
        return 1;
    if (p->redid_all) {
        pf_error(LOG, "the output still holds %lld records for %lld finished items after redoing them all: is "
                 "something else editing it?", (long long)p->sink_records, (long long)placed);
        return 1;
    }
    int64_t nd = 0, nf = 0;
    pf_warn(LOG, "the output holds %lld records for %lld finished items: records were removed from inside it; "
            "redoing every finished item (the sink writes only the missing ones again)", (long long)p->sink_records,
            (long long)placed);
    if (pf_prod_tx(p) || pf_jobstore_requeue_beyond(p->js, -1, &nd, &nf, &e)) {
        pf_error(LOG, "%s", e.msg);
        return 1;
    }
    p->redid_all = 1;
    sent_back(p, nd, nf);
    return 0;
}
