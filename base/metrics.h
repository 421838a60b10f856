/* metrics.h - a process-wide registry of Prometheus metrics (counters, gauges, histograms) and the
 * process's health (liveness ticks, readiness), rendered in the Prometheus text exposition format 0.0.4.
 *
 * Roles register their metrics by name once (find-or-create, so calling again is cheap and returns the
 * same series) and update them from any thread. One mutex guards everything: updates happen per message
 * or per item, never per token, so contention is nil. The HTTP side lives in pipeline/httpd.h; this file
 * has no network code so every library can count.
 *
 * Series identity is NAME + LABELS, where LABELS is the text between the braces, e.g. `role="inference"`
 * (the caller writes it; values come from code, not from peers, so the label set stays bounded).
 */
#ifndef PF_BASE_METRICS_H
#define PF_BASE_METRICS_H

#include <stddef.h>

typedef struct pf_metric pf_metric;

/* Find or create a series. HELP is used the first time NAME is seen. NULL only when out of memory; every
 * update function accepts NULL and does nothing. A name registered as one kind stays that kind (asking
 * for it as another kind returns NULL). */
pf_metric *pf_counter(const char *name, const char *labels, const char *help);
pf_metric *pf_gauge(const char *name, const char *labels, const char *help);
/* BOUNDS: N increasing upper bounds (the +Inf bucket is implicit). */
pf_metric *pf_histogram(const char *name, const char *labels, const char *help, const double *bounds, size_t n);

void pf_metric_add(pf_metric *m, double v);       /* counter (v >= 0) or gauge */
void pf_metric_set(pf_metric *m, double v);       /* gauge */
void pf_metric_observe(pf_metric *m, double v);   /* histogram */
double pf_metric_value(pf_metric *m);             /* counter/gauge value; histogram: number of observations */

/* Common bucket sets. */
extern const double pf_buckets_seconds[];         /* 1 ms .. 10 min */
extern const size_t pf_buckets_seconds_n;
extern const double pf_buckets_batch[];           /* 1, 2, 4, ... 256 */
extern const size_t pf_buckets_batch_n;

/* Every series plus process metrics (resident memory, CPU seconds, start time, open fds) in the text
 * format. Returns a malloc'd NUL-terminated string (*len without the NUL), NULL when out of memory. */
char *pf_metrics_render(size_t *len);

/* Resident set size of this process in bytes (from /proc/self/statm), 0 if unknown. */
double pf_process_rss_bytes(void);

/* Health. Each long-running loop (producer, sink, worker) names itself once and ticks every iteration;
 * the process is live while every registered loop ticked within its own budget, and ready when every
 * registered component said it is ready (a worker: welcomed by the producer; the producer: bound and
 * serving; the sink: output open and bound). */
void pf_health_register(const char *component, double max_silence_s);
void pf_health_unregister(const char *component);
void pf_health_tick(const char *component);
void pf_health_ready(const char *component, int ready);
/* 1 live / ready, 0 not; WHY (may be NULL) gets a one-line reason. No component registered: live and
 * ready. */
int pf_health_live(char *why, size_t cap);
int pf_health_is_ready(char *why, size_t cap);

/* Events per second over a sliding window (images/s, tokens/s): feed the running total now and then. */
typedef struct pf_rate {
    double t[16], v[16];
    int head, n;
    double window_s;
} pf_rate;
void pf_rate_init(pf_rate *r, double window_s);
/* Record TOTAL at time NOW (monotonic seconds); returns the rate over the last window_s seconds. */
double pf_rate_update(pf_rate *r, double now, double total);

#endif
