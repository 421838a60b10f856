/* progress.c - the job's progress: a window rate, an ETA, a bar that fits the terminal, plain lines. */
#include "pipeline/progress.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "base/file.h"
#include "base/log.h"

/* ---- the rate window ---- */

void pf_progress_sample(pf_progress *p, double now, int64_t finished)
{
    if (!p->started) {
        p->started = 1;
        p->start_n = finished;
    }
    /* Until the first item of this run finishes (model loading, a resumed job's first batch) the window
     * holds only the latest sample: idle start-up time would drag the rate down for the next 10 s. */
    if (finished == p->start_n)
        p->win_len = 0;
    if (p->win_len > 0) {
        int newest = (p->win_head + p->win_len - 1) % PF_PROGRESS_WINDOW;
        if (now - p->win_t[newest] < PF_PROGRESS_STEP)
            return;
    }
    if (p->win_len == PF_PROGRESS_WINDOW) {   /* drop the oldest */
        p->win_head = (p->win_head + 1) % PF_PROGRESS_WINDOW;
        p->win_len--;
    }
    if (p->win_len == 0)
        p->win_head = 0;
    int at = (p->win_head + p->win_len) % PF_PROGRESS_WINDOW;
    p->win_t[at] = now;
    p->win_n[at] = finished;
    p->win_len++;
}

double pf_progress_rate(const pf_progress *p)
{
    if (p->win_len < 2)
        return -1;
    int oldest = p->win_head, newest = (p->win_head + p->win_len - 1) % PF_PROGRESS_WINDOW;
    double dt = p->win_t[newest] - p->win_t[oldest];
    if (dt < 1.0)   /* less than a second of history: too noisy to show */
        return -1;
    return (double)(p->win_n[newest] - p->win_n[oldest]) / dt;
}

/* ---- text ---- */

void pf_progress_eta(char *buf, size_t cap, double s)
{
    if (!(s >= 0) || s > 99 * 86400.0) {
        snprintf(buf, cap, "--");
        return;
    }
    long long t = (long long)(s + 0.5);
    if (t < 60)
        snprintf(buf, cap, "%llds", t);
    else if (t < 3600)
        snprintf(buf, cap, "%lldm%02llds", t / 60, t % 60);
    else if (t < 86400)
        snprintf(buf, cap, "%lldh%02lldm", t / 3600, t % 3600 / 60);
    else
        snprintf(buf, cap, "%lldd%02lldh", t / 86400, t % 86400 / 3600);
}

static void fmt_rate(char *buf, size_t cap, double r)
{
    if (r < 0)
        snprintf(buf, cap, "--");
    else
        snprintf(buf, cap, r < 10 ? "%.2f" : r < 100 ? "%.1f" : "%.0f", r);
}

/* "ETA 3m05s", "ETA >3m05s" while the scan still adds items; at the end "in 2m10s" or "stopped after 40s". */
static void fmt_when(char *buf, size_t cap, const pf_progress_view *v)
{
    int64_t left = v->total - v->finished;
    char eta[32];
    if (v->stopped || (left <= 0 && !v->scanning)) {
        pf_progress_eta(eta, sizeof eta, v->elapsed);
        if (v->elapsed > 0)
            snprintf(buf, cap, v->stopped ? "stopped after %s" : "in %s", eta);
        else
            snprintf(buf, cap, v->stopped ? "stopped" : "done");
        return;
    }
    pf_progress_eta(eta, sizeof eta, v->rate > 0 ? (double)left / v->rate : -1);
    snprintf(buf, cap, "ETA %s%s", v->scanning && v->rate > 0 ? ">" : "", eta);
}

