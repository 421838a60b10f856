/* worker.h - the generic worker: connect to the producer and the sink, pull items with credit,
 * heartbeat, run a stage, send results, hand items back on shutdown.
 *
 * Protocol (proto/PROTOCOL.md): hello -> welcome(instance) -> credit(n) -> item ... -> tensor|done|nack
 * (each returns one credit). The worker never holds more than `capacity` items. If the producer restarts
 * (new instance in a heartbeat, or a reset), the worker says hello again and re-announces its free slots.
 */
#ifndef PF_WORKERS_WORKER_H
#define PF_WORKERS_WORKER_H


#include "base/control.h"
#include "base/err.h"
#include "proto/proto.h"
#include "proto/security.h"
#include "workers/stage.h"

typedef struct pf_worker_params {
    const char *producer;          /* endpoint to connect to */
    const char *sink;              /* endpoint to connect to */
    const char *name;              /* NULL: host-role-pid-random */
    int threads;                   /* compute threads for per-item stages (>= 1) */
    int capacity;                  /* items held at most (credit); 0 = default (2 x threads, or max_batch + 2) */
    int max_batch;                 /* batched stages: active items at most */
    int max_delay_ms;              /* batched stages: wait this long for more items before the first step */
    double hb_interval, hb_timeout;/* seconds */
    double drain_timeout;          /* on stop: wait this long for items in progress, then hand them back */
    int exit_when_done;            /* exit 0 once the producer says the job is complete */
    pf_proto_limits lim;
    const pf_stage_ops *ops;
    const void *stage_cfg;
    void *const *instances;        /* optional ready-made stage instances (not destroyed by the runtime) */
    int n_instances;
    void *zctx;                    /* optional ZeroMQ context (embedded mode: inproc endpoints) */
    const pf_security *sec;        /* CURVE keys / --insecure (NULL: plain sockets, library use) */
    pf_control ctl;                /* stop (drain) and reload (may change drain_timeout, hb_timeout) */
} pf_worker_params;

/* Every field at its default (the numbers --help shows): one thread, batch 8, 20 ms, heartbeat 1 s / 10 s,
 * drain 30 s, the protocol's default limits; endpoints, stage and controls unset. */
pf_worker_params pf_worker_default_params(void);

/* Run until stopped (0), the job is complete with exit_when_done (0), or a fatal error (-1). */
int pf_worker_run(const pf_worker_params *o, pf_err *err);



/* Options every worker command shares (name without dashes): producer, sink, name, threads, credit,
 * heartbeat, heartbeat-timeout, drain-timeout, exit-when-done, max-message-mb, max-batch, max-delay-ms.
 * Returns 1 if NAME is one of them, 0 if not, -1 on a bad value. */
int pf_worker_option(const char *name, const char *val, pf_worker_params *o, pf_err *err);
#define PF_WORKER_OPTIONS_HELP                                                                                     \
    "  --producer ENDPOINT      the producer's endpoint, e.g. tcp://host:5555 (required)\n"                       \
    "  --sink ENDPOINT          the sink's endpoint, e.g. tcp://host:5556 (required)\n"                           \
    "  --name NAME              worker id in logs and records (default host-role-pid-random)\n"                   \
    "  --credit N               items held at most (default: 2 per thread, or max batch + 2)\n"                    \
    "  --heartbeat S            heartbeat interval in seconds (1)\n"                                               \
    "  --heartbeat-timeout S    producer silent this long is reported (10)\n"                                      \
    "  --drain-timeout S        on SIGTERM/SIGINT: wait this long for items in progress, then hand them back (30)\n" \
    "  --exit-when-done         exit 0 once the producer reports the job complete\n"                              \
    "  --max-message-mb N       ZMQ_MAXMSGSIZE and decoder limit (64)\n"                                           \
    "  --config FILE            options from FILE ('name = value' lines; the command line wins)\n"                \
    "  --log-level LEVEL        error | warn | info | debug\n"                                                     \
    "  --help                   this text\n"
#endif
