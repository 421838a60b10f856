/* Unit tests of the fleet pieces: CURVE certificates and allow-lists, the security rules, the ZAP handler
 * (a real CURVE handshake over loopback tcp), the metrics registry and its text format, health, rates and
 * the metrics HTTP server. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cmocka.h>

#include "base/file.h"
#include "base/metrics.h"
#include "pipeline/httpd.h"
#include "proto/security.h"

#define PF_TEST_TMP_NAME "pf_fleet_units"
#include "tests/support/test_tmp.h"

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* ---------- certificates ---------- */

static void test_cert_roundtrip(void **state)
{
    (void)state;
    pf_err err = {{0}};
    pf_keypair kp, back;
    assert_int_equal(pf_keypair_generate(&kp, &err), 0);
    assert_true(pf_z85_key_valid(kp.public_key));
    assert_true(pf_z85_key_valid(kp.secret_key));
    snprintf(kp.name, sizeof kp.name, "node-a");
    const char *path = tmp_path("a.key");
    assert_int_equal(pf_cert_save(path, &kp, 0, &err), 0);
    struct stat st;
    char secret_path[600];
    snprintf(secret_path, sizeof secret_path, "%s_secret", path);
    assert_int_equal(stat(secret_path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    /* the secret certificate holds both halves */
    assert_int_equal(pf_cert_load(secret_path, &back, 1, &err), 0);
    assert_string_equal(back.public_key, kp.public_key);
    assert_string_equal(back.secret_key, kp.secret_key);
    assert_string_equal(back.name, "node-a");
    /* the public one has no secret: fine as a public key, refused where a secret is needed */
    assert_int_equal(pf_cert_load(path, &back, 0, &err), 0);
    assert_string_equal(back.secret_key, "");
    assert_int_equal(pf_cert_load(path, &back, 1, &err), -1);
    assert_non_null(strstr(err.msg, "no secret-key"));
    /* never overwritten without force */
    pf_keypair other;
    assert_int_equal(pf_keypair_generate(&other, &err), 0);
    assert_int_equal(pf_cert_save(path, &other, 0, &err), -1);
    assert_non_null(strstr(err.msg, "exists"));
    assert_int_equal(pf_cert_load(secret_path, &back, 1, &err), 0);
    assert_string_equal(back.public_key, kp.public_key);
    assert_int_equal(pf_cert_save(path, &other, 1, &err), 0);
    assert_int_equal(pf_cert_load(secret_path, &back, 1, &err), 0);
    assert_string_equal(back.public_key, other.public_key);
}

static void test_cert_bad(void **state)
{
    (void)state;
    pf_err err = {{0}};
    pf_keypair kp, a, b;
    assert_int_equal(pf_keypair_generate(&a, &err), 0);
    assert_int_equal(pf_keypair_generate(&b, &err), 0);
    char text[512];
    /* a public key that does not belong to the secret key */
    snprintf(text, sizeof text, "curve\n    public-key = \"%s\"\n    secret-key = \"%s\"\n", a.public_key, b.secret_key);
    write_text(tmp_path("mixed.key_secret"), text);
    assert_int_equal(pf_cert_load(tmp_path("mixed.key_secret"), &kp, 1, &err), -1);
    assert_non_null(strstr(err.msg, "does not belong"));
    write_text(tmp_path("short.key"), "curve\n    public-key = \"abc\"\n");
    assert_int_equal(pf_cert_load(tmp_path("short.key"), &kp, 0, &err), -1);
    assert_non_null(strstr(err.msg, "line 2"));
    write_text(tmp_path("empty.key"), "# nothing here\n");
    assert_int_equal(pf_cert_load(tmp_path("empty.key"), &kp, 0, &err), -1);
    assert_non_null(strstr(err.msg, "no public-key"));
    assert_int_equal(pf_cert_load(tmp_path("missing.key"), &kp, 0, &err), -1);
    assert_false(pf_z85_key_valid("short"));
    assert_false(pf_z85_key_valid("0123456789012345678901234567890123456789 "));
    assert_false(pf_z85_key_valid("0123456789012345678901234567890123456,89"));   /* ',' is not Z85 */
    /* a 5-character group above 2^32 is no key: so no key starts with '#' (comments are unambiguous) */
    assert_false(pf_z85_key_valid("#" "000000000000000000000000000000000000000"));
    assert_true(pf_z85_key_valid("0" "000000000000000000000000000000000000000"));
}

static void test_allowlist(void **state)
{
    (void)state;
    pf_err err = {{0}};
    pf_keypair k1, k2, k3;
    assert_int_equal(pf_keypair_generate(&k1, &err), 0);
    assert_int_equal(pf_keypair_generate(&k2, &err), 0);
    assert_int_equal(pf_keypair_generate(&k3, &err), 0);
    char *dir = strdup(tmp_path("allow"));
    assert_int_equal(mkdir(dir, 0755), 0);
    char p[600], text[600];
    snprintf(k1.name, sizeof k1.name, "worker-one");
    snprintf(p, sizeof p, "%s/one.key", dir);
    assert_int_equal(pf_cert_save(p, &k1, 0, &err), 0);   /* one.key and one.key_secret (skipped) */
    /* a list file: comments, a key with a name, a quoted key, a repeated key */
    snprintf(text, sizeof text, "# workers on node B\n\n%s node-b\n\"%s\"\n%s\n", k2.public_key, k3.public_key,
             k3.public_key);
    snprintf(p, sizeof p, "%s/list.txt", dir);
    write_text(p, text);
    snprintf(p, sizeof p, "%s/.hidden", dir);
    write_text(p, "garbage that would not parse\n");
    pf_allowlist a;
    assert_int_equal(pf_allowlist_load(dir, &a, &err), 0);
    assert_int_equal(a.n, 3);
    int i1 = pf_allowlist_find(&a, k1.public_key), i2 = pf_allowlist_find(&a, k2.public_key);
    assert_true(i1 >= 0 && i2 >= 0);
    assert_string_equal(a.names[i1], "worker-one");
    assert_string_equal(a.names[i2], "node-b");
    assert_true(pf_allowlist_find(&a, k3.public_key) >= 0);
    assert_int_equal(pf_allowlist_find(&a, k1.secret_key), -1);
    pf_allowlist_free(&a);
    /* one bad line names the file and the line */
    snprintf(p, sizeof p, "%s/list.txt", dir);
    write_text(p, "not a key\n");
    assert_int_equal(pf_allowlist_load(dir, &a, &err), -1);
    assert_non_null(strstr(err.msg, "list.txt: line 1"));
    /* a single certificate file is a list of one */
    snprintf(p, sizeof p, "%s/one.key", dir);
    assert_int_equal(pf_allowlist_load(p, &a, &err), 0);
    assert_int_equal(a.n, 1);
    pf_allowlist_free(&a);
    char key[PF_Z85_KEY_LEN + 1];
    assert_int_equal(pf_public_key_arg(p, key, &err), 0);
    assert_string_equal(key, k1.public_key);
    assert_int_equal(pf_public_key_arg(k2.public_key, key, &err), 0);
    assert_string_equal(key, k2.public_key);
    assert_int_equal(pf_public_key_arg("nonsense", key, &err), -1);
    free(dir);
}

static void test_security_rules(void **state)
{
    (void)state;
    pf_err err = {{0}};
    assert_true(pf_endpoint_is_network("tcp://*:5555"));
    assert_true(pf_endpoint_is_network("ws://host:1"));
    assert_false(pf_endpoint_is_network("ipc:///run/p.sock"));
    assert_false(pf_endpoint_is_network("inproc://x"));
    pf_security s;
    memset(&s, 0, sizeof s);
    assert_int_equal(pf_security_load(&s, &err), 0);
    /* no keys: local endpoints only, tcp refused with a pointer to keygen and --insecure */
    assert_int_equal(pf_security_check_bind(&s, "--bind", "ipc:///tmp/x", &err), 0);
    assert_int_equal(pf_security_check_bind(&s, "--bind", "tcp://*:5555", &err), -1);
    assert_non_null(strstr(err.msg, "--insecure"));
    assert_int_equal(pf_security_check_connect(&s, "--producer", "tcp://h:5555", &err), -1);
    s.insecure = 1;
    assert_int_equal(pf_security_check_bind(&s, "--bind", "tcp://*:5555", &err), 0);
    assert_int_equal(pf_security_check_connect(&s, "--producer", "tcp://h:5555", &err), 0);
    /* library use without settings: plain sockets */
    assert_int_equal(pf_security_check_bind(NULL, "--bind", "tcp://*:5555", &err), 0);
    /* a server key needs an allow-list, and the allow-list a server key */
    pf_keypair kp;
    assert_int_equal(pf_keypair_generate(&kp, &err), 0);
    const char *cert = tmp_path("srv.key");
    assert_int_equal(pf_cert_save(cert, &kp, 1, &err), 0);
    char secret[600];
    snprintf(secret, sizeof secret, "%s_secret", cert);
    memset(&s, 0, sizeof s);
    s.server_key_file = secret;
    assert_int_equal(pf_security_load(&s, &err), -1);
    assert_non_null(strstr(err.msg, "--curve-allow"));
    s.allow_path = cert;
    assert_int_equal(pf_security_load(&s, &err), 0);
    assert_true(s.have_server && s.have_client);   /* the server pair doubles as the client pair */
    assert_string_equal(s.server_public, kp.public_key);
    assert_string_equal(s.sink_public, kp.public_key);
    assert_int_equal(pf_security_check_bind(&s, "--bind", "tcp://*:5555", &err), 0);
    assert_true(pf_security_curve_bind(&s, "tcp://*:5555"));
    assert_false(pf_security_curve_bind(&s, "ipc:///tmp/x"));
    /* a client key needs the server's public key */
    memset(&s, 0, sizeof s);
    s.client_key_file = secret;
    assert_int_equal(pf_security_load(&s, &err), -1);
    assert_non_null(strstr(err.msg, "--curve-server-public"));
    s.server_public_arg = cert;
    assert_int_equal(pf_security_load(&s, &err), 0);
    assert_int_equal(pf_security_check_connect(&s, "--sink", "tcp://h:1", &err), 0);
}

/* ---------- the ZAP handler: real CURVE handshakes ---------- */

static int recv_within(void *sock, int ms, char *buf, size_t cap)
{
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, ms) <= 0)
        return -1;
    zmq_recv(sock, buf, cap, 0);   /* routing id */
    return zmq_recv(sock, buf, cap, 0);
}

