/* zap.c - the ZAP handler (RFC 27) that admits CURVE clients by their public key, and the client-side
 * handshake watch (see security.h). */
#include "proto/security.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "base/file.h"
#include "base/log.h"
#include "base/metrics.h"

#define LOG "security"
#define ZAP_ENDPOINT "inproc://zeromq.zap.01"

/* ---------- the ZAP handler ---------- */

#define SEEN_SLOTS 64

typedef struct seen_key {
    char key[PF_Z85_KEY_LEN + 1];
    double last_log;
    long suppressed;
} seen_key;

struct pf_zap {
    void *sock;
    pthread_t th;
    int started;
    atomic_int stop;
    pthread_mutex_t mu;     /* guards list and own */
    pf_allowlist list;
    char own[PF_Z85_KEY_LEN + 1];
    seen_key seen[SEEN_SLOTS];
    pf_metric *m_allowed, *m_refused;
};

/* Log a refusal at most every 30 s per key, with the count of those not logged. */
static void log_refusal(pf_zap *z, const char *key, const char *address, const char *mechanism)
{
    double now = pf_now();
    seen_key *slot = NULL, *oldest = &z->seen[0];
    for (int i = 0; i < SEEN_SLOTS; i++) {
        if (strcmp(z->seen[i].key, key) == 0) {
            slot = &z->seen[i];
            break;
        }
        if (z->seen[i].last_log < oldest->last_log)
            oldest = &z->seen[i];
    }
    if (!slot) {
        slot = oldest;
        memset(slot, 0, sizeof *slot);
        snprintf(slot->key, sizeof slot->key, "%s", key);
        slot->last_log = -1e9;
    }
    if (now - slot->last_log < 30) {
        slot->suppressed++;
        return;
    }
    if (!strcmp(mechanism, "CURVE"))
        pf_warn(LOG, "refused a connection from %s: CURVE client key %s is not in the allow-list%s", address, key,
                slot->suppressed ? " (and more refusals of it since the last message)" : "");
    else
        pf_warn(LOG, "refused a connection from %s: mechanism %s is not allowed (CURVE only)", address, mechanism);
    slot->last_log = now;
    slot->suppressed = 0;
}

static void zap_reply(void *sock, const zmq_msg_t *req_id, const char *code, const char *text, const char *user)
{
    zmq_send(sock, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(sock, zmq_msg_data((zmq_msg_t *)req_id), zmq_msg_size((zmq_msg_t *)req_id), ZMQ_SNDMORE);
    zmq_send(sock, code, strlen(code), ZMQ_SNDMORE);
    zmq_send(sock, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(sock, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(sock, "", 0, 0);
}

static void frame_str(zmq_msg_t *m, char *out, size_t cap)
{
    size_t n = zmq_msg_size(m) < cap - 1 ? zmq_msg_size(m) : cap - 1;
    memcpy(out, zmq_msg_data(m), n);
    out[n] = '\0';
    for (size_t i = 0; i < n; i++)   /* for logs: printable only */
        if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] >= 0x7f)
            out[i] = '?';
}

static void zap_handle(pf_zap *z)
{
    enum { MAXF = 8 };
    zmq_msg_t f[MAXF];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t tmp;
        zmq_msg_init(&tmp);
        if (zmq_msg_recv(&tmp, z->sock, 0) < 0) {
            zmq_msg_close(&tmp);
            break;
        }
        more = zmq_msg_more(&tmp);
        if (n < MAXF)
            f[n++] = tmp;
        else
            zmq_msg_close(&tmp);
    }
    /* version, request id, domain, address, routing id, mechanism, credentials... */
    if (n >= 6) {
        char version[8], mechanism[16], address[64];
        frame_str(&f[0], version, sizeof version);
        frame_str(&f[5], mechanism, sizeof mechanism);
        frame_str(&f[3], address, sizeof address);
        if (strcmp(version, "1.0") != 0) {
            zap_reply(z->sock, &f[1], "500", "unsupported ZAP version", "");
        } else if (!strcmp(mechanism, "CURVE") && n >= 7 && zmq_msg_size(&f[6]) == 32) {
            char key[PF_Z85_KEY_LEN + 1];
            zmq_z85_encode(key, zmq_msg_data(&f[6]), 32);
            pthread_mutex_lock(&z->mu);
            int idx = pf_allowlist_find(&z->list, key);
            int own = z->own[0] && strcmp(key, z->own) == 0;
            char user[64];
            snprintf(user, sizeof user, "%s", idx >= 0 ? z->list.names[idx] : own ? "server-key" : "");
            if (idx < 0 && !own)
                log_refusal(z, key, address, mechanism);
            pthread_mutex_unlock(&z->mu);
            if (idx >= 0 || own) {
                pf_debug(LOG, "admitted CURVE client %s%s%s from %s", key, user[0] ? " " : "", user, address);
                pf_metric_add(z->m_allowed, 1);
                /* The User-Id every frame of the connection carries is the key itself, not its allow-list
                 * name: the producer tells the sink which key holds a lease, and the two may name keys
                 * differently (PROTOCOL.md, "Who may say what"). */
                zap_reply(z->sock, &f[1], "200", "OK", key);
            } else {
                pf_metric_add(z->m_refused, 1);
                zap_reply(z->sock, &f[1], "400", "key not allowed", "");
            }
        } else if (!strcmp(mechanism, "NULL")) {
            /* only asked for sockets with a ZAP domain and no CURVE: local (ipc) endpoints */
            zap_reply(z->sock, &f[1], "200", "OK", "");
        } else {
            pthread_mutex_lock(&z->mu);
            log_refusal(z, mechanism, address, mechanism);
            pthread_mutex_unlock(&z->mu);
            pf_metric_add(z->m_refused, 1);
            zap_reply(z->sock, &f[1], "400", "mechanism not allowed", "");
        }
    } else {
        /* REP must answer every request; only libzmq talks to this inproc endpoint, so this is a bug guard */
        zmq_msg_t empty;
        zmq_msg_init(&empty);
        zap_reply(z->sock, n >= 2 ? &f[1] : &empty, "500", "malformed ZAP request", "");
        zmq_msg_close(&empty);
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&f[i]);
}

