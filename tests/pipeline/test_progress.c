/* progress: window rate, ETA, the bar's width in 80 and 40 columns, the interrupted count, quarantined workers
 * not counted as working, and on a real pseudo-terminal that log lines erase the bar and redraw it instead of
 * printing over it. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/log.h"
#include "pipeline/progress.h"

static pf_progress_view view(int64_t total, int64_t finished, int64_t failed, double rate)
{
    pf_progress_view v = {total, finished, failed, rate, 0, 0, 0, 4, 1, 1, 0};
    return v;
}

/* The rate is the window's, not the average since the start: 10 s idle (model loading), then 100 s at
 * 2 items/s, then 20 items/s: the rate says 20 within the window, the since-start average would not. */
static void test_window_rate(void **state)
{
    (void)state;
    pf_progress p;
    memset(&p, 0, sizeof p);
    assert_true(pf_progress_rate(&p) < 0);
    double t = 0;
    for (; t < 10; t += 0.05)   /* nothing finishes while the model loads */
        pf_progress_sample(&p, t, 0);
    assert_true(pf_progress_rate(&p) < 0);   /* unknown, not 0/s */
    int64_t n = 0;
    for (; t < 110; t += 0.05) {
        n = (int64_t)((t - 10) * 2);
        pf_progress_sample(&p, t, n);
    }
    assert_true(pf_progress_rate(&p) > 1.9 && pf_progress_rate(&p) < 2.1);   /* idle start not counted */
    double t_fast = t;
    int64_t n_fast = n;
    for (; t < t_fast + 15; t += 0.05)
        pf_progress_sample(&p, t, n_fast + (int64_t)((t - t_fast) * 20));
    double r = pf_progress_rate(&p);
    assert_true(r > 19 && r < 21);
    double since_start = (double)(n_fast + 300) / t;
    assert_true(since_start < 5);   /* what the old bar showed */
    /* a stall: the window drains to 0/s, the ETA becomes unknown */
    int64_t stuck = n_fast + (int64_t)((t - t_fast) * 20);
    for (double t1 = t; t < t1 + 12; t += 0.05)
        pf_progress_sample(&p, t, stuck);
    assert_true(pf_progress_rate(&p) == 0);
}

static void test_eta(void **state)
{
    (void)state;
    char b[32];
    pf_progress_eta(b, sizeof b, 0);
    assert_string_equal(b, "0s");
    pf_progress_eta(b, sizeof b, 59.4);
    assert_string_equal(b, "59s");
    pf_progress_eta(b, sizeof b, 185);
    assert_string_equal(b, "3m05s");
    pf_progress_eta(b, sizeof b, 2 * 3600 + 10 * 60);
    assert_string_equal(b, "2h10m");
    pf_progress_eta(b, sizeof b, 4 * 86400 + 3 * 3600);
    assert_string_equal(b, "4d03h");
    pf_progress_eta(b, sizeof b, -1);
    assert_string_equal(b, "--");
    /* in the bar and the line: 4000 left at 20/s = 3m20s */
    pf_progress_view v = view(5000, 1000, 12, 20);
    char bar[512];
    pf_progress_render_bar(bar, sizeof bar, 80, &v);
    assert_non_null(strstr(bar, "ETA 3m20s"));
    assert_non_null(strstr(bar, "20.0 items/s"));
    pf_progress_render_line(bar, sizeof bar, &v);
    assert_non_null(strstr(bar, "ETA 3m20s"));
    assert_non_null(strstr(bar, "1000/5000 finished (12 failed), 20.0 items/s over the last 10 s"));
    v.scanning = 1;   /* the total still grows: the ETA is a lower bound */
    pf_progress_render_bar(bar, sizeof bar, 80, &v);
    assert_non_null(strstr(bar, "1000/5000+"));
    assert_non_null(strstr(bar, "ETA >3m20s"));
    v = view(5000, 1000, 12, -1);   /* no rate yet */
    pf_progress_render_bar(bar, sizeof bar, 80, &v);
    assert_non_null(strstr(bar, "ETA --"));
}

