/* refusal.h - messages a role drops because their sender may not say them (PROTOCOL.md, "Who may say
 * what"): each is counted in paliflow_refused_messages_total{component, type, reason} and logged as a
 * warning naming the sender (routing id, address, CURVE key), at most once per RATE seconds per
 * (type, reason) with the number left unsaid since, so a peer flooding forged messages cannot flood the log.
 *
 * One pf_refusals per role thread (not thread-safe: producer and sink each own theirs).
 */
#ifndef PF_PROTO_REFUSAL_H
#define PF_PROTO_REFUSAL_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "base/metrics.h"

#define PF_REFUSAL_KINDS 32
#define PF_REFUSAL_LOG_EVERY_S 10.0

/* Who sent a message, for a log line: "routing id W (address 127.0.0.1, key Z85)". */
typedef struct pf_peer_desc {
    char text[1536];
    char key[64];        /* the CURVE key the ZAP handler admitted ("" without CURVE) */
} pf_peer_desc;

/* From a received frame (its ZeroMQ metadata: Peer-Address, User-Id) and the routing id, if any. FRAME may be
 * NULL (nothing but the routing id is known then). */
void pf_peer_describe(zmq_msg_t *frame, const uint8_t *ident, size_t ident_len, pf_peer_desc *out);

typedef struct pf_refusal_kind {
    char type[16], reason[32];
    pf_metric *metric;
    double last_log;
    int64_t count;
    int64_t unsaid;      /* refusals of this kind not logged since last_log */
} pf_refusal_kind;

typedef struct pf_refusals {
    const char *component;   /* "producer", "sink": the log component and the metric label */
    pf_refusal_kind kinds[PF_REFUSAL_KINDS];
    int n;
    int64_t total;
} pf_refusals;

void pf_refusals_init(pf_refusals *r, const char *component);
/* Count and (rate-limited) log one refused message of TYPE for REASON (a short metric label such as
 * "not_sink"), from FROM; the log line says "<component>: refused <type> from <from>: <detail>". Reasons are
 * code constants, never peer text, so the metric's label set stays bounded. */
void pf_refuse(pf_refusals *r, const char *type, const char *reason, const pf_peer_desc *from, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Say how many refusals went unlogged in each kind's window once the window is over (call now and then: a
 * flood that stops still gets its count logged). */
void pf_refusals_tick(pf_refusals *r);
/* Refusals counted so far for (TYPE, REASON) (NULL matches any), for tests and summaries. */
int64_t pf_refusals_count(const pf_refusals *r, const char *type, const char *reason);

#endif
