/* wire.h - ZeroMQ sockets that carry pf_msg: limits on every socket, zero-copy sends, bounded receives. */
#ifndef PF_PROTO_WIRE_H
#define PF_PROTO_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "base/err.h"
#include "proto/proto.h"

/* A socket with the options every paliflow socket gets: ZMQ_MAXMSGSIZE = lim->max_msg_bytes (the peer is
 * disconnected on a larger frame, before it is buffered), LINGER linger_ms, and generous HWMs (flow control
 * is done with credit, not by blocking sockets). */
void *pf_wire_socket(void *ctx, int type, const pf_proto_limits *lim, int linger_ms, pf_err *err);
int pf_wire_bind(void *sock, const char *endpoint, pf_err *err);
/* -1 (ERR says why) when ENDPOINT is an ipc:// path a live process listens on. ZeroMQ's ipc bind unlinks and
 * replaces the path's socket file, so a second producer or sink on the same path would silently take it from
 * the running one (which keeps its connections but gets no new ones). A stale file (nobody listening), a path
 * that does not exist and every other transport: 0. pf_wire_bind and pf_secure_bind check it. */
int pf_wire_ipc_in_use(const char *endpoint, pf_err *err);
int pf_wire_connect(void *sock, const char *endpoint, pf_err *err);

/* Encode M and send it (with a leading routing-id frame if ident != NULL). Never blocks: returns -1 with
 * errno EAGAIN (peer's queue full), EHOSTUNREACH (unknown peer on a ROUTER_MANDATORY socket), ... */
int pf_wire_send(void *sock, const void *ident, size_t ident_len, const pf_msg *m, pf_err *err);

/* Send pre-encoded bytes (ownership of BUF passes to ZeroMQ, freed with free()). */
int pf_wire_send_raw(void *sock, const void *ident, size_t ident_len, uint8_t *buf, size_t len, pf_err *err);

/* Send pre-encoded map bytes BUF (owned as above), then, when DATA != NULL, DATA as the message's second frame
 * (PROTOCOL.md, "Data frames": the map must say `data_frame`). DATA is consumed whatever happens: sent (ZeroMQ
 * releases it once written: a zmq_msg_copy of a received frame, or a buffer given with zmq_msg_init_data, goes
 * out without a copy), or closed on a failure. The frames go out together or not at all (ZeroMQ's multipart
 * messages are atomic). */
int pf_wire_send_frames(void *sock, const void *ident, size_t ident_len, uint8_t *buf, size_t len,
                        zmq_msg_t *data, pf_err *err);

/* Encode M with `data_frame` (M's own `data` must be NULL: the bytes are DATA) and send it with DATA as its
 * second frame; DATA is consumed as by pf_wire_send_frames. */
int pf_wire_send_data(void *sock, const void *ident, size_t ident_len, const pf_msg *m, zmq_msg_t *data,
                      pf_err *err);

/* A zmq_msg_t over BUF (LEN bytes, malloc'd) that frees BUF with free() when ZeroMQ is done with it: the way
 * a buffer is handed to pf_wire_send_frames without a copy. -1 (BUF freed, ERR says why) on failure. */
int pf_wire_msg_own(zmq_msg_t *msg, void *buf, size_t len, pf_err *err);

typedef struct pf_wire_in {
    uint8_t ident[256];
    size_t ident_len;
    zmq_msg_t frame;      /* the payload (the map); msg.data points into it unless a data frame came */
    int frame_open;
    zmq_msg_t data;       /* the data frame, when the message has one (PROTOCOL.md, "Data frames"): msg.data is
                             all of it */
    int data_open;
    pf_msg msg;
    char peer[200];       /* on a malformed message: "ADDRESS[ key USER-ID]" of the sender, for logs */
} pf_wire_in;

/* Receive one message (a map, or a map and its data frame) without blocking. Returns 1 and fills IN (release
 * with pf_wire_in_close) when a valid message arrived; 0 when none was waiting; -1 when one arrived but was malformed (err says why;
 * IN->ident names the sender when has_ident; the frames are consumed); -2 when the socket is dead
 * (context terminated). */
int pf_wire_recv(void *sock, int has_ident, const pf_proto_limits *lim, pf_wire_in *in, pf_err *err);
void pf_wire_in_close(pf_wire_in *in);

/* Hand what is waiting on SOCK to ON_MSG(ARG, IN), at most MAX messages, so that a busy socket cannot starve
 * the caller's loop (IN is closed after ON_MSG returns). A malformed message is logged as a warning of
 * COMPONENT, naming FROM or, when FROM is NULL, the sender's routing id, and dropped (it counts towards MAX).
 * ON_MSG returns 0 to go on, -1 to stop. Returns 0 when nothing more is waiting or MAX were taken, -1 when
 * ON_MSG stopped, -2 when the socket is dead (context terminated). */
int pf_wire_drain(void *sock, int has_ident, const pf_proto_limits *lim, int max, const char *component,
                  const char *from, int (*on_msg)(void *arg, pf_wire_in *in), void *arg);

/* A printable form of a routing id (for logs). */
const char *pf_wire_ident_str(const uint8_t *ident, size_t len, char *buf, size_t cap);

#endif
