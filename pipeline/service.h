/* service.h - what every long-running role command (producer, sink, preprocess-worker, inference-worker,
 * run) shares on a fleet: the CURVE options (proto/security.h), --metrics HOST:PORT (pipeline/httpd.h) and
 * SIGHUP, which asks the role to re-read its --config file between two iterations of its loop.
 *
 * What a reload applies (the rest needs a restart, and a reload says so when it changed): --log-level and
 * the --curve-allow list everywhere; producer: --max-attempts, --preprocess-lease, --inference-lease,
 * --ack-timeout, --heartbeat-timeout, --max-ready, --progress-interval; sink: --batch, --flush-ms,
 * --heartbeat-timeout; workers: --drain-timeout, --heartbeat-timeout. A config file that fails to parse
 * changes nothing (the error is logged).
 */
#ifndef PF_PIPELINE_SERVICE_H
#define PF_PIPELINE_SERVICE_H

#include <getopt.h>
#include <signal.h>

#include "base/err.h"
#include "pipeline/httpd.h"
#include "proto/security.h"

typedef struct pf_service {
    pf_security sec;
    const char *metrics;              /* --metrics HOST:PORT */
    pf_httpd *httpd;
    volatile sig_atomic_t reload;     /* set by SIGHUP */
    char *allow_owned;                /* --curve-allow as changed by a reload (outlives the reloaded argv) */
} pf_service;

#define PF_SERVICE_LONG_OPTIONS                                                                                    \
    {"curve-server-key", required_argument, 0, 0}, {"curve-client-key", required_argument, 0, 0},                 \
        {"curve-allow", required_argument, 0, 0}, {"curve-server-public", required_argument, 0, 0},               \
        {"curve-sink-public", required_argument, 0, 0}, {"insecure", no_argument, 0, 0},                          \
        {"metrics", required_argument, 0, 0}

#define PF_METRICS_HELP                                                                                            \
    "  --metrics HOST:PORT      serve Prometheus /metrics, /healthz and /readyz there (e.g. 0.0.0.0:9100)\n"

/* Options of the service (name without dashes). 1 taken, 0 not ours, -1 bad value. */
int pf_service_option(const char *name, const char *val, pf_service *s, pf_err *err);

/* Load the keys, start the metrics server, install the SIGHUP handler. */
int pf_service_start(pf_service *s, pf_err *err);
void pf_service_stop(pf_service *s);

/* After a reload parsed the config again into FRESH: keep the new --curve-allow path (the role re-reads
 * the list right after). */
void pf_service_reloaded(pf_service *live, const pf_service *fresh);

/* Log one reloaded value ("reload: max-attempts 3 -> 5") when it changed. */
void pf_service_log_change(const char *name, double before, double after);

/* Take a reloaded numeric option: log it if it changed, then LIVE = FRESH. */
#define PF_RELOAD(name, live, fresh) (pf_service_log_change((name), (double)(live), (double)(fresh)), (live) = (fresh))

#endif
