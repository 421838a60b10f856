/* security.h - CURVE encryption and authentication on every network endpoint (PROTOCOL.md, "Security").
 *
 * Key pairs are ZeroMQ CURVE keys (Curve25519) in Z85 text, kept in czmq-style certificate files
 * (`paliflow keygen --out NAME.key` writes NAME.key with the public key and NAME.key_secret, mode 0600,
 * with both halves):
 *
 *     metadata
 *         name = "worker-b"
 *     curve
 *         public-key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
 *         secret-key = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"
 *
 * The binding roles (producer, sink) are CURVE servers: their secret key from --curve-server-key, and an
 * allow-list of client public keys (--curve-allow: a certificate file, a directory of public certificate
 * files, or a text file with one Z85 key per line). A ZAP handler (ZeroMQ's RFC 27, on
 * inproc://zeromq.zap.01 in the role's context) admits a client only if its key is on the list (or is the
 * server's own public key: the sink sharing the hub's key pair) and logs every refusal. The connecting
 * roles are CURVE clients: --curve-client-key (their pair) and --curve-server-public (the producer's public
 * key, and the sink's unless --curve-sink-public says otherwise).
 *
 * Network endpoints (anything but ipc:// and inproc://) need keys; plain tcp only with --insecure.
 */
#ifndef PF_PROTO_SECURITY_H
#define PF_PROTO_SECURITY_H

#include <stddef.h>

#include "base/err.h"

#define PF_Z85_KEY_LEN 40

typedef struct pf_keypair {
    char public_key[PF_Z85_KEY_LEN + 1];
    char secret_key[PF_Z85_KEY_LEN + 1];   /* "" when only the public half is known */
    char name[64];                          /* metadata name, "" if none */
} pf_keypair;

/* A fresh key pair (libzmq's zmq_curve_keypair, from the system's CSPRNG). */
int pf_keypair_generate(pf_keypair *kp, pf_err *err);
/* Check a Z85 key: 40 characters of the Z85 alphabet. */
int pf_z85_key_valid(const char *s);

/* Write PATH (public certificate, mode 0644) and PATH_secret (both halves, mode 0600, created exclusively
 * unless FORCE). Nothing is written when either file exists and !FORCE. */
int pf_cert_save(const char *path, const pf_keypair *kp, int force, pf_err *err);
/* Read a certificate file. NEED_SECRET: the file must hold the secret key too (and a warning is logged if
 * other users may read it). */
int pf_cert_load(const char *path, pf_keypair *kp, int need_secret, pf_err *err);
/* A public key given as a literal Z85 key or as a file (certificate or a file holding the key). */
int pf_public_key_arg(const char *arg, char out[PF_Z85_KEY_LEN + 1], pf_err *err);

/* The allowed client keys. */
typedef struct pf_allowlist {
    char (*keys)[PF_Z85_KEY_LEN + 1];
    char (*names)[64];
    size_t n, cap;
} pf_allowlist;

/* PATH: a directory (every regular file in it that is a public certificate or a key list; *_secret files
 * are skipped), or one file. An empty list is allowed (only the server's own key then gets in). */
int pf_allowlist_load(const char *path, pf_allowlist *out, pf_err *err);
void pf_allowlist_free(pf_allowlist *a);
/* Index of KEY (Z85), or -1. */
int pf_allowlist_find(const pf_allowlist *a, const char *key);

/* A process's security settings: what --curve-* / --insecure said, and the keys they name. */
typedef struct pf_security {
    const char *server_key_file;    /* --curve-server-key: this server's certificate (with the secret) */
    const char *client_key_file;    /* --curve-client-key: this client's certificate (with the secret) */
    const char *allow_path;         /* --curve-allow */
    const char *server_public_arg;  /* --curve-server-public: the producer's (and sink's) public key */
    const char *sink_public_arg;    /* --curve-sink-public: the sink's, when it has its own pair */
    int insecure;                   /* --insecure: plain tcp is allowed */
    /* filled by pf_security_load */
    int loaded;
    int have_server, have_client;
    pf_keypair server, client;
    char server_public[PF_Z85_KEY_LEN + 1], sink_public[PF_Z85_KEY_LEN + 1];
} pf_security;

/* Load the key files named. A server key without an allow-list is refused (that would be encryption
 * without authentication); a client key without the server's public key too. Without a client key, a
 * server key doubles as the client key (the sink on the hub), and the server's own public key is the
 * default server public key. */
int pf_security_load(pf_security *s, pf_err *err);

/* 1 for endpoints that cross a network (tcp://, pgm://, ws://, ...); 0 for ipc:// and inproc://. */
int pf_endpoint_is_network(const char *endpoint);

/* Would binding/connecting this endpoint be allowed? (network endpoints need keys, or --insecure.)
 * S may be NULL: no security settings at all (library use: plain sockets). WHAT names the flag in
 * messages ("--bind"). */
int pf_security_check_bind(const pf_security *s, const char *what, const char *endpoint, pf_err *err);
int pf_security_check_connect(const pf_security *s, const char *what, const char *endpoint, pf_err *err);

/* Make SOCK a CURVE server (network endpoint and a server key) and bind; plain otherwise (after the
 * check above). A CURVE server socket refuses clients when no ZAP handler answers (enforced domain). */
int pf_secure_bind(void *sock, const char *endpoint, const pf_security *s, pf_err *err);
/* Make SOCK a CURVE client of SERVER_PUBLIC (when the endpoint is a network one and keys are loaded) and
 * connect. */
int pf_secure_connect(void *sock, const char *endpoint, const pf_security *s, const char *server_public,
                      pf_err *err);
/* True when S asks for CURVE on a bind of ENDPOINT (the caller then needs a ZAP handler first). */
int pf_security_curve_bind(const pf_security *s, const char *endpoint);

/* The ZAP handler: a thread answering the authentication requests of every CURVE server socket in CTX.
 * Start it before binding. OWN_PUBLIC (may be NULL) is always allowed. */
typedef struct pf_zap pf_zap;
int pf_zap_start(void *ctx, const char *allow_path, const char *own_public, pf_zap **out, pf_err *err);
/* Re-read the allow-list (SIGHUP). On error the old list stays. */
int pf_zap_reload(pf_zap *z, const char *allow_path, pf_err *err);
void pf_zap_stop(pf_zap *z);

/* Watch a connecting socket for handshake failures (the server refused our key, a wrong server key) and
 * log them, rate-limited, naming PEER ("producer tcp://hub:5555"). libzmq does not reconnect after a failed
 * handshake, so the watch reconnects ENDPOINT itself after a pause (1 s, doubling up to 30 s): a key the
 * server allows later gets in without a restart. Start it before connecting; poll it from the socket's
 * thread. */
typedef struct pf_sock_watch pf_sock_watch;
pf_sock_watch *pf_sock_watch_start(void *ctx, void *sock, const char *endpoint, const char *peer);
void pf_sock_watch_poll(pf_sock_watch *w);
void pf_sock_watch_stop(pf_sock_watch *w);


#endif