static void *zap_main(void *arg)
{
    pf_zap *z = arg;
    while (!atomic_load(&z->stop)) {
        zmq_pollitem_t it = {z->sock, 0, ZMQ_POLLIN, 0};
        int r = zmq_poll(&it, 1, 100);
        if (r < 0 && errno == ETERM)
            break;
        if (r > 0 && (it.revents & ZMQ_POLLIN))
            zap_handle(z);
    }
    zmq_close(z->sock);
    return NULL;
}

int pf_zap_start(void *ctx, const char *allow_path, const char *own_public, pf_zap **out, pf_err *err)
{
    *out = NULL;
    pf_zap *z = calloc(1, sizeof *z);
    if (!z)
        return pf_errf(err, "out of memory");
    pthread_mutex_init(&z->mu, NULL);
    atomic_init(&z->stop, 0);
    if (own_public)
        snprintf(z->own, sizeof z->own, "%s", own_public);
    if (allow_path && pf_allowlist_load(allow_path, &z->list, err)) {
        pthread_mutex_destroy(&z->mu);
        free(z);
        return pf_err_prefix(err, "--curve-allow");
    }
    z->m_allowed = pf_counter("paliflow_auth_total", "result=\"allowed\"", "CURVE clients admitted or refused");
    z->m_refused = pf_counter("paliflow_auth_total", "result=\"refused\"", "CURVE clients admitted or refused");
    z->sock = zmq_socket(ctx, ZMQ_REP);
    int linger = 0;
    int64_t maxmsg = 4096;   /* ZAP requests are a few short frames */
    if (!z->sock || zmq_setsockopt(z->sock, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_setsockopt(z->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) || zmq_bind(z->sock, ZAP_ENDPOINT) != 0) {
        pf_errf(err, "ZAP handler: %s", zmq_strerror(errno));
        if (z->sock)
            zmq_close(z->sock);
        pf_allowlist_free(&z->list);
        pthread_mutex_destroy(&z->mu);
        free(z);
        return -1;
    }
    if (pthread_create(&z->th, NULL, zap_main, z) != 0) {
        zmq_close(z->sock);
        pf_allowlist_free(&z->list);
        pthread_mutex_destroy(&z->mu);
        free(z);
        return pf_errf(err, "ZAP handler: cannot start its thread");
    }
    z->started = 1;
    pf_info(LOG, "CURVE on: %zu client keys allowed (%s)%s", z->list.n, allow_path ? allow_path : "-",
            z->own[0] ? " plus this server's own key" : "");
    *out = z;
    return 0;
}

int pf_zap_reload(pf_zap *z, const char *allow_path, pf_err *err)
{
    if (!z || !allow_path)
        return 0;
    pf_allowlist a;
    if (pf_allowlist_load(allow_path, &a, err))
        return pf_err_prefix(err, "--curve-allow");
    pthread_mutex_lock(&z->mu);
    pf_allowlist old = z->list;
    z->list = a;
    pthread_mutex_unlock(&z->mu);
    pf_info(LOG, "allow-list reloaded from %s: %zu client keys (was %zu); connections already admitted stay",
            allow_path, a.n, old.n);
    pf_allowlist_free(&old);
    return 0;
}

void pf_zap_stop(pf_zap *z)
{
    if (!z)
        return;
    atomic_store(&z->stop, 1);
    if (z->started)
        pthread_join(z->th, NULL);
    pf_allowlist_free(&z->list);
    pthread_mutex_destroy(&z->mu);
    free(z);
}

/* ---------- client-side handshake watch ---------- */

struct pf_sock_watch {
    void *sock, *pair;
    char peer[200], endpoint[256];
    double last_warn;
    long suppressed;
    int failing;
    double retry_at, backoff;   /* libzmq gives up on a refused handshake: we reconnect ourselves */
};

pf_sock_watch *pf_sock_watch_start(void *ctx, void *sock, const char *endpoint, const char *peer)
{
    static atomic_int seq;
    pf_sock_watch *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    char ep[96];
    snprintf(ep, sizeof ep, "inproc://paliflow-watch-%d-%d", (int)getpid(), atomic_fetch_add(&seq, 1));
    int events = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_SUCCEEDED;
    if (zmq_socket_monitor(sock, ep, events) != 0) {
        free(w);
        return NULL;
    }
    w->pair = zmq_socket(ctx, ZMQ_PAIR);
    int linger = 0;
    if (!w->pair || zmq_setsockopt(w->pair, ZMQ_LINGER, &linger, sizeof linger) || zmq_connect(w->pair, ep) != 0) {
        if (w->pair)
            zmq_close(w->pair);
        zmq_socket_monitor(sock, NULL, 0);
        free(w);
        return NULL;
    }
    w->sock = sock;
    snprintf(w->peer, sizeof w->peer, "%s", peer);
    snprintf(w->endpoint, sizeof w->endpoint, "%s", endpoint);
    w->last_warn = -1e9;
    w->backoff = 1;
    return w;
}

static void watch_warn(pf_sock_watch *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void watch_warn(pf_sock_watch *w, const char *fmt, ...)
{
    double now = pf_now();
    w->failing = 1;
    /* A refused or failed handshake ends libzmq's session for good (no automatic reconnect): try again
     * after a growing pause, so a key added to the server's allow-list later (SIGHUP) gets in. */
    if (!w->retry_at) {
        w->retry_at = now + w->backoff;
        w->backoff = w->backoff * 2 > 30 ? 30 : w->backoff * 2;
    }
    if (now - w->last_warn < 30) {
        w->suppressed++;
        return;
    }
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pf_warn(LOG, "%s: %s%s", w->peer, msg, w->suppressed ? " (repeated; retrying)" : "; retrying");
    w->last_warn = now;
    w->suppressed = 0;
}

void pf_sock_watch_poll(pf_sock_watch *w)
{
    if (!w)
        return;
    if (w->retry_at && pf_now() >= w->retry_at) {
        w->retry_at = 0;
        zmq_disconnect(w->sock, w->endpoint);
        if (zmq_connect(w->sock, w->endpoint) != 0)
            pf_warn(LOG, "%s: reconnect: %s", w->peer, zmq_strerror(errno));
    }
    for (int k = 0; k < 64; k++) {
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, w->pair, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            return;
        }
        zmq_msg_init(&addr);
        if (zmq_msg_more(&ev))
            zmq_msg_recv(&addr, w->pair, 0);
        if (zmq_msg_size(&ev) >= 6) {
            const uint8_t *d = zmq_msg_data(&ev);
            uint16_t event;
            uint32_t value;
            memcpy(&event, d, 2);
            memcpy(&value, d + 2, 4);
            if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
                watch_warn(w, "the server refused our CURVE key (ZAP status %u): is this client's public key in "
                              "the server's --curve-allow list?", value);
            else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
                watch_warn(w, "CURVE handshake failed (protocol error %#x): does --curve-server-public hold this "
                              "server's public key, and does the server use CURVE?", value);
            else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
                watch_warn(w, "handshake failed (%s): is --curve-server-public this server's key?",
                           zmq_strerror((int)value));
            else if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
                if (w->failing)
                    pf_info(LOG, "%s: secure handshake succeeded", w->peer);
                w->failing = 0;
                w->backoff = 1;
            }
        }
        zmq_msg_close(&addr);
        zmq_msg_close(&ev);
    }
}

void pf_sock_watch_stop(pf_sock_watch *w)
{
    if (!w)
        return;
    zmq_socket_monitor(w->sock, NULL, 0);
    zmq_close(w->pair);
    free(w);
}
