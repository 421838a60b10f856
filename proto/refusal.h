/* refusal.h - messages a role drops because their sender may not say them (PROTOCOL.md, "Who may say
 * what"): each is counted in paliflow_refused_messages_total{component, type, reason} and logged as a
 * warning naming the sender (routing id, address, CURVE key). The log goes through base/log.h's rate limit
 * (pf_log_limited: per (type, reason), a bucket per sender and one for them all, the number left unsaid on
 * the next line), the one every message an outsider can trigger takes, so a peer flooding forged messages
 * cannot flood the log nor hide another peer's refusals.
 *
 * One pf_refusals per role thread (not thread-safe: producer and sink each own theirs).
 */
#ifndef PF_PROTO_REFUSAL_H
#define PF_PROTO_REFUSAL_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "base/log.h"
#include "base/metrics.h"

#define PF_REFUSAL_KINDS 32

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
    int64_t count;
    pf_log_limit log;    /* this kind's log lines, keyed by sender */
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
/* Count one refused message of TYPE for REASON without a log line: for what is expected to arrive now and then
 * (messages a peer addressed to a previous run of the producer, still queued when it restarted). */
void pf_refuse_count(pf_refusals *r, const char *type, const char *reason);
/* Say how many refusals went unlogged, for each kind and sender whose rate allows a line again (call now and
 * then: a flood that stops still gets its count logged; pf_log_limit_flush). */
void pf_refusals_tick(pf_refusals *r);
/* Refusals counted so far for (TYPE, REASON) (NULL matches any), for tests and summaries. */
int64_t pf_refusals_count(const pf_refusals *r, const char *type, const char *reason);

#endif
