/* security.c - the security options, the rules for endpoints, and CURVE on sockets (see security.h). */
#include "proto/security.h"

#include <errno.h>
#include <string.h>
#include <zmq.h>

#include "base/log.h"
#include "proto/wire.h"

#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93   /* libzmq >= 4.3 (draft API in its header, present in the library) */
#endif

#define LOG "security"
#define ZAP_DOMAIN "paliflow"

/* ---------- keys ---------- */

int pf_security_load(pf_security *s, pf_err *err)
{
    s->have_server = s->have_client = 0;
    s->server_public[0] = s->sink_public[0] = '\0';
    if (s->server_key_file) {
        if (pf_cert_load(s->server_key_file, &s->server, 1, err))
            return pf_err_prefix(err, "--curve-server-key");
        if (!s->allow_path)
            return pf_errf(err, "--curve-server-key needs --curve-allow (the client keys that may connect)");
        s->have_server = 1;
    }
    if (s->allow_path) {
        if (!s->server_key_file)
            return pf_errf(err, "--curve-allow needs --curve-server-key");
        pf_allowlist a;
        if (pf_allowlist_load(s->allow_path, &a, err))
            return pf_err_prefix(err, "--curve-allow");
        pf_allowlist_free(&a);
    }
    if (s->client_key_file) {
        if (pf_cert_load(s->client_key_file, &s->client, 1, err))
            return pf_err_prefix(err, "--curve-client-key");
        s->have_client = 1;
    } else if (s->have_server) {
        s->client = s->server;   /* the sink reaches the producer with the hub's pair */
        s->have_client = 1;
    }
    if (s->server_public_arg) {
        if (pf_public_key_arg(s->server_public_arg, s->server_public, err))
            return pf_err_prefix(err, "--curve-server-public");
    } else if (s->have_server) {
        snprintf(s->server_public, sizeof s->server_public, "%s", s->server.public_key);
    }
    if (s->sink_public_arg) {
        if (pf_public_key_arg(s->sink_public_arg, s->sink_public, err))
            return pf_err_prefix(err, "--curve-sink-public");
    } else {
        snprintf(s->sink_public, sizeof s->sink_public, "%s", s->server_public);
    }
    if (s->client_key_file && !s->server_public[0])
        return pf_errf(err, "--curve-client-key needs --curve-server-public (the producer's public key)");
    s->loaded = 1;
    return 0;
}

int pf_endpoint_is_network(const char *endpoint)
{
    return !(strncmp(endpoint, "ipc://", 6) == 0 || strncmp(endpoint, "inproc://", 9) == 0);
}

int pf_security_check_bind(const pf_security *s, const char *what, const char *endpoint, pf_err *err)
{
    if (!s || !pf_endpoint_is_network(endpoint) || s->have_server || s->insecure)
        return 0;
    return pf_errf(err, "%s %s: a network endpoint needs CURVE keys (--curve-server-key and --curve-allow; make "
                        "them with 'paliflow keygen'), or --insecure for plain tcp",
                   what, endpoint);
}

int pf_security_check_connect(const pf_security *s, const char *what, const char *endpoint, pf_err *err)
{
    if (!s || !pf_endpoint_is_network(endpoint) || (s->have_client && s->server_public[0]) || s->insecure)
        return 0;
    return pf_errf(err, "%s %s: a network endpoint needs CURVE keys (--curve-client-key and --curve-server-public; "
                        "make them with 'paliflow keygen'), or --insecure for plain tcp",
                   what, endpoint);
}

int pf_security_curve_bind(const pf_security *s, const char *endpoint)
{
    return s && s->have_server && pf_endpoint_is_network(endpoint);
}

int pf_secure_bind(void *sock, const char *endpoint, const pf_security *s, pf_err *err)
{
    if (pf_security_check_bind(s, "bind", endpoint, err))
        return -1;
    if (pf_security_curve_bind(s, endpoint)) {
        int one = 1;
        if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
            zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, s->server.secret_key, PF_Z85_KEY_LEN + 1) ||
            zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, ZAP_DOMAIN, strlen(ZAP_DOMAIN)))
            return pf_errf(err, "bind %s: CURVE setup: %s", endpoint, zmq_strerror(errno));
        /* Refuse clients when no ZAP handler answers (instead of libzmq's default: let them in). */
        if (zmq_setsockopt(sock, ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof one) != 0)
            pf_debug(LOG, "ZMQ_ZAP_ENFORCE_DOMAIN not supported by this libzmq: %s", zmq_strerror(errno));
    } else if (s && pf_endpoint_is_network(endpoint)) {
        pf_warn(LOG, "%s: plain tcp (--insecure): anyone who reaches this port can join and read the traffic",
                endpoint);
    }
    if (pf_wire_ipc_in_use(endpoint, err))
        return -1;
    if (zmq_bind(sock, endpoint) != 0)
        return pf_errf(err, "bind %s: %s", endpoint, zmq_strerror(errno));
    return 0;
}

int pf_secure_connect(void *sock, const char *endpoint, const pf_security *s, const char *server_public,
                      pf_err *err)
{
    if (pf_security_check_connect(s, "connect", endpoint, err))
        return -1;
    if (s && s->have_client && server_public && server_public[0] && pf_endpoint_is_network(endpoint)) {
        if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_public, PF_Z85_KEY_LEN + 1) ||
            zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, s->client.public_key, PF_Z85_KEY_LEN + 1) ||
            zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, s->client.secret_key, PF_Z85_KEY_LEN + 1))
            return pf_errf(err, "connect %s: CURVE setup: %s", endpoint, zmq_strerror(errno));
    } else if (s && pf_endpoint_is_network(endpoint)) {
        pf_warn(LOG, "%s: plain tcp (--insecure): the traffic is readable on the network", endpoint);
    }
    if (zmq_connect(sock, endpoint) != 0)
        return pf_errf(err, "connect %s: %s", endpoint, zmq_strerror(errno));
    return 0;
}
