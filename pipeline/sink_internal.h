/* sink_internal.h - the sink's state, shared by pipeline/sink*.c only (the API is sink.h).
 *
 * One thread: sink.c runs the sockets (results and error records from workers on the ROUTER, the producer's
 * heartbeats and its own error records on the DEALER); sink_output.c turns each record into a line of the
 * output file, deduplicated, written and fdatasync'ed in batches, then published and acknowledged.
 */
#ifndef PF_PIPELINE_SINK_INTERNAL_H
#define PF_PIPELINE_SINK_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "base/metrics.h"
#include "pipeline/sink_index.h"
#include "pipeline/sink.h"
#include "proto/link.h"
#include "proto/wire.h"

#define LOG "sink"

/* A record waiting in the batch for its write + fdatasync. */
typedef struct pend {
    size_t len;            /* its line (JSON + '\n') in the batch's lines; 0 for a duplicate */
    json_t *rec;           /* the record as JSON, only for the PUB socket and the views (else NULL) */
    int64_t id;
    char *key;
    int ok;
    int is_dup;            /* already on disk: acknowledge only */
    int64_t end;           /* where its line ends in the output once written */
} pend;

typedef struct pf_sink_auth pf_sink_auth;

/* A growing byte buffer (not NUL-terminated): jansson dumps each record of the batch straight into it. */
typedef struct pf_sink_lines {
    char *p;
    size_t n, cap;
} pf_sink_lines;

typedef struct sink {
    const pf_sink_params *o;
    int fd;                /* the output, locked (outfile.h) */
    int64_t out_end;       /* its committed size: every byte before is whole, synced lines */
    pf_sink_index *index;  /* the identity of every record in the output, on disk (sink_index.h) */
    pf_views *views;       /* the other output forms, following the JSONL (out_view.h) */
    double index_commit_t; /* when the index was last committed */
    int failed;            /* the index failed on a record: the sink stops with FAIL */
    pf_err fail;
    void *rsock, *psock, *pub;
    pend *batch;
    size_t n_batch, cap_batch;
    pf_sink_lines lines;   /* the batch's lines, one after another: written with one write */
    double batch_t0;
    char name[128];
    pf_link link; /* to the producer: its instance, welcome, heartbeats, silence */
    pf_sink_auth *auth; /* which records may be written: the producer's leases (sink_auth.c) */
    int finished;
    int compacted;         /* compaction ran since the producer reported the job complete */
    int64_t written, dups, in_file, tokens;
    pf_zap *zap;
    pf_sock_watch *watch;
    pf_rate rate_records, rate_tokens;
    struct {
        pf_metric *records[2], *dups, *in_file, *batches, *fsync_s, *tokens, *rps, *tps, *connected;
        pf_metric *timing[PF_TIMINGS_N], *errors[3];
    } m;
} sink;

/* sink_output.c */
/* Open the record index beside the output s->fd and catch it up with the output's tail past its checkpoint
 * (cutting off a torn last line left by a crash); sets out_end, which the sink's hello reports to the
 * producer (reconciliation, sink.h). */
int pf_sink_load_existing(sink *s, pf_err *err);
/* Take a result or error record: dedupe it and add it to the batch. */
void pf_sink_on_record(sink *s, const pf_msg *m);
/* Write, sync, publish, acknowledge the batch. */
int pf_sink_flush_batch(sink *s, pf_err *err);
void pf_sink_batch_free(sink *s);
/* The batch's records and its buffers, at the end of a run. */
void pf_sink_batch_close(sink *s);

/* sink_auth.c: a worker's record is written only when its item is leased to that worker (PROTOCOL.md,
 * "Who may say what"). */
int pf_sink_auth_init(sink *s);
void pf_sink_auth_free(sink *s);
/* A result or error record from a worker (IN on the ROUTER): written, parked until its lease note, or refused. */
void pf_sink_auth_worker_record(sink *s, pf_wire_in *in, double now);
/* The producer's own error record: written (its lease, if any, ends). */
void pf_sink_auth_producer_record(sink *s, const pf_msg *m);
/* A lease or unlease note from the producer, or a `notes` message of several (applied in order). */
void pf_sink_auth_on_note(sink *s, const pf_msg *m, double now);
/* The producer welcomed us (NEW_INSTANCE: another run than before); the leases known so far are forgotten:
 * the producer sends the notes of all its leases after every welcome. */
void pf_sink_auth_welcomed(sink *s, const pf_msg *welcome, int new_instance);
/* Refuse records parked too long; refresh the gauges. */
void pf_sink_auth_tick(sink *s, double now);
int64_t pf_sink_auth_refused(const sink *s);
int64_t pf_sink_auth_waited(const sink *s);   /* records that waited for their lease note */

/* sink.c */
void pf_sink_send_prod(sink *s, pf_msg *m);
/* Handle what waits on the connection to the producer now (a worker's record is about to wait for a lease note
 * that may have arrived meanwhile): 1 if anything was read. */
int pf_sink_read_producer(sink *s, double now);

#endif