/* Never the last column, in every width, with every count size. */
static void test_bar_width(void **state)
{
    (void)state;
    char bar[512];
    int64_t totals[] = {5, 5000, 123456789012LL};
    for (int cols = 1; cols <= 200; cols++) {
        for (size_t i = 0; i < 3; i++) {
            pf_progress_view v = view(totals[i], totals[i] / 3, totals[i] / 7, 123.4);
            v.sink = (int)(i & 1);
            size_t n = pf_progress_render_bar(bar, sizeof bar, cols, &v);
            assert_int_equal(n, strlen(bar));
            assert_true((int)n <= cols - 1 || (cols == 1 && n == 0));
        }
    }
    pf_progress_view v = view(5000, 2500, 12, 19.83);
    size_t n = pf_progress_render_bar(bar, sizeof bar, 80, &v);
    printf("80 columns: |%s|\n", bar);
    assert_true(n <= 79 && n > 60);
    assert_non_null(strstr(bar, "2500/5000 done, 12 failed, 19.8 items/s, ETA 2m06s, workers 4+1"));
    assert_int_equal(bar[0], '[');
    /* half done: half the bar */
    const char *close = strchr(bar, ']');
    assert_non_null(close);
    int width = (int)(close - bar - 1), fill = 0;
    for (int i = 1; i <= width; i++)
        fill += bar[i] == '#';
    assert_int_equal(fill, width / 2);
    n = pf_progress_render_bar(bar, sizeof bar, 40, &v);
    printf("40 columns: |%s|\n", bar);
    assert_true(n <= 39);
    assert_int_equal(bar[0], '[');
    assert_non_null(strstr(bar, "2500/5000"));
    assert_non_null(strstr(bar, "ETA 2m06s"));
    n = pf_progress_render_bar(bar, sizeof bar, 20, &v);
    printf("20 columns: |%s|\n", bar);
    assert_true(n <= 19);
    assert_non_null(strstr(bar, "2500/5000"));
}

/* A quarantined worker (another model, cannot see the files) is connected but idle: the line and the bar
 * must not count it as a worker that takes work, or a job no worker can take looks merely slow. */
static void test_quarantined(void **state)
{
    (void)state;
    pf_progress_view v = view(12, 4, 4, -1);
    v.n_pre = 1;
    v.n_inf = 0;
    v.n_quarantined = 1;
    char text[512];
    pf_progress_render_line(text, sizeof text, &v);
    assert_non_null(strstr(text, "workers 1 preprocess + 0 inference (+ 1 quarantined: no work), sink up"));
    size_t n = pf_progress_render_bar(text, sizeof text, 80, &v);
    printf("80 columns, quarantined: |%s|\n", text);
    assert_true(n <= 79);
    assert_non_null(strstr(text, ", 1 quarantined"));
    v.n_quarantined = 0;   /* none: the line as before */
    pf_progress_render_line(text, sizeof text, &v);
    assert_non_null(strstr(text, "workers 1 preprocess + 0 inference, sink up"));
    assert_null(strstr(text, "quarantined"));
}

/* An interrupted job's last bar: its true count and "stopped", not a full bar. */
static void test_interrupted(void **state)
{
    (void)state;
    pf_progress_view v = view(5000, 1234, 2, 20);
    v.stopped = 1;
    char bar[512];
    pf_progress_render_bar(bar, sizeof bar, 80, &v);
    assert_non_null(strstr(bar, "1234/5000"));
    assert_non_null(strstr(bar, "stopped"));
    assert_null(strstr(bar, "ETA"));
    const char *close = strchr(bar, ']');
    int width = (int)(close - bar - 1), fill = 0;
    for (int i = 1; i <= width; i++)
        fill += bar[i] == '#';
    assert_int_equal(fill, (int)(width * 1234 / 5000));
    assert_true(fill < width / 2);
    v.stopped = 0;
    v.finished = 5000;
    pf_progress_render_bar(bar, sizeof bar, 80, &v);
    assert_non_null(strstr(bar, "done"));
    assert_true(strchr(bar, '.') > strchr(bar, ']'));   /* a full bar: no '.' before its end */
}

