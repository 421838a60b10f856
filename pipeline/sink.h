/* sink.h - the end of the pipeline: one JSON line per item in the output file, deduplicated by item
 * (key + path), published on a PUB socket, and acknowledged to the producer once on disk.
 *
 * Durability: records are written in batches (--batch records or --flush-ms, whichever first), the file
 * is fdatasync'ed, and only then are the batch's records published and acknowledged. So an acknowledged
 * item is on disk; a record written but not yet synced when the sink dies may be lost, but it was never
 * acknowledged, so the producer redoes the item. The dedupe set is an index on disk beside the output,
 * caught up at start from the output's tail past its checkpoint (cutting off a torn last line): redelivered
 * items never give a second line, and neither the sink's memory nor its start time grows with the output
 * (sink_index.h). Other output forms (WebDataset, sidecars, rotated JSONL) follow the JSONL (out_view.h).
 * While a batch is open and results come in a few at a time, the sink reads them every 2 ms or so rather than
 * at each arrival (never past --flush-ms): one wake-up for several records (sink.c, gather).
 *
 * The output is checked and locked before anything else (outfile.h: a regular file, writable, with room,
 * one writer). Each ack carries where the record ends in the file and each hello the file's committed size,
 * so the producer can redo finished items whose records the file no longer holds (producer_reconcile.c).
 */
#ifndef PF_PIPELINE_SINK_H
#define PF_PIPELINE_SINK_H

#include "base/control.h"
#include "base/err.h"
#include "pipeline/out_view.h"
#include "proto/proto.h"
#include "proto/security.h"

typedef struct pf_sink_params {
    const char *bind;       /* ROUTER: results and error records from workers */
    const char *publish;    /* PUB: every record as a msgpack map (optional) */
    const char *producer;   /* DEALER: hello/heartbeats/acks to the producer, its error records back */
    const char *out;        /* JSON-lines file */
    int out_fd;             /* OUT already opened and locked by the caller (pf_outfile_open), or -1 (the default):
                             * opened and locked at start. `run` takes its locks before its roles start */
    const char *name;
    int batch;              /* records per fsync batch */
    double flush_s;         /* longest a record waits for its batch */
    int fsync;              /* fdatasync before acknowledging (default 1) */
    double hb_interval, hb_timeout;
    int exit_when_done;     /* exit once the producer reports the job complete and all is flushed */
    int compact_at_end;     /* drop superseded error records when the producer reports the job complete */
    pf_view_params views;   /* WebDataset / sidecar / rotated JSONL beside the JSONL (out_view.h) */
    pf_proto_limits lim;
    void *zctx;
    const pf_security *sec;  /* CURVE keys / --insecure (NULL: plain sockets, library use) */
    pf_control ctl;          /* stop and reload (may change batch, flush_s, hb_timeout; the allow-list is re-read) */
} pf_sink_params;

/* Every field at its default (the numbers `sink --help` shows); endpoints, output and controls unset. */
pf_sink_params pf_sink_default_params(void);
int pf_sink_run(const pf_sink_params *o, pf_err *err);

#endif
