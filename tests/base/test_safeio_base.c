/* Tests of base/ for hostile files and floods: reads that refuse FIFOs without blocking, base64 for raw path
 * bytes, rate-limited logging and lines that always end with a newline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/base64.h"
#include "base/file.h"
#include "base/log.h"

#define PF_TEST_TMP_NAME "pf_test_safeio"
#include "tests/support/test_tmp.h"

/* A FIFO without a writer: open() without O_NONBLOCK would wait forever. Refused by name and type, at once
 * (a hang here is the test's failure: ctest's timeout). */
static void test_fifo_refused(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "%s/fifo", g_tmp);
    assert_int_equal(mkfifo(path, 0600), 0);
    char *buf;
    size_t len;
    pf_err err;
    pf_file_fault fault;
    assert_int_equal(pf_read_file_safe(path, 100, &buf, &len, &fault, &err), -1);
    assert_int_equal(fault, PF_FILE_NOT_REGULAR);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "is a FIFO"));
    pf_map map;
    assert_int_equal(pf_map_file(path, &map, &err), -1);
    assert_non_null(strstr(err.msg, "is a FIFO"));
    assert_int_equal(pf_read_file_safe(g_tmp, 100, &buf, &len, &fault, &err), -1);
    assert_int_equal(fault, PF_FILE_NOT_REGULAR);
    assert_non_null(strstr(err.msg, "is a directory"));
    assert_int_equal(pf_read_file_safe("/dev/null", 100, &buf, &len, &fault, &err), -1);
    assert_non_null(strstr(err.msg, "is a character device"));
    char missing[256];
    snprintf(missing, sizeof missing, "%s/missing", g_tmp);
    assert_int_equal(pf_read_file_safe(missing, 100, &buf, &len, &fault, &err), -1);
    assert_int_equal(fault, PF_FILE_IO);
    /* a symlink to the FIFO is the FIFO */
    char link[256];
    snprintf(link, sizeof link, "%s/link", g_tmp);
    assert_int_equal(symlink(path, link), 0);
    assert_int_equal(pf_read_file_safe(link, 100, &buf, &len, &fault, &err), -1);
    assert_int_equal(fault, PF_FILE_NOT_REGULAR);
}

static void test_read_limits(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "%s/f", g_tmp);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("0123456789", f);
    fclose(f);
    char *buf;
    size_t len;
    pf_err err;
    pf_file_fault fault;
    assert_int_equal(pf_read_file_safe(path, 10, &buf, &len, &fault, &err), 0);
    assert_int_equal(len, 10);
    assert_int_equal(buf[10], '\0');
    free(buf);
    assert_int_equal(pf_read_file_safe(path, 9, &buf, &len, &fault, &err), -1);
    assert_int_equal(fault, PF_FILE_TOO_BIG);
    assert_null(buf);
}

