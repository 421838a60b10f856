/* refusal.c - see refusal.h. */
#include "proto/refusal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "proto/wire.h"

void pf_peer_describe(zmq_msg_t *frame, const uint8_t *ident, size_t ident_len, pf_peer_desc *out)
{
    char id[1100] = "";
    if (ident && ident_len)
        pf_wire_ident_str(ident, ident_len, id, sizeof id);
    /* Both properties are connection metadata libzmq attaches to every frame: Peer-Address on tcp and ipc
     * connections, User-Id when a ZAP handler admitted the peer (ours answers with the CURVE key). */
    const char *addr = frame ? zmq_msg_gets(frame, "Peer-Address") : NULL;
    const char *user = frame ? zmq_msg_gets(frame, "User-Id") : NULL;
    snprintf(out->key, sizeof out->key, "%s", user ? user : "");
    snprintf(out->text, sizeof out->text, "%s%s%s (address %s, key %s)", id[0] ? "routing id " : "", id,
             id[0] ? "" : "the peer", addr && *addr ? addr : "local", user && *user ? user : "none");
}

void pf_refusals_init(pf_refusals *r, const char *component)
{
    memset(r, 0, sizeof *r);
    r->component = component;
}

static pf_refusal_kind *kind_of(pf_refusals *r, const char *type, const char *reason)
{
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->kinds[i].type, type) && !strcmp(r->kinds[i].reason, reason))
            return &r->kinds[i];
    if (r->n == PF_REFUSAL_KINDS)   /* cannot happen with the code's constants; the last slot absorbs */
        return &r->kinds[PF_REFUSAL_KINDS - 1];
    pf_refusal_kind *k = &r->kinds[r->n++];
    snprintf(k->type, sizeof k->type, "%s", type);
    snprintf(k->reason, sizeof k->reason, "%s", reason);
    char labels[160];
    snprintf(labels, sizeof labels, "component=\"%s\",type=\"%s\",reason=\"%s\"", r->component, k->type, k->reason);
    k->metric = pf_counter("paliflow_refused_messages_total", labels,
                           "Messages dropped because their sender may not send them (PROTOCOL.md, Who may say what)");
    return k;
}

static pf_refusal_kind *count(pf_refusals *r, const char *type, const char *reason)
{
    pf_refusal_kind *k = kind_of(r, type, reason);
    pf_metric_add(k->metric, 1);
    k->count++;
    r->total++;
    return k;
}

void pf_refuse_count(pf_refusals *r, const char *type, const char *reason) { count(r, type, reason); }

void pf_refuse(pf_refusals *r, const char *type, const char *reason, const pf_peer_desc *from, const char *fmt, ...)
{
    pf_refusal_kind *k = count(r, type, reason);
    char detail[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    /* Keyed by the sender's description: one forging peer uses up its own bucket, not another's. */
    pf_log_limited(&k->log, from ? from->text : NULL, PF_LOG_WARN, r->component, "refused %s from %s: %s [%s]",
                   type, from ? from->text : "an unknown peer", detail, reason);
}

void pf_refusals_tick(pf_refusals *r)
{
    for (int i = 0; i < r->n; i++) {
        pf_refusal_kind *k = &r->kinds[i];
        char what[80];
        snprintf(what, sizeof what, "refused %s messages [%s]", k->type, k->reason);
        pf_log_limit_flush(&k->log, PF_LOG_WARN, r->component, what);
    }
}

int64_t pf_refusals_count(const pf_refusals *r, const char *type, const char *reason)
{
    int64_t n = 0;
    for (int i = 0; i < r->n; i++)
        if ((!type || !strcmp(r->kinds[i].type, type)) && (!reason || !strcmp(r->kinds[i].reason, reason)))
            n += r->kinds[i].count;
    return n;
}
