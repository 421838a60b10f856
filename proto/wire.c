/* wire.c - see wire.h. */
#include "proto/wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/log.h"

void *pf_wire_socket(void *ctx, int type, const pf_proto_limits *lim, int linger_ms, pf_err *err)
{
    void *s = zmq_socket(ctx, type);
    if (!s) {
        pf_errf(err, "zmq_socket: %s", zmq_strerror(errno));
        return NULL;
    }
    int64_t maxmsg = (int64_t)lim->max_msg_bytes;
    int hwm = 100000;
    if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
        zmq_setsockopt(s, ZMQ_LINGER, &linger_ms, sizeof linger_ms) ||
        zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm) || zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm)) {
        pf_errf(err, "zmq_setsockopt: %s", zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    return s;
}

int pf_wire_ipc_in_use(const char *endpoint, pf_err *err)
{
    if (strncmp(endpoint, "ipc://", 6) != 0 || endpoint[6] == '@' || !endpoint[6])   /* '@': abstract, no file */
        return 0;
    const char *path = endpoint + 6;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path)
        return 0;   /* zmq_bind names the problem */
    memcpy(a.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int live = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    if (!live)   /* no file, or a stale one (ECONNREFUSED): zmq_bind replaces it */
        return 0;
    return pf_errf(err, "bind %s: another process is listening on it (a producer or sink already running?); "
                        "binding would take the endpoint from it: stop it or choose another path",
                   endpoint);
}

int pf_wire_bind(void *sock, const char *endpoint, pf_err *err)
{
    if (pf_wire_ipc_in_use(endpoint, err))
        return -1;
    if (zmq_bind(sock, endpoint) != 0)
        return pf_errf(err, "bind %s: %s", endpoint, zmq_strerror(errno));
    return 0;
}

int pf_wire_connect(void *sock, const char *endpoint, pf_err *err)
{
    if (zmq_connect(sock, endpoint) != 0)
        return pf_errf(err, "connect %s: %s", endpoint, zmq_strerror(errno));
    return 0;
}

static void free_buf(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* Send [ident][BUF][DATA] (ident when not NULL, DATA when not NULL). BUF is given to ZeroMQ (freed with free())
 * and DATA emptied (sent or closed), whatever happens. errno says why a send failed. */
static int send_parts(void *sock, const void *ident, size_t ident_len, uint8_t *buf, size_t len, zmq_msg_t *data,
                      pf_err *err)
{
    zmq_msg_t msg;
    int e = 0;
    const char *what = "send";
    if (ident && zmq_send(sock, ident, ident_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        e = errno;
        free(buf);
    } else if (zmq_msg_init_data(&msg, buf, len, free_buf, NULL) != 0) {
        e = errno;
        what = "zmq_msg_init_data";
        free(buf);
    } else if (zmq_msg_send(&msg, sock, (data ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) {
        e = errno;
        zmq_msg_close(&msg);   /* frees buf */
    } else if (data && zmq_msg_send(data, sock, ZMQ_DONTWAIT) < 0) {
        /* After the first part is accepted the rest of the message is too (ZeroMQ counts a socket's high-water
         * mark in whole messages), so DONTWAIT cannot cut a message in two: a failure here is a dead socket. */
        e = errno;
        what = "send (data frame)";
    } else {
        return 0;   /* zmq_msg_send emptied DATA */
    }
    if (data)
        zmq_msg_close(data);
    pf_errf(err, "%s: %s", what, zmq_strerror(e));
    errno = e;
    return -1;
}

int pf_wire_send_raw(void *sock, const void *ident, size_t ident_len, uint8_t *buf, size_t len, pf_err *err)
{
    return send_parts(sock, ident, ident_len, buf, len, NULL, err);
}

int pf_wire_msg_own(zmq_msg_t *msg, void *buf, size_t len, pf_err *err)
{
    /* zmq_msg_init_data refuses a NULL buffer; an empty file's bytes may be one */
    if (!buf && !(buf = malloc(1)))
        return pf_errf(err, "out of memory");
    if (zmq_msg_init_data(msg, buf, len, free_buf, NULL) != 0) {
        free(buf);
        return pf_errf(err, "zmq_msg_init_data: %s", zmq_strerror(errno));
    }
    return 0;
}

int pf_wire_send_frames(void *sock, const void *ident, size_t ident_len, uint8_t *buf, size_t len,
                        zmq_msg_t *data, pf_err *err)
{
    return send_parts(sock, ident, ident_len, buf, len, data, err);
}

int pf_wire_send_data(void *sock, const void *ident, size_t ident_len, const pf_msg *m, zmq_msg_t *data,
                      pf_err *err)
{
    pf_msg hdr = *m;
    hdr.data = NULL;
    hdr.data_len = 0;
    hdr.data_frame = 1;
    uint8_t *buf;
    size_t len;
    if (pf_msg_encode(&hdr, &buf, &len, err)) {
        zmq_msg_close(data);
        return -1;
    }
    return pf_wire_send_frames(sock, ident, ident_len, buf, len, data, err);
}

int pf_wire_send(void *sock, const void *ident, size_t ident_len, const pf_msg *m, pf_err *err)
{
    uint8_t *buf;
    size_t len;
    if (pf_msg_encode(m, &buf, &len, err))
        return -1;
    return pf_wire_send_raw(sock, ident, ident_len, buf, len, err);
}

static void drain_more(void *sock)
{
    int more = 1;
    size_t sz = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
        zmq_msg_t junk;
        zmq_msg_init(&junk);
        if (zmq_msg_recv(&junk, sock, 0) < 0) {
            zmq_msg_close(&junk);
            break;
        }
        zmq_msg_close(&junk);
    }
}

/* Who sent the frame, for logs about a malformed message: the peer's address and its ZAP user id (the
 * allow-list name or CURVE key; none under --insecure). ZeroMQ keeps both on every received frame. */
static void note_peer(pf_wire_in *in)
{
    const char *addr = zmq_msg_gets(&in->frame, "Peer-Address");
    const char *user = zmq_msg_gets(&in->frame, "User-Id");
    snprintf(in->peer, sizeof in->peer, "%s%s%s", addr ? addr : "?", user && *user ? " key " : "",
             user && *user ? user : "");
}

int pf_wire_recv(void *sock, int has_ident, const pf_proto_limits *lim, pf_wire_in *in, pf_err *err)
{
    memset(in, 0, sizeof *in);
    if (has_ident) {
        int n = zmq_recv(sock, in->ident, sizeof in->ident, ZMQ_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN)
                return 0;
            pf_errf(err, "recv: %s", zmq_strerror(errno));
            return errno == ETERM || errno == ENOTSOCK ? -2 : -1;
        }
        in->ident_len = (size_t)n > sizeof in->ident ? sizeof in->ident : (size_t)n;
        int more = 0;
        size_t sz = sizeof more;
        zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz);
        if (!more)
            return pf_errf(err, "message without payload");
    }
    zmq_msg_init(&in->frame);
    in->frame_open = 1;
    if (zmq_msg_recv(&in->frame, sock, has_ident ? 0 : ZMQ_DONTWAIT) < 0) {
        int e = errno;
        pf_wire_in_close(in);
        if (e == EAGAIN && !has_ident)
            return 0;
        pf_errf(err, "recv: %s", zmq_strerror(e));
        return e == ETERM || e == ENOTSOCK ? -2 : -1;
    }
    const uint8_t *data = NULL;
    size_t data_len = 0;
    if (zmq_msg_more(&in->frame)) {   /* a data frame: PROTOCOL.md, "Data frames" */
        zmq_msg_init(&in->data);
        in->data_open = 1;
        if (zmq_msg_recv(&in->data, sock, 0) < 0) {
            int e = errno;
            pf_wire_in_close(in);
            pf_errf(err, "recv (data frame): %s", zmq_strerror(e));
            return e == ETERM || e == ENOTSOCK ? -2 : -1;
        }
        if (zmq_msg_more(&in->data)) {
            note_peer(in);
            drain_more(sock);
            pf_wire_in_close(in);
            return pf_errf(err, "message with more than two frames (a map and a data frame at most)");
        }
        /* an empty frame's data pointer is not promised to be non-NULL; NULL means "no data frame" below */
        data = zmq_msg_size(&in->data) ? zmq_msg_data(&in->data) : (const uint8_t *)"";
        data_len = zmq_msg_size(&in->data);
    }
    if (pf_msg_decode_frames(zmq_msg_data(&in->frame), zmq_msg_size(&in->frame), data, data_len, lim, &in->msg,
                             err)) {
        note_peer(in);
        pf_wire_in_close(in);
        return -1;
    }
    return 1;
}

void pf_wire_in_close(pf_wire_in *in)
{
    pf_msg_free(&in->msg);
    if (in->frame_open)
        zmq_msg_close(&in->frame);
    in->frame_open = 0;
    if (in->data_open)
        zmq_msg_close(&in->data);
    in->data_open = 0;
}

int pf_wire_drain(void *sock, int has_ident, const pf_proto_limits *lim, int max, const char *component,
                  const char *from, int (*on_msg)(void *arg, pf_wire_in *in), void *arg)
{
    for (int k = 0; k < max; k++) {
        pf_wire_in in;
        pf_err e = {{0}};
        int got = pf_wire_recv(sock, has_ident, lim, &in, &e);
        if (got == 0)
            return 0;
        if (got == -2)
            return -2;
        if (got < 0) {
            /* Rate-limited per sender (anyone who can connect can send garbage as fast as the link allows). */
            char id[128], who[400];
            snprintf(who, sizeof who, "%s%s%s%s", from ? from : pf_wire_ident_str(in.ident, in.ident_len, id, sizeof id),
                     in.peer[0] ? " (" : "", in.peer, in.peer[0] ? ")" : "");
            pf_warn_limited(component, who, "bad message from %s: %s", who, e.msg);
            continue;
        }
        int rc = on_msg(arg, &in);
        pf_wire_in_close(&in);
        if (rc)
            return -1;
    }
    return 0;
}

const char *pf_wire_ident_str(const uint8_t *ident, size_t len, char *buf, size_t cap)
{
    size_t j = 0;
    for (size_t i = 0; i < len && j + 5 < cap; i++) {
        if (ident[i] >= 0x20 && ident[i] < 0x7f)
            buf[j++] = (char)ident[i];
        else
            j += (size_t)snprintf(buf + j, cap - j, "\\x%02x", ident[i]);
    }
    buf[j < cap ? j : cap - 1] = '\0';
    return buf;
}