static void test_base64(void **state)
{
    (void)state;
    static const struct {
        const char *raw, *b64;
    } v[] = {{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="}, {"\xff.jpg", "/y5qcGc="}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char *e = pf_b64_encode(v[i].raw, strlen(v[i].raw));
        assert_string_equal(e, v[i].b64);
        free(e);
        uint8_t *d;
        size_t n;
        assert_int_equal(pf_b64_decode(v[i].b64, &d, &n), 0);
        assert_int_equal(n, strlen(v[i].raw));
        assert_memory_equal(d, v[i].raw, n);
        free(d);
    }
    static const char *const bad[] = {"Zg", "Zg=", "Zh==", "Zm9=", "Z===", "====", "Zm9v!A==", "Zg==Zg==", "Zm 9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t *d;
        size_t n;
        assert_int_equal(pf_b64_decode(bad[i], &d, &n), -1);
        assert_null(d);
    }
}

/* Send stderr to a file for the duration of a log test; returns the saved fd. */
static int capture_stderr(const char *path)
{
    fflush(stderr);
    int saved = dup(2);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    dup2(fileno(f), 2);
    fclose(f);
    return saved;
}

static void restore_stderr(int saved)
{
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* 100,000 garbage frames from one peer: at most the burst plus one line a second get through, each summary
 * counts what was dropped, and nothing is lost from the count; another peer still gets its lines. */
static void test_log_flood(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "%s/log", g_tmp);
    int saved = capture_stderr(path);
    const int N = 100000;
    double t0 = now_s();
    static pf_log_limit lim;
    for (int i = 0; i < N; i++)
        pf_log_limited(&lim, "tcp://10.0.0.1:5000", PF_LOG_WARN, "test", "bad message %d from flooder", i);
    double took = now_s() - t0;
    int other = pf_log_limited(&lim, "tcp://10.0.0.2:6000", PF_LOG_WARN, "test", "bad message from the other");
    sleep(2); /* refills the flooder's bucket: its next line carries the summary */
    pf_log_limited(&lim, "tcp://10.0.0.1:5000", PF_LOG_WARN, "test", "bad message last from flooder");
    restore_stderr(saved);
    assert_int_equal(other, 1);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[4096];
    long long lines = 0, flooder = 0, suppressed = 0;
    while (fgets(line, sizeof line, f)) {
        lines++;
        assert_true(line[strlen(line) - 1] == '\n');
        if (strstr(line, "flooder"))
            flooder++;
        const char *s = strstr(line, " similar messages suppressed");
        if (s) {
            while (s > line && s[-1] >= '0' && s[-1] <= '9')
                s--;
            suppressed += atoll(s);
        }
    }
    fclose(f);
    /* lines that got through + the ones counted as suppressed = every message of the flooder */
    assert_int_equal(flooder + suppressed, N + 1);
    assert_true(flooder <= PF_LOG_LIMIT_BURST + (long long)(took * PF_LOG_LIMIT_PER_S) + 2);
    assert_int_equal(lines, flooder + 1);
}

/* A message longer than a log line: cut, marked, and the line still ends with its newline. */
static void test_log_long_line(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "%s/log2", g_tmp);
    size_t n = 5000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'x', n);
    big[n] = '\0';
    int saved = capture_stderr(path);
    pf_warn("test", "%s", big);
    pf_warn("test", "after");
    static pf_log_limit lim;
    for (int k = 2040; k < 2060; k++) { /* around the old 2047-byte edge, with a summary suffix too */
        big[k] = '\0';
        pf_log_limited(&lim, NULL, PF_LOG_WARN, "test", "%s", big);
        big[k] = 'x';
    }
    restore_stderr(saved);
    free(big);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[8192];
    int k = 0;
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        assert_true(len <= PF_LOG_LINE_MAX);
        assert_true(line[len - 1] == '\n');
        if (k == 0)
            assert_non_null(strstr(line, PF_LOG_CUT_MARK "\n"));
        if (k == 1)
            assert_non_null(strstr(line, "test: after\n"));
        k++;
    }
    fclose(f);
    assert_true(k >= 2 + PF_LOG_LIMIT_BURST);
}

/* A message with control bytes (a file named with a newline and an escape): one line, the bytes as '?'. */
static void test_log_control_bytes(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "%s/log3", g_tmp);
    int saved = capture_stderr(path);
    const char *name = "in/a\n2026-12-07T00:00:00.000Z paliflow[1] WARN security: x\r\x1b[2J\tb.jpg";
    pf_warn("producer", "%s: not an image", name);
    pf_warn("test", "after");
    restore_stderr(saved);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[8192];
    assert_non_null(fgets(line, sizeof line, f));
    assert_non_null(strstr(line, " WARN producer: in/a?2026-12-07T00:00:00.000Z paliflow[1] WARN security: "
                                 "x??[2J\tb.jpg: not an image\n"));
    assert_non_null(fgets(line, sizeof line, f));
    assert_non_null(strstr(line, "test: after\n"));
    assert_null(fgets(line, sizeof line, f));
    fclose(f);
}

int main(void)
{
    pf_log_set_level(PF_LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_refused), cmocka_unit_test(test_read_limits), cmocka_unit_test(test_base64),
        cmocka_unit_test(test_log_flood),    cmocka_unit_test(test_log_long_line),
        cmocka_unit_test(test_log_control_bytes),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
