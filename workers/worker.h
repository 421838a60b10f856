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
    int single_frames;             /* tests: talk as a worker of an older build, which neither asks for nor sends
                                      data frames (PROTOCOL.md, "Data frames") */
} pf_worker_params;

/* Every field at its default (the numbers --help shows): one thread, batch 8, 20 ms, heartbeat 1 s / 10 s,
 * drain 30 s, the protocol's default limits; endpoints, stage and controls unset. */
pf_worker_params pf_worker_default_params(void);

/* Run until stopped (0), the job is complete with exit_when_done (0), or a fatal error (-1). */
int pf_worker_run(const pf_worker_params *o, pf_err *err);



/* The option rows every worker command shares (base/optable.h), for a command struct T whose
 * pf_worker_params is at path S (`o`). --threads, --max-batch and --max-delay-ms mean
 * different things per role: the commands add their own rows for them. */
int pf_worker_name_opt_hook(const pf_opt *opt, void *field, const char *val, pf_err *err);
#define PF_WORKER_OPT_ROWS(T, S)                                                                                   \
    PF_OPT_ROW_STR("producer", T, S.producer, PF_OPT_NONEMPTY | PF_OPT_REQUIRED, "ENDPOINT",                      \
                   "the producer's endpoint, e.g. tcp://host:5555"),                                               \
    PF_OPT_ROW_STR("sink", T, S.sink, PF_OPT_NONEMPTY | PF_OPT_REQUIRED, "ENDPOINT",                              \
                   "the sink's endpoint, e.g. tcp://host:5556"),                                                   \
    {"name", 0, PF_OPT_STR, offsetof(T, S.name), .fn = pf_worker_name_opt_hook, .arg = "NAME",                     \
     .def = "host-role-pid-random", .help = "worker id in logs and records (1 to 100 characters)"},               \
    {"credit", 0, PF_OPT_INT, offsetof(T, S.capacity), 1, 1 << 16, .arg = "N",                                     \
     .def = "2 per --threads for preprocess, --max-batch + 2 for inference", .help = "items held at most"},       \
    PF_OPT_ROW_DOUBLE("heartbeat", T, S.hb_interval, 0.01, 3600, 0, "S", "heartbeat interval in seconds"),        \
    PF_OPT_ROW_DOUBLE("heartbeat-timeout", T, S.hb_timeout, 0.05, 1e6, PF_OPT_RELOAD, "S",                        \
                      "producer silent this long (seconds) is reported"),                                          \
    PF_OPT_ROW_DOUBLE("drain-timeout", T, S.drain_timeout, 0, 1e6, PF_OPT_RELOAD, "S",                            \
                      "on SIGTERM/SIGINT: wait this long for items in progress, then hand them back"),            \
    PF_OPT_ROW_FLAG("exit-when-done", T, S.exit_when_done, 0, "exit 0 once the producer reports the job complete"), \
    PF_PROTO_LIMITS_OPT_ROW(T, S.lim)

#endif
