/* proto: binding an ipc:// endpoint that a live process listens on is refused (ZeroMQ would unlink the socket
 * file and take the path from the running producer or sink, silently); a stale socket file, left by a process
 * killed with -9, is bound over as before. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#define PF_TEST_TMP_NAME "pf_wire_bind"
#include "proto/security.h"
#include "proto/wire.h"
#include "tests/support/test_tmp.h"

/* A socket file nobody listens on: what a process killed with -9 leaves behind. */
static void stale_socket_file(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 1), 0);
    close(fd);   /* the file stays */
    assert_int_equal(access(path, F_OK), 0);
}

static void test_ipc_in_use(void **state)
{
    (void)state;
    pf_proto_limits lim = pf_proto_default_limits();
    char ep[600];
    snprintf(ep, sizeof ep, "ipc://%s", tmp_path("hub.sock"));
    pf_err e = {{0}};
    void *ctx = zmq_ctx_new();
    void *first = pf_wire_socket(ctx, ZMQ_ROUTER, &lim, 0, &e);
    void *second = pf_wire_socket(ctx, ZMQ_ROUTER, &lim, 0, &e);
    assert_non_null(first);
    assert_non_null(second);
    assert_int_equal(pf_wire_bind(first, ep, &e), 0);
    /* a second bind on the live path: refused, by both bind helpers, naming the endpoint */
    assert_int_equal(pf_wire_bind(second, ep, &e), -1);
    assert_non_null(strstr(e.msg, ep));
    assert_non_null(strstr(e.msg, "another process is listening on it"));
    pf_err e2 = {{0}};
    assert_int_equal(pf_secure_bind(second, ep, NULL, &e2), -1);
    assert_string_equal(e2.msg, e.msg);
    zmq_close(first);
    zmq_close(second);
    /* a stale socket file (its process died): bound over */
    snprintf(ep, sizeof ep, "ipc://%s", tmp_path("stale.sock"));
    stale_socket_file(tmp_path("stale.sock"));
    assert_int_equal(pf_wire_ipc_in_use(ep, &e), 0);
    void *third = pf_wire_socket(ctx, ZMQ_ROUTER, &lim, 0, &e);
    assert_int_equal(pf_secure_bind(third, ep, NULL, &e), 0);
    zmq_close(third);
    /* nothing there yet, abstract names, other transports: not checked */
    assert_int_equal(pf_wire_ipc_in_use("ipc:///nonexistent/dir/x.sock", &e), 0);
    assert_int_equal(pf_wire_ipc_in_use("ipc://@paliflow-abstract", &e), 0);
    assert_int_equal(pf_wire_ipc_in_use("tcp://127.0.0.1:5555", &e), 0);
    assert_int_equal(pf_wire_ipc_in_use("inproc://x", &e), 0);
    zmq_ctx_term(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipc_in_use),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