/* On a pseudo-terminal 40 columns wide: auto mode picks the bar, every drawn bar fits, a log line (ours, or
 * one another library writes to stderr itself) erases the bar first and the bar comes back after it; the last line after a stop shows the true count. */
static void test_pty(void **state)
{
    (void)state;
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    assert_true(master >= 0);
    assert_int_equal(grantpt(master), 0);
    assert_int_equal(unlockpt(master), 0);
    int slave = open(ptsname(master), O_RDWR | O_NOCTTY);
    assert_true(slave >= 0);
    struct winsize ws = {24, 40, 0, 0};
    assert_int_equal(ioctl(slave, TIOCSWINSZ, &ws), 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(slave, 2);
    pf_progress p;
    pf_progress_init(&p, -1, 10, "test");
    int mode = p.mode;
    for (int i = 0; i < 4; i++) {
        p.last = 0;   /* draw now */
        pf_progress_update(&p, 5000, 100 * i, 1, 100 * i, 4, 1, 0, 1, 0);
        if (i == 1)
            pf_warn("test", "a log line in the middle");
        if (i == 2) {   /* a library writing to stderr itself (libjxl's JXL_FAILURE trace): above the bar too */
            const char foreign[] = "lib/jxl/x.cc:1: JXL_FAILURE: foreign line\n";
            assert_int_equal(write(2, foreign, sizeof foreign - 1), (ssize_t)(sizeof foreign - 1));
            usleep(300000);   /* the reader hands it over while the bar is up (finish would flush it anyway) */
        }
    }
    pf_progress_finish(&p, 5000, 300, 1);
    pf_progress_finish(&p, 5000, 300, 1);   /* the producer's error path may call it again: nothing drawn */
    pf_warn("test", "after the bar");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(slave);
    assert_int_equal(mode, 2);
    char out[16384];
    size_t n = 0;
    int fl = fcntl(master, F_GETFL);
    fcntl(master, F_SETFL, fl | O_NONBLOCK);
    for (ssize_t r; n + 1 < sizeof out && (r = read(master, out + n, sizeof out - 1 - n)) > 0;)
        n += (size_t)r;
    out[n] = '\0';
    close(master);
    /* the last bar: stopped at 301 of 5000 */
    assert_non_null(strstr(out, "301/5000"));
    const char *stop = strstr(out, "stopped");
    assert_non_null(stop);
    assert_null(strstr(stop + 1, "stopped"));   /* one last bar */
    /* the tty turns "\n" into "\r\n"; split on both and drop the escape sequences to get what is drawn */
    char *save = NULL;
    int bars = 0, logs = 0, foreign = 0;
    for (char *seg = strtok_r(out, "\r\n", &save); seg; seg = strtok_r(NULL, "\r\n", &save)) {
        char clean[4096];
        size_t k = 0;
        for (const char *s = seg; *s && k + 1 < sizeof clean; s++) {
            if (s[0] == '\x1b' && s[1] == '[' && s[2] == 'K') {
                s += 2;
                continue;
            }
            clean[k++] = *s;
        }
        clean[k] = '\0';
        if (!k)
            continue;
        if (clean[0] == '[') {
            bars++;
            assert_true(strlen(clean) <= 39);
        } else if (strstr(clean, "JXL_FAILURE")) {
            foreign++;
            assert_string_equal(clean, "lib/jxl/x.cc:1: JXL_FAILURE: foreign line");   /* whole, at column 0 */
        } else {
            logs++;
            assert_non_null(strstr(clean, "WARN test: "));
            assert_int_equal(clean[0], '2');   /* the log line starts at column 0: never glued to a bar */
        }
    }
    assert_int_equal(logs, 2);
    assert_int_equal(foreign, 1);
    assert_true(bars >= 5);   /* 4 draws, the redraw after the log line, the last one */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_rate), cmocka_unit_test(test_eta),  cmocka_unit_test(test_bar_width),
        cmocka_unit_test(test_interrupted), cmocka_unit_test(test_quarantined), cmocka_unit_test(test_pty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
