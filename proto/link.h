/* link.h - a client's link to the producer (the sink and every worker keep one).
 *
 * The protocol rules a client follows towards the producer (proto/PROTOCOL.md, "Heartbeats"): heartbeat every
 * --heartbeat seconds; say hello at that pace until a producer welcomes us, and again when a reset or a
 * heartbeat with another instance says the producer restarted (pf_msg_wants_hello); call the producer silent
 * after --heartbeat-timeout without a message. The link keeps the state and decides when; the caller sends
 * the messages (its hello says what it is) and words its own log lines.
 */
#ifndef PF_PROTO_LINK_H
#define PF_PROTO_LINK_H

#include "proto/proto.h"

typedef struct pf_link {
    char instance[64]; /* the producer instance that welcomed us ("" = none yet) */
    int welcomed;      /* welcomed by that instance and not reset since */
    int silent;        /* nothing heard for hb_timeout (cleared by the next message) */
    double last_heard, last_hb, last_hello;
} pf_link;

/* What pf_link_tick says is due now. */
enum { PF_LINK_SEND_HB = 1, PF_LINK_SEND_HELLO = 2, PF_LINK_WENT_SILENT = 4 };

/* A fresh link at time NOW (the producer counts as heard now, so silence is measured from the start). */
void pf_link_start(pf_link *l, double now);
/* The periodic step: which of PF_LINK_SEND_HB, PF_LINK_SEND_HELLO (only while not welcomed) and
 * PF_LINK_WENT_SILENT (once per silence; the link is no longer welcomed) are due. */
int pf_link_tick(pf_link *l, double now, double hb_interval, double hb_timeout);
/* Any message from the producer arrived: 1 when it ends a silence. */
int pf_link_heard(pf_link *l, double now);
/* A welcome from producer INSTANCE: 1 when it is another instance than the one we had. */
int pf_link_welcome(pf_link *l, const char *instance);
/* A reset or heartbeat M arrived: whether to say hello again now (pf_msg_wants_hello). */
int pf_link_wants_hello(pf_link *l, const pf_msg *m, double now);
/* A hello went out at NOW. */
void pf_link_said_hello(pf_link *l, double now);
/* Welcomed by a producer that is not silent. */
int pf_link_connected(const pf_link *l);

#endif
