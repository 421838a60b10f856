/* progress_stderr.c - while the bar is up, what other code writes straight to stderr goes above the bar.
 *
 * Our own log lines reach the bar through pf_log's writer (progress.c), but a library that calls
 * fprintf(stderr) itself bypasses it: Debian's libjxl prints a JXL_FAILURE trace of five lines for every
 * corrupt JPEG XL file, which landed in the middle of the bar. So for the bar's lifetime fd 2 becomes a pipe;
 * a thread reads it line by line and hands each line to the same writer (erase the bar, the line, the bar
 * again), and the bar itself is drawn on the terminal kept aside (pf_progress_stderr_fd).
 *
 * A fatal signal restores fd 2 and copies what is still in the pipe to the terminal first (dup2, read and
 * write are async-signal-safe), so an abort()'s message is not lost with the pipe. */
#define _GNU_SOURCE   /* pipe2 */
#include "pipeline/progress.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int g_tty = -1;   /* the original fd 2 (the terminal) while the capture is on */
static int g_rd = -1;    /* the pipe's read end */
static volatile sig_atomic_t g_stop;
static pthread_t g_th;
static void (*g_line)(const char *line);
static const int g_fatal[] = {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL};
static struct sigaction g_old[sizeof g_fatal / sizeof g_fatal[0]];

int pf_progress_stderr_fd(void) { return g_tty >= 0 ? g_tty : 2; }

/* Hand LINE (LEN bytes, no newline) to the writer with a newline; longer lines go in pieces. */
static void emit(const char *line, size_t len)
{
    char buf[1024];
    while (len > 0) {
        size_t k = len < sizeof buf - 2 ? len : sizeof buf - 2;
        memcpy(buf, line, k);
        buf[k] = '\n';
        buf[k + 1] = '\0';
        g_line(buf);
        line += k;
        len -= k;
    }
}

/* The reader: whole lines as they come; a partial line waits for its end, or for the capture to stop. It stops
 * when the pipe ends, or, once asked to stop, when nothing came for 100 ms (a child process may still hold
 * the write end: its later output is then not shown, rather than the stop hanging). */
static void *reader(void *arg)
{
    (void)arg;
    char buf[4096];
    size_t n = 0;
    for (;;) {
        struct pollfd pfd = {g_rd, POLLIN, 0};
        int pr = poll(&pfd, 1, 100);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr == 0) {
            if (g_stop)
                break;
            continue;
        }
        ssize_t r = read(g_rd, buf + n, sizeof buf - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
        size_t start = 0;
        for (size_t i = 0; i < n; i++) {
            if (buf[i] == '\n') {
                emit(buf + start, i - start);
                start = i + 1;
            }
        }
        if (start == 0 && n == sizeof buf) {   /* a line longer than the buffer: out in pieces */
            emit(buf, n);
            start = n;
        }
        memmove(buf, buf + start, n - start);
        n -= start;
    }
    if (n)
        emit(buf, n);
    return NULL;
}

static void on_fatal(int sig)
{
    if (g_tty >= 0) {
        dup2(g_tty, 2);
        int fl = fcntl(g_rd, F_GETFL);
        fcntl(g_rd, F_SETFL, fl | O_NONBLOCK);
        char buf[4096];
        ssize_t r;
        while ((r = read(g_rd, buf, sizeof buf)) > 0)
            if (write(2, buf, (size_t)r) < 0)
                break;
    }
    raise(sig);   /* SA_RESETHAND: the default action now */
}

int pf_progress_stderr_begin(void (*line)(const char *line))
{
    if (g_tty >= 0)
        return 0;
    int fds[2];
    fflush(stderr);
    int tty = fcntl(2, F_DUPFD_CLOEXEC, 3);
    if (tty < 0)
        return -1;
    if (pipe2(fds, O_CLOEXEC)) {
        close(tty);
        return -1;
    }
    if (dup2(fds[1], 2) < 0) {
        close(fds[0]);
        close(fds[1]);
        close(tty);
        return -1;
    }
    close(fds[1]);
    g_tty = tty;
    g_rd = fds[0];
    g_line = line;
    g_stop = 0;
    if (pthread_create(&g_th, NULL, reader, NULL)) {
        dup2(tty, 2);
        close(g_rd);
        close(tty);
        g_tty = g_rd = -1;
        return -1;
    }
    for (size_t i = 0; i < sizeof g_fatal / sizeof g_fatal[0]; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_fatal;
        sa.sa_flags = (int)SA_RESETHAND;
        sigemptyset(&sa.sa_mask);
        sigaction(g_fatal[i], &sa, &g_old[i]);
    }
    return 0;
}

void pf_progress_stderr_end(void)
{
    if (g_tty < 0)
        return;
    fflush(stderr);
    for (size_t i = 0; i < sizeof g_fatal / sizeof g_fatal[0]; i++)
        sigaction(g_fatal[i], &g_old[i], NULL);
    dup2(g_tty, 2);   /* the pipe's last write end closes: the reader reads what is left, then ends */
    g_stop = 1;
    pthread_join(g_th, NULL);
    close(g_rd);
    close(g_tty);
    g_tty = g_rd = -1;
}
