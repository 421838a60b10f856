#include "pipeline/progress.h"

#include <stdio.h>
#include <unistd.h>

#include "base/file.h"
#include "base/log.h"

void pf_progress_init(pf_progress *p, int mode, double interval, const char *component)
{
    p->mode = mode < 0 ? (isatty(2) ? 2 : 1) : mode;
    p->interval = interval > 0 ? interval : 10;
    p->t0 = p->last = pf_now();
    p->component = component;
    p->drawn = 0;
}

void pf_progress_update(pf_progress *p, int64_t total, int64_t done, int64_t failed, int64_t done_this_run,
                        int n_pre, int n_inf, int sink, int scanning)
{
    if (!p->mode)
        return;
    double now = pf_now();
    if (now - p->last < (p->mode == 2 ? 0.2 : p->interval))
        return;
    p->last = now;
    double rate = now > p->t0 ? done_this_run / (now - p->t0) : 0;
    int64_t finished = done + failed;
    if (p->mode == 2) {
        int width = 30, fill = total > 0 ? (int)(width * finished / total) : 0;
        char bar[64];
        for (int i = 0; i < width; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[width] = '\0';
        fprintf(stderr, "\r[%s] %lld/%lld%s done, %lld failed, %.2f items/s, workers %d+%d, sink %s   ", bar,
                (long long)finished, (long long)total, scanning ? "+" : "", (long long)failed, rate, n_pre, n_inf,
                sink ? "up" : "DOWN");
        fflush(stderr);
        p->drawn = 1;
    } else {
        pf_info(p->component, "progress: %lld/%lld%s finished (%lld failed), %.2f items/s, workers %d preprocess + "
                "%d inference, sink %s", (long long)finished, (long long)total, scanning ? " (scanning)" : "",
                (long long)failed, rate, n_pre, n_inf, sink ? "up" : "down");
    }
}

void pf_progress_finish(pf_progress *p, int64_t total, int64_t done, int64_t failed)
{
    if (p->mode == 2 && p->drawn)
        fprintf(stderr, "\r[##############################] %lld/%lld done, %lld failed%20s\n",
                (long long)(done + failed), (long long)total, (long long)failed, "");
}
