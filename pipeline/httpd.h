/* httpd.h - the metrics endpoint every role serves with --metrics HOST:PORT (libmicrohttpd, its own thread).
 *
 *   GET /metrics   Prometheus text format 0.0.4 (base/metrics.h: the role's series and process_*)
 *   GET /healthz   200 "ok" while every main loop of the process ticks (liveness), else 503
 *   GET /readyz    200 "ok" when every role is ready (worker: welcomed by the producer; producer and sink:
 *                  bound and serving), else 503 with the reason
 * Anything else is 404; methods other than GET/HEAD are 405. No authentication: bind it to a private
 * interface (or localhost) and let the firewall keep it in (README, "Run on several machines").
 */
#ifndef PF_PIPELINE_HTTPD_H
#define PF_PIPELINE_HTTPD_H

#include "base/err.h"

typedef struct pf_httpd pf_httpd;

/* ADDR: "HOST:PORT", ":PORT" or "*:PORT" (all IPv4 interfaces), "[::]:PORT" / "[v6addr]:PORT". */
int pf_httpd_start(const char *addr, pf_httpd **out, pf_err *err);
void pf_httpd_stop(pf_httpd *h);

#endif