size_t pf_progress_render_line(char *buf, size_t cap, const pf_progress_view *v)
{
    char rate[32], when[48], quar[48] = "";
    fmt_rate(rate, sizeof rate, v->rate);
    fmt_when(when, sizeof when, v);
    /* A quarantined worker is connected but idle: counted with the others it would hide a job that no worker
     * can take ("1 inference" while the only one has the wrong model). */
    if (v->n_quarantined)
        snprintf(quar, sizeof quar, " (+ %d quarantined: no work)", v->n_quarantined);
    int n = snprintf(buf, cap, "progress: %lld/%lld%s finished (%lld failed), %s items/s over the last 10 s, %s, "
                     "workers %d preprocess + %d inference%s, sink %s", (long long)v->finished, (long long)v->total,
                     v->scanning ? " (scanning)" : "", (long long)v->failed, rate, when, v->n_pre, v->n_inf, quar,
                     v->sink ? "up" : "down");
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

size_t pf_progress_render_bar(char *buf, size_t cap, int cols, const pf_progress_view *v)
{
    if (!cap)
        return 0;
    buf[0] = '\0';
    int room = cols - 1;   /* never the last column: some terminals wrap as soon as it is written */
    if (room < 1)
        return 0;
    char count[64], rate[32], when[48], text[5][320];   /* room for the longest parts: no truncation */
    snprintf(count, sizeof count, "%lld/%lld%s", (long long)v->finished, (long long)v->total,
             v->scanning ? "+" : "");
    fmt_rate(rate, sizeof rate, v->rate);
    fmt_when(when, sizeof when, v);
    /* what needs the user: a sink down, workers given no work (idle, connected: a job no worker can take
     * would otherwise look merely slow) */
    char sink[48];
    snprintf(sink, sizeof sink, "%s", v->sink ? "" : ", sink DOWN");
    if (v->n_quarantined)
        snprintf(sink, sizeof sink, ", %d quarantined%s", v->n_quarantined, v->sink ? "" : ", sink DOWN");
    char workers[48] = "";
    if (v->n_pre || v->n_inf)
        snprintf(workers, sizeof workers, ", workers %d+%d", v->n_pre, v->n_inf);
    /* from the most to the least detail: the first one that fits beside a bar of 10 or more */
    snprintf(text[0], sizeof text[0], "%s done, %lld failed, %s items/s, %s%s%s", count,
             (long long)v->failed, rate, when, workers, sink);
    snprintf(text[1], sizeof text[1], "%s, %lld failed, %s/s, %s%s", count, (long long)v->failed, rate, when, sink);
    snprintf(text[2], sizeof text[2], "%s %s/s %s", count, rate, when);
    snprintf(text[3], sizeof text[3], "%s %s", count, when);
    snprintf(text[4], sizeof text[4], "%s", count);
    const int min_bar = 10, max_bar = 40;
    for (int i = 0; i < 5; i++) {
        int len = (int)strlen(text[i]);
        int bar = room - len - 3;   /* "[" bar "] " */
        if (bar < min_bar)
            continue;
        if (bar > max_bar)
            bar = max_bar;
        int fill = v->total > 0 ? (int)((double)bar * (double)v->finished / (double)v->total) : 0;
        fill = fill < 0 ? 0 : fill > bar ? bar : fill;
        if ((size_t)(bar + len + 4) > cap)
            break;
        size_t k = 0;
        buf[k++] = '[';
        for (int j = 0; j < bar; j++)
            buf[k++] = j < fill ? '#' : '.';
        buf[k++] = ']';
        buf[k++] = ' ';
        memcpy(buf + k, text[i], (size_t)len + 1);
        return k + (size_t)len;
    }
    /* too narrow for any bar: the shortest text that fits, cut if it must be */
    for (int i = 0; i < 5; i++) {
        size_t len = strlen(text[i]);
        if ((int)len <= room || i == 4) {
            if ((int)len > room)
                len = (size_t)room;
            if (len >= cap)
                len = cap - 1;
            memcpy(buf, text[i], len);
            buf[len] = '\0';
            return len;
        }
    }
    return 0;
}

int pf_progress_columns(void)
{
    struct winsize ws;
    if (ioctl(pf_progress_stderr_fd(), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)   /* the terminal, also under the bar */
        return ws.ws_col;
    const char *c = getenv("COLUMNS");
    long n = c ? strtol(c, NULL, 10) : 0;
    return n > 0 && n < 10000 ? (int)n : 80;
}

/* ---- the bar on stderr, shared with the log (one bar per process) ---- */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_bar[1024];
static int g_bar_up;

/* pf_log's writer while a bar is up: erase it, the log line, the bar again; one write (to the terminal:
 * pf_progress_stderr_fd, as fd 2 is a pipe while the bar is up), under the lock
 * the bar is drawn with, so neither ever lands in the middle of the other. */
static void bar_writer(const char *line)
{
    char out[4096];
    pthread_mutex_lock(&g_mu);
    int n;
    if (g_bar_up)
        n = snprintf(out, sizeof out, "\r\x1b[K%s%s", line, g_bar);
    else
        n = snprintf(out, sizeof out, "%s", line);
    (void)pf_write_all(pf_progress_stderr_fd(), out, n < 0 ? 0 : (size_t)n < sizeof out ? (size_t)n : sizeof out - 1);
    pthread_mutex_unlock(&g_mu);
}

static void draw(const char *text, int last)
{
    pthread_mutex_lock(&g_mu);
    snprintf(g_bar, sizeof g_bar, "%s", text);
    char out[1100];
    int n = snprintf(out, sizeof out, "\r%s\x1b[K%s", g_bar, last ? "\n" : "");
    (void)pf_write_all(pf_progress_stderr_fd(), out, n < 0 ? 0 : (size_t)n < sizeof out ? (size_t)n : sizeof out - 1);
    g_bar_up = !last;
    pthread_mutex_unlock(&g_mu);
}

void pf_progress_init(pf_progress *p, int mode, double interval, const char *component)
{
    memset(p, 0, sizeof *p);
    p->mode = mode < 0 ? (isatty(2) ? 2 : 1) : mode;
    p->interval = interval > 0 ? interval : 10;
    p->t0 = p->last = pf_now();
    p->component = component;
    if (p->mode == 2) {
        pf_log_set_writer(bar_writer);
        if (pf_progress_stderr_begin(bar_writer))   /* other code's stderr above the bar; else it may cut in */
            pf_debug(p->component, "stderr stays as it is under the bar: %s", strerror(errno));
    }
}

static pf_progress_view view_of(const pf_progress *p, int64_t total, int64_t done, int64_t failed, int n_pre,
                                int n_inf, int n_quarantined, int sink, int scanning)
{
    pf_progress_view v = {total, done + failed, failed, pf_progress_rate(p), scanning, 0, 0, n_pre, n_inf, sink,
                          n_quarantined};
    return v;
}

void pf_progress_update(pf_progress *p, int64_t total, int64_t done, int64_t failed, int64_t done_this_run,
                        int n_pre, int n_inf, int n_quarantined, int sink, int scanning)
{
    (void)done_this_run;   /* the window counts finished items (errors too: they took work) */
    if (!p->mode)
        return;
    double now = pf_now();
    pf_progress_sample(p, now, done + failed);
    if (now - p->last < (p->mode == 2 ? 0.2 : p->interval))
        return;
    p->last = now;
    pf_progress_view v = view_of(p, total, done, failed, n_pre, n_inf, n_quarantined, sink, scanning);
    char text[1024];
    if (p->mode == 2) {
        pf_progress_render_bar(text, sizeof text, pf_progress_columns(), &v);
        draw(text, 0);
        p->drawn = 1;
    } else {
        pf_progress_render_line(text, sizeof text, &v);
        pf_log_always(PF_LOG_INFO, p->component, "%s", text);
    }
}

void pf_progress_finish(pf_progress *p, int64_t total, int64_t done, int64_t failed)
{
    if (p->mode != 2) {
        p->mode = 0;
        return;
    }
    pf_progress_stderr_end();   /* what is still in the pipe goes above the last bar */
    if (p->drawn) {
        pf_progress_view v = view_of(p, total, done, failed, 0, 0, 0, 1, 0);
        v.stopped = done + failed < total;
        /* the whole run's average here: the job is over, "recent" no longer means anything */
        double secs = pf_now() - p->t0;
        v.elapsed = secs;
        v.rate = secs > 0 && p->started ? (double)(done + failed - p->start_n) / secs : -1;
        char text[1024];
        pf_progress_render_bar(text, sizeof text, pf_progress_columns(), &v);
        draw(text, 1);
    }
    pf_log_set_writer(NULL);
    p->mode = 0;   /* finished: a second call (the producer's error path) does nothing */
}
