/* test_tmp.h - the temporary folder of a unit-test program (cmocka): define PF_TEST_TMP_NAME, then include
 * this after <cmocka.h> as "tests/support/test_tmp.h". setup_tmp/teardown_tmp make and remove
 * /tmp/<name>_XXXXXX (as a group's setup and teardown), tmp_path names a file in it, touch/mk create a file
 * (holding its own relative path) or a folder in it. Seven programs kept their own copies of these before. */
#ifndef PF_TESTS_SUPPORT_TEST_TMP_H
#define PF_TESTS_SUPPORT_TEST_TMP_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#ifndef PF_TEST_TMP_NAME
#error "define PF_TEST_TMP_NAME (the folder's name prefix) before including test_tmp.h"
#endif

/* /tmp/<name>_XXXXXX: kept short, so that "%s/<file>" fits the callers' 256-byte paths (no truncation warning) */
static char g_tmp[128];

static inline int setup_tmp(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/%s_XXXXXX", PF_TEST_TMP_NAME);
    return mkdtemp(g_tmp) ? 0 : -1;
}

static inline int teardown_tmp(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

/* REL inside the folder, in one of four rotating buffers (a call may use a few at once, as in a rename). */
static inline char *tmp_path(const char *rel)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", g_tmp, rel);
    return buf[i];
}

static inline void touch(const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_tmp, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(rel, f);
    fclose(f);
}

static inline void mk(const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_tmp, rel);
    assert_int_equal(mkdir(p, 0755), 0);
}

#endif
