/* progress.h - job progress on stderr: a redrawn bar on a terminal, plain log lines otherwise. */
#ifndef PF_PIPELINE_PROGRESS_H
#define PF_PIPELINE_PROGRESS_H

#include <stdint.h>

typedef struct pf_progress {
    int mode;            /* 0 off, 1 lines, 2 bar */
    double interval;     /* seconds between lines (bar: redraw every 0.2 s) */
    double t0, last;
    const char *component;
    int drawn;
} pf_progress;

/* mode -1: bar if stderr is a terminal, else lines. */
void pf_progress_init(pf_progress *p, int mode, double interval, const char *component);
void pf_progress_update(pf_progress *p, int64_t total, int64_t done, int64_t failed, int64_t done_this_run,
                        int n_pre, int n_inf, int sink, int scanning);
void pf_progress_finish(pf_progress *p, int64_t total, int64_t done, int64_t failed);

#endif
