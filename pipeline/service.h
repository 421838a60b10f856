/* service.h - what every long-running role command (producer, sink, preprocess-worker, inference-worker,
 * run) shares on a fleet: the CURVE options (proto/security.h), --metrics HOST:PORT (pipeline/httpd.h) and
 * SIGHUP, which asks the role to re-read its --config file between two iterations of its loop.
 *
 * What a reload applies: --log-level and the --curve-allow list everywhere, and the rows each command's
 * option table marks PF_OPT_RELOAD (base/optable.h; --help says "reloads"). Any other option that changed
 * needs a restart, and the reload names it. A config file that fails to parse changes nothing (the error
 * is logged).
 */
#ifndef PF_PIPELINE_SERVICE_H
#define PF_PIPELINE_SERVICE_H

#include <signal.h>

#include "base/err.h"
#include "base/optable.h"
#include "pipeline/httpd.h"
#include "proto/security.h"

typedef struct pf_service {
    pf_security sec;
    const char *metrics;              /* --metrics HOST:PORT */
    pf_httpd *httpd;
    volatile sig_atomic_t reload;     /* set by SIGHUP */
    char *allow_owned;                /* --curve-allow as changed by a reload (outlives the reloaded argv) */
} pf_service;

/* The service's option rows (base/optable.h) for a command struct T whose pf_service is at path S (`svc`).
 * SERVER and CLIENT are 0 or PF_OPT_HIDDEN: every role accepts every key option (one
 * config file may serve several roles) but its --help shows the ones it uses. The key options come first (under
 * the command's "security" heading), --metrics last, under its own heading. */
#define PF_SERVICE_OPT_ROWS(T, S, SERVER, CLIENT)                                                                  \
    PF_OPT_ROW_STR("curve-server-key", T, S.sec.server_key_file, PF_OPT_NONEMPTY | (SERVER), "FILE",              \
                   "this server's CURVE certificate with the secret key (paliflow keygen)"),                       \
    PF_OPT_ROW_STR("curve-allow", T, S.sec.allow_path, PF_OPT_NONEMPTY | PF_OPT_RESTART_QUIET | (SERVER),        \
                   "FILE|DIR", "client public keys allowed to connect (certificates, or one key per line); "      \
                   "re-read on SIGHUP"),                                                                           \
    PF_OPT_ROW_STR("curve-client-key", T, S.sec.client_key_file, PF_OPT_NONEMPTY | (CLIENT), "FILE",              \
                   "this client's CURVE certificate with the secret key (paliflow keygen)"),                       \
    PF_OPT_ROW_STR("curve-server-public", T, S.sec.server_public_arg, PF_OPT_NONEMPTY | (CLIENT), "K",            \
                   "the producer's public key (a certificate file or the Z85 key); the sink's too, unless "        \
                   "--curve-sink-public"),                                                                         \
    PF_OPT_ROW_STR("curve-sink-public", T, S.sec.sink_public_arg, PF_OPT_NONEMPTY | (CLIENT), "K",                \
                   "the sink's public key, when it has its own key pair"),                                         \
    PF_OPT_ROW_FLAG("insecure", T, S.sec.insecure, 0, "allow plain tcp without CURVE (trusted networks only)"),   \
    PF_OPT_ROW_HEADING("monitoring (no authentication: keep it on a private network):"),                          \
    PF_OPT_ROW_STR("metrics", T, S.metrics, PF_OPT_NONEMPTY, "HOST:PORT",                                         \
                   "serve Prometheus /metrics, /healthz and /readyz there (e.g. 0.0.0.0:9100)")

/* Load the keys, start the metrics server, install the SIGHUP handler. */
int pf_service_start(pf_service *s, pf_err *err);
void pf_service_stop(pf_service *s);

/* After a reload parsed the config again into FRESH: keep the new --curve-allow path (the role re-reads
 * the list right after). */
void pf_service_reloaded(pf_service *live, const pf_service *fresh);


#endif