static void *client(void *ctx, const pf_security *sec, const char *ep)
{
    void *c = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(c, ZMQ_LINGER, &linger, sizeof linger);
    pf_err err = {{0}};
    assert_int_equal(pf_secure_connect(c, ep, sec, sec->server_public, &err), 0);
    return c;
}

static void test_zap(void **state)
{
    (void)state;
    pf_err err = {{0}};
    pf_keypair srv, good, bad;
    assert_int_equal(pf_keypair_generate(&srv, &err), 0);
    assert_int_equal(pf_keypair_generate(&good, &err), 0);
    assert_int_equal(pf_keypair_generate(&bad, &err), 0);
    char sp[600], gp[600], bp[600], allow[600];
    snprintf(sp, sizeof sp, "%s", tmp_path("zsrv.key"));
    snprintf(gp, sizeof gp, "%s", tmp_path("zgood.key"));
    snprintf(bp, sizeof bp, "%s", tmp_path("zbad.key"));
    snprintf(allow, sizeof allow, "%s", tmp_path("zallow.txt"));
    assert_int_equal(pf_cert_save(sp, &srv, 1, &err), 0);
    assert_int_equal(pf_cert_save(gp, &good, 1, &err), 0);
    assert_int_equal(pf_cert_save(bp, &bad, 1, &err), 0);
    char text[200];
    snprintf(text, sizeof text, "%s good\n", good.public_key);
    write_text(allow, text);

    char sps[620], gps[620], bps[620];
    snprintf(sps, sizeof sps, "%s_secret", sp);
    snprintf(gps, sizeof gps, "%s_secret", gp);
    snprintf(bps, sizeof bps, "%s_secret", bp);
    pf_security ss = {0}, gs = {0}, bs = {0};
    ss.server_key_file = sps;
    ss.allow_path = allow;
    gs.client_key_file = gps;
    gs.server_public_arg = sp;
    bs.client_key_file = bps;
    bs.server_public_arg = sp;
    assert_int_equal(pf_security_load(&ss, &err), 0);
    assert_int_equal(pf_security_load(&gs, &err), 0);
    assert_int_equal(pf_security_load(&bs, &err), 0);

    void *ctx = zmq_ctx_new();
    pf_zap *zap = NULL;
    assert_int_equal(pf_zap_start(ctx, allow, ss.server.public_key, &zap, &err), 0);
    void *server = zmq_socket(ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(server, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(pf_secure_bind(server, "tcp://127.0.0.1:*", &ss, &err), 0);
    char ep[128];
    size_t epl = sizeof ep;
    zmq_getsockopt(server, ZMQ_LAST_ENDPOINT, ep, &epl);

    void *g = client(ctx, &gs, ep), *b = zmq_socket(ctx, ZMQ_DEALER);
    zmq_setsockopt(b, ZMQ_LINGER, &linger, sizeof linger);
    pf_sock_watch *wb = pf_sock_watch_start(ctx, b, ep, "test server");
    assert_non_null(wb);
    assert_int_equal(pf_secure_connect(b, ep, &bs, bs.server_public, &err), 0);
    zmq_send(g, "from-good", 9, 0);
    zmq_send(b, "from-bad", 8, 0);
    char buf[64] = {0};
    int n = recv_within(server, 3000, buf, sizeof buf - 1);
    assert_int_equal(n, 9);
    assert_memory_equal(buf, "from-good", 9);
    assert_int_equal(recv_within(server, 500, buf, sizeof buf), -1);   /* the unknown key got nowhere */
    /* the server's own key is always admitted (the sink on the hub shares the pair) */
    pf_security own = {0};
    own.client_key_file = sps;
    own.server_public_arg = sp;
    assert_int_equal(pf_security_load(&own, &err), 0);
    void *o = client(ctx, &own, ep);
    zmq_send(o, "from-own", 8, 0);
    assert_int_equal(recv_within(server, 3000, buf, sizeof buf), 8);
    /* reload: now the bad key is allowed; its socket keeps retrying and gets in */
    snprintf(text, sizeof text, "%s good\n%s now-allowed\n", good.public_key, bad.public_key);
    write_text(allow, text);
    assert_int_equal(pf_zap_reload(zap, allow, &err), 0);
    int got = -1;
    for (int k = 0; k < 40 && got < 0; k++) {
        pf_sock_watch_poll(wb);   /* reconnects after the refusal */
        zmq_send(b, "from-bad", 8, ZMQ_DONTWAIT);
        got = recv_within(server, 200, buf, sizeof buf);
    }
    assert_int_equal(got, 8);
    pf_sock_watch_stop(wb);
    /* a broken allow-list on reload keeps the previous one */
    write_text(allow, "garbage\n");
    assert_int_equal(pf_zap_reload(zap, allow, &err), -1);
    zmq_close(g);
    zmq_close(b);
    zmq_close(o);
    zmq_close(server);
    pf_zap_stop(zap);
    zmq_ctx_term(ctx);
}

/* ---------- metrics ---------- */

static void test_metrics_render(void **state)
{
    (void)state;
    pf_metric *c = pf_counter("pf_test_events_total", "kind=\"a\"", "Events\nwith a \\ newline");
    pf_metric *c2 = pf_counter("pf_test_events_total", "kind=\"b\"", "ignored");
    assert_ptr_equal(pf_counter("pf_test_events_total", "kind=\"a\"", "x"), c);
    assert_null(pf_gauge("pf_test_events_total", "", "a name keeps its kind"));
    pf_metric_add(c, 2);
    pf_metric_add(c, -5);   /* counters never go down */
    pf_metric_add(c2, 1.5);
    pf_metric *g = pf_gauge("pf_test_depth", "", "Depth");
    pf_metric_set(g, 7);
    pf_metric_add(g, -2);
    const double b[] = {1, 5};
    pf_metric *h = pf_histogram("pf_test_seconds", "stage=\"x\"", "Seconds", b, 2);
    pf_metric_observe(h, 0.5);
    pf_metric_observe(h, 3);
    pf_metric_observe(h, 100);
    pf_metric_add(NULL, 1);   /* tolerated */
    assert_true(pf_metric_value(c) == 2);
    assert_true(pf_metric_value(g) == 5);
    assert_true(pf_metric_value(h) == 3);
    size_t len = 0;
    char *t = pf_metrics_render(&len);
    assert_non_null(t);
    assert_int_equal(strlen(t), len);
    assert_non_null(strstr(t, "# HELP pf_test_events_total Events\\nwith a \\\\ newline\n"
                              "# TYPE pf_test_events_total counter\n"
                              "pf_test_events_total{kind=\"a\"} 2\n"
                              "pf_test_events_total{kind=\"b\"} 1.5\n"));
    assert_non_null(strstr(t, "# TYPE pf_test_depth gauge\npf_test_depth 5\n"));
    assert_non_null(strstr(t, "pf_test_seconds_bucket{stage=\"x\",le=\"1\"} 1\n"
                              "pf_test_seconds_bucket{stage=\"x\",le=\"5\"} 2\n"
                              "pf_test_seconds_bucket{stage=\"x\",le=\"+Inf\"} 3\n"
                              "pf_test_seconds_sum{stage=\"x\"} 103.5\n"
                              "pf_test_seconds_count{stage=\"x\"} 3\n"));
    assert_non_null(strstr(t, "\nprocess_resident_memory_bytes "));
    assert_non_null(strstr(t, "\nprocess_cpu_seconds_total "));
    /* the HELP/TYPE header of a name appears once */
    char *first = strstr(t, "# TYPE pf_test_events_total");
    assert_null(strstr(first + 1, "# TYPE pf_test_events_total"));
    free(t);
    assert_true(pf_process_rss_bytes() > 1e5);
}

static void test_health_and_rate(void **state)
{
    (void)state;
    char why[128];
    assert_true(pf_health_live(why, sizeof why));
    assert_true(pf_health_is_ready(why, sizeof why));
    pf_health_register("unit", 0.05);
    assert_false(pf_health_is_ready(why, sizeof why));
    assert_non_null(strstr(why, "unit"));
    pf_health_ready("unit", 1);
    assert_true(pf_health_is_ready(why, sizeof why));
    pf_health_tick("unit");
    assert_true(pf_health_live(why, sizeof why));
    usleep(120000);
    assert_false(pf_health_live(why, sizeof why));   /* a wedged loop is not live */
    pf_health_tick("unit");
    assert_true(pf_health_live(why, sizeof why));
    pf_health_unregister("unit");

    pf_rate r;
    pf_rate_init(&r, 10);
    double rate = 0;
    for (int s = 0; s <= 40; s++)   /* 5 events per second for 40 s */
        rate = pf_rate_update(&r, 100.0 + s, 5.0 * s);
    assert_true(rate > 4.99 && rate < 5.01);
    for (int s = 41; s <= 60; s++)   /* then nothing: the window forgets */
        rate = pf_rate_update(&r, 100.0 + s, 200.0);
    assert_true(rate < 1e-9);
}

static void test_httpd(void **state)
{
    (void)state;
    pf_err err = {{0}};
    pf_httpd *h = NULL;
    assert_int_equal(pf_httpd_start("localhost", &h, &err), -1);
    assert_int_equal(pf_httpd_start("127.0.0.1:99999", &h, &err), -1);
    assert_int_equal(pf_httpd_start("[::1:80", &h, &err), -1);
    /* a free port */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    getsockname(s, (struct sockaddr *)&a, &al);
    int port = ntohs(a.sin_port);
    close(s);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    pf_metric_add(pf_counter("pf_test_http_total", "", "served"), 1);
    assert_int_equal(pf_httpd_start(addr, &h, &err), 0);
    static const char *const paths[] = {"/metrics", "/healthz", "/nope"};
    static const char *const want[] = {"HTTP/1.1 200", "HTTP/1.1 200", "HTTP/1.1 404"};
    for (int i = 0; i < 3; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof a), 0);
        char req[128];
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", paths[i]);
        assert_true(write(c, req, strlen(req)) == (ssize_t)strlen(req));
        static char resp[1 << 16];
        size_t n = 0;
        ssize_t r;
        while (n < sizeof resp - 1 && (r = read(c, resp + n, sizeof resp - 1 - n)) > 0)
            n += (size_t)r;
        resp[n] = '\0';
        close(c);
        assert_int_equal(strncmp(resp, want[i], strlen(want[i])), 0);
        if (i == 0) {
            assert_non_null(strstr(resp, "text/plain; version=0.0.4"));
            assert_non_null(strstr(resp, "\npf_test_http_total 1\n"));
        }
    }
    pf_httpd_stop(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cert_roundtrip), cmocka_unit_test(test_cert_bad),
        cmocka_unit_test(test_allowlist),      cmocka_unit_test(test_security_rules),
        cmocka_unit_test(test_zap),            cmocka_unit_test(test_metrics_render),
        cmocka_unit_test(test_health_and_rate), cmocka_unit_test(test_httpd),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
