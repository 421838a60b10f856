/* progress.h - job progress on stderr: a redrawn bar on a terminal, plain log lines otherwise.
 *
 * The rate is the one of the last ~10 s (a window of samples), not the average since the start: a job
 * whose model took a minute to load, or that resumed, shows what it does now, and the ETA follows it.
 * The bar is one line cut to the terminal's width (TIOCGWINSZ, else $COLUMNS, else 80) so it never
 * wraps; while it is up, log lines go through it (pf_log_set_writer): erase the bar, the line, the bar. */
#ifndef PF_PIPELINE_PROGRESS_H
#define PF_PIPELINE_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

#define PF_PROGRESS_WINDOW 21   /* samples, PF_PROGRESS_STEP s apart: a 10 s window */
#define PF_PROGRESS_STEP 0.5

typedef struct pf_progress {
    int mode;            /* 0 off, 1 lines, 2 bar */
    double interval;     /* seconds between lines (bar: redraw every 0.2 s) */
    double t0, last;
    const char *component;
    int drawn;
    /* the rate window: (time, items finished) samples, oldest first from `head` */
    double win_t[PF_PROGRESS_WINDOW];
    int64_t win_n[PF_PROGRESS_WINDOW];
    int win_len, win_head;
    int64_t start_n;     /* finished at the first sample: until it moves, the window restarts */
    int started;
} pf_progress;

/* What one bar or line shows. */
typedef struct pf_progress_view {
    int64_t total, finished, failed;
    double rate;         /* items/s over the window; < 0 while unknown */
    int scanning;        /* total still growing */
    int stopped;         /* the job ended before every item finished (Ctrl-C) */
    double elapsed;      /* the last bar: seconds the run took (> 0), shown instead of an ETA */
    int n_pre, n_inf, sink;   /* workers that get work (the quarantined ones are not counted here) */
    int n_quarantined;        /* connected workers the producer gives no work (their faults are their own) */
} pf_progress_view;

/* mode -1: bar if stderr is a terminal, else lines. */
void pf_progress_init(pf_progress *p, int mode, double interval, const char *component);
void pf_progress_update(pf_progress *p, int64_t total, int64_t done, int64_t failed, int64_t done_this_run,
                        int n_pre, int n_inf, int n_quarantined, int sink, int scanning);
/* The last line: the true counts (an interrupted job shows how far it got, not a full bar). Once: later
 * calls do nothing, so an error path may call it too. */
void pf_progress_finish(pf_progress *p, int64_t total, int64_t done, int64_t failed);

/* ---- the parts, for tests ---- */
/* Record that FINISHED items (done + failed, since any start) were finished at time NOW. */
void pf_progress_sample(pf_progress *p, double now, int64_t finished);
/* Items/s over the window, or -1 before two samples a second apart. */
double pf_progress_rate(const pf_progress *p);
/* The bar for a terminal COLS wide, at most COLS - 1 characters (no wrap, even on terminals that wrap
 * on the last column), NUL-terminated in BUF; returns its length. */
size_t pf_progress_render_bar(char *buf, size_t cap, int cols, const pf_progress_view *v);
/* The plain line (--progress lines). */
size_t pf_progress_render_line(char *buf, size_t cap, const pf_progress_view *v);
/* "12s", "3m05s", "2h10m", "4d03h"; "--" for an unknown (< 0 or absurd) time. */
void pf_progress_eta(char *buf, size_t cap, double seconds);
/* The terminal's width for stderr: TIOCGWINSZ, else $COLUMNS, else 80. */
int pf_progress_columns(void);

/* progress_stderr.c: while the bar is up, fd 2 is a pipe whose lines LINE() writes above the bar (a library's
 * own stderr output, e.g. libjxl's traces); 0 on, -1 not (errno). pf_progress_stderr_fd: where the bar is drawn
 * (the terminal kept aside, or fd 2). Both are called by pf_progress_init / pf_progress_finish. */
int pf_progress_stderr_begin(void (*line)(const char *line));
void pf_progress_stderr_end(void);
int pf_progress_stderr_fd(void);

#endif
