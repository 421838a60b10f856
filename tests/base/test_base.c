/* Tests of base/: error messages, file reading limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "base/file.h"
#include "base/grow.h"
#include "base/ring.h"

static void test_errf_and_prefix(void **state)
{
    (void)state;
    pf_err err;
    assert_int_equal(pf_errf(&err, "field %s: bad value %d", "x", 3), -1);
    assert_string_equal(err.msg, "field x: bad value 3");
    assert_int_equal(pf_err_prefix(&err, "config.json"), -1);
    assert_string_equal(err.msg, "config.json: field x: bad value 3");
    assert_int_equal(pf_errf(NULL, "ignored"), -1);
}

static void test_read_file_limits(void **state)
{
    (void)state;
    pf_err err;
    char path[] = "/tmp/pf_test_base_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "hello", 5), 5);
    close(fd);
    char *buf;
    size_t len;
    assert_int_equal(pf_read_file(path, 100, &buf, &len, &err), 0);
    assert_int_equal(len, 5);
    assert_string_equal(buf, "hello");
    free(buf);
    assert_int_equal(pf_read_file(path, 4, &buf, &len, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(pf_read_file("/tmp", 100, &buf, &len, &err), -1);
    assert_non_null(strstr(err.msg, "not a regular file"));
    assert_int_equal(pf_read_file("/nonexistent/x", 100, &buf, &len, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/x"));
    unlink(path);
}

/* FIFO order across growth and wrap-around, push_front, remove keeping order. */
static void test_grow(void **state)
{
    (void)state;
    int *v = NULL;
    size_t cap = 0;
    assert_int_equal(PF_GROW(v, cap, 0, 1, 4), 0);   /* the first room: FIRST */
    assert_int_equal(cap, 4);
    for (int i = 0; i < 4; i++)
        v[i] = i;
    assert_int_equal(PF_GROW(v, cap, 4, 1, 4), 0);   /* full: doubles, keeps what it held */
    assert_int_equal(cap, 8);
    assert_int_equal(v[3], 3);
    assert_int_equal(PF_GROW(v, cap, 5, 3, 4), 0);   /* fits: unchanged */
    assert_int_equal(cap, 8);
    assert_int_equal(PF_GROW(v, cap, 8, 20, 4), 0);  /* doubles until it fits */
    assert_int_equal(cap, 32);
    assert_int_equal(PF_GROW(v, cap, 8, SIZE_MAX, 4), -1);   /* overflow refused, the array kept */
    assert_int_equal(PF_GROW(v, cap, 8, SIZE_MAX / 2, 4), -1);
    assert_int_equal(cap, 32);
    free(v);
}

static void test_ring(void **state)
{
    (void)state;
    pf_ring r = {0};
    int v[100];
    assert_null(pf_ring_pop(&r));
    for (int i = 0; i < 10; i++) {   /* move head off 0 so later growth has to unwrap */
        assert_int_equal(pf_ring_push(&r, &v[i]), 0);
        assert_ptr_equal(pf_ring_pop(&r), &v[i]);
    }
    for (int i = 0; i < 100; i++)
        assert_int_equal(pf_ring_push(&r, &v[i]), 0);
    assert_int_equal(pf_ring_push_front(&r, &v[99]), 0);
    pf_ring_remove(&r, &v[50]);
    assert_int_equal(r.n, 100);
    assert_ptr_equal(pf_ring_pop(&r), &v[99]);
    for (int i = 0; i < 100; i++)
        if (i != 50)
            assert_ptr_equal(pf_ring_pop(&r), &v[i]);
    assert_null(pf_ring_pop(&r));
    assert_int_equal(pf_ring_push_front(&r, &v[1]), 0);
    assert_int_equal(pf_ring_push_front(&r, &v[0]), 0);
    assert_ptr_equal(pf_ring_pop(&r), &v[0]);
    assert_ptr_equal(pf_ring_pop(&r), &v[1]);
    pf_ring_free(&r);
    assert_int_equal(r.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errf_and_prefix),
        cmocka_unit_test(test_read_file_limits),
        cmocka_unit_test(test_ring),
        cmocka_unit_test(test_grow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
