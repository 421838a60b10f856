/* scan: hidden files and folders (".DS_Store", "._x.jpg", ".git/") are skipped and counted by default,
 * taken with include_hidden, and a hidden file named explicitly is always taken. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "pipeline/scan.h"

#define PF_TEST_TMP_NAME "pf_hidden"
#include "tests/support/test_tmp.h"


/* Scan ROOT; the paths found (below g_tmp) joined with ' ' into OUT; returns the hidden count. */
static size_t scan(const char *root, int include_hidden, char *out, size_t cap)
{
    char r[512];
    snprintf(r, sizeof r, "%s/%s", g_tmp, root);
    const char *roots[] = {r};
    pf_scan_params o;
    memset(&o, 0, sizeof o);
    o.roots = roots;
    o.n_roots = 1;
    o.include_hidden = include_hidden;
    pf_scan *s;
    pf_err e = {{0}};
    assert_int_equal(pf_scan_open(&o, &s, &e), 0);
    out[0] = '\0';
    const char *p;
    int rc;
    while ((rc = pf_scan_next(s, &p, &e)) == 1) {
        size_t n = strlen(out);
        snprintf(out + n, cap - n, "%s%s", n ? " " : "", p + strlen(g_tmp) + 1);
    }
    assert_int_equal(rc, 0);
    size_t hidden = pf_scan_hidden_skipped(s);
    pf_scan_close(s);
    return hidden;
}

static void test_hidden(void **state)
{
    (void)state;
    assert_int_equal(setup_tmp(NULL), 0);
    mk("in");
    touch("in/a.jpg");
    touch("in/.DS_Store");
    touch("in/._a.jpg");   /* macOS AppleDouble companion */
    mk("in/.git");
    touch("in/.git/x.jpg");
    mk("in/sub");
    touch("in/sub/b.png");
    touch("in/sub/.hidden.png");
    mk("in/.thumbs");
    touch("in/.thumbs/c.jpg");
    char got[2048];
    size_t hidden = scan("in", 0, got, sizeof got);
    assert_string_equal(got, "in/a.jpg in/sub/b.png");
    assert_int_equal(hidden, 5);   /* .DS_Store ._a.jpg .git .thumbs sub/.hidden.png: a folder counts once */
    hidden = scan("in", 1, got, sizeof got);
    assert_string_equal(got, "in/.DS_Store in/._a.jpg in/.git/x.jpg in/.thumbs/c.jpg in/a.jpg in/sub/.hidden.png "
                             "in/sub/b.png");
    assert_int_equal(hidden, 0);
    /* named explicitly: taken (the user asked for it) */
    hidden = scan("in/.DS_Store", 0, got, sizeof got);
    assert_string_equal(got, "in/.DS_Store");
    assert_int_equal(hidden, 0);
    /* a hidden root folder named explicitly is walked; hidden entries inside it are still skipped */
    touch("in/.thumbs/.x.jpg");
    hidden = scan("in/.thumbs", 0, got, sizeof got);
    assert_string_equal(got, "in/.thumbs/c.jpg");
    assert_int_equal(hidden, 1);
    assert_int_equal(teardown_tmp(NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_hidden)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
