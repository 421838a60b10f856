/* security.c - see security.h. */
#include "proto/security.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "base/file.h"
#include "base/log.h"
#include "base/metrics.h"

#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93   /* libzmq >= 4.3 (draft API in its header, present in the library) */
#endif

#define LOG "security"
#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_DOMAIN "paliflow"
#define MAX_KEY_FILE (64 << 10)
#define MAX_ALLOW_FILES 100000

static const char g_z85[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

int pf_z85_key_valid(const char *s)
{
    if (!s || strlen(s) != PF_Z85_KEY_LEN)
        return 0;
    for (const char *p = s; *p; p++)
        if (!strchr(g_z85, *p))
            return 0;
    /* Z85 of 32 bytes: every 5-char group decodes to a 32-bit value (85^5 > 2^32). */
    uint8_t raw[32];
    return zmq_z85_decode(raw, s) != NULL;
}

int pf_keypair_generate(pf_keypair *kp, pf_err *err)
{
    memset(kp, 0, sizeof *kp);
    if (zmq_curve_keypair(kp->public_key, kp->secret_key) != 0)
        return pf_errf(err, "zmq_curve_keypair: %s (libzmq built without CURVE?)", zmq_strerror(errno));
    return 0;
}

/* ---------- certificate files ---------- */

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\r')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* "name = value" or "name = \"value\"" -> value (in place), or NULL if the line is not NAME. */
static char *zpl_value(char *line, const char *name)
{
    size_t nl = strlen(name);
    if (strncmp(line, name, nl) != 0)
        return NULL;
    char *p = line + nl;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p != '=')
        return NULL;
    p = trim(p + 1);
    size_t n = strlen(p);
    if (n >= 2 && ((p[0] == '"' && p[n - 1] == '"') || (p[0] == '\'' && p[n - 1] == '\''))) {
        p[n - 1] = '\0';
        p++;
    }
    return p;
}

static void write_header(FILE *f, int secret)
{
    time_t t = time(NULL);
    struct tm tm;
    char when[64];
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
    fprintf(f, "#   ****  Generated on %s by paliflow keygen  ****\n", when);
    if (secret)
        fprintf(f, "#   ZeroMQ CURVE **Secret** Certificate\n"
                   "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\n");
    else
        fprintf(f, "#   ZeroMQ CURVE Public Certificate\n"
                   "#   Exchange securely, or use a secure mechanism to verify the contents\n"
                   "#   of this file after exchange (compare the public-key line).\n\n");
}

static int write_cert(const char *path, const pf_keypair *kp, int secret, int force, pf_err *err)
{
    if (force && unlink(path) != 0 && errno != ENOENT)
        return pf_errf(err, "%s: cannot replace: %s", path, strerror(errno));
    mode_t mode = secret ? 0600 : 0644;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return pf_errf(err, "%s: %s%s", path, strerror(errno), errno == EEXIST ? " (--force replaces it)" : "");
    if (fchmod(fd, mode) != 0) {   /* whatever the umask says */
        int e = errno;
        close(fd);
        unlink(path);
        return pf_errf(err, "%s: chmod: %s", path, strerror(e));
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(path);
        return pf_errf(err, "%s: %s", path, strerror(errno));
    }
    write_header(f, secret);
    fprintf(f, "metadata\n");
    if (kp->name[0])
        fprintf(f, "    name = \"%s\"\n", kp->name);
    fprintf(f, "curve\n    public-key = \"%s\"\n", kp->public_key);
    if (secret)
        fprintf(f, "    secret-key = \"%s\"\n", kp->secret_key);
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad) {
        unlink(path);
        return pf_errf(err, "%s: write failed", path);
    }
    return 0;
}

int pf_cert_save(const char *path, const pf_keypair *kp, int force, pf_err *err)
{
    if (!pf_z85_key_valid(kp->public_key) || !pf_z85_key_valid(kp->secret_key))
        return pf_errf(err, "%s: not a valid key pair", path);
    size_t n = strlen(path) + 8;
    char *spath = malloc(n);
    if (!spath)
        return pf_errf(err, "out of memory");
    snprintf(spath, n, "%s_secret", path);
    struct stat st;
    if (!force && (lstat(path, &st) == 0 || lstat(spath, &st) == 0)) {
        pf_errf(err, "%s: exists already (--force replaces it)", lstat(path, &st) == 0 ? path : spath);
        free(spath);
        return -1;
    }
    int rc = write_cert(spath, kp, 1, force, err);
    if (rc == 0 && write_cert(path, kp, 0, force, err) != 0) {
        unlink(spath);
        rc = -1;
    }
    free(spath);
    return rc;
}

/* Parse a certificate file's text. Keys that are present must be valid. */
static int parse_cert(const char *path, char *text, pf_keypair *kp, pf_err *err)
{
    memset(kp, 0, sizeof *kp);
    int lineno = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char *l = trim(line), *v;
        if (!*l || *l == '#')
            continue;
        if ((v = zpl_value(l, "public-key"))) {
            if (!pf_z85_key_valid(v))
                return pf_errf(err, "%s: line %d: public-key is not a 40-character Z85 key", path, lineno);
            snprintf(kp->public_key, sizeof kp->public_key, "%s", v);
        } else if ((v = zpl_value(l, "secret-key"))) {
            if (!pf_z85_key_valid(v))
                return pf_errf(err, "%s: line %d: secret-key is not a 40-character Z85 key", path, lineno);
            snprintf(kp->secret_key, sizeof kp->secret_key, "%s", v);
        } else if ((v = zpl_value(l, "name"))) {
            snprintf(kp->name, sizeof kp->name, "%s", v);
        }
    }
    return 0;
}

int pf_cert_load(const char *path, pf_keypair *kp, int need_secret, pf_err *err)
{
    char *text;
    size_t len;
    if (pf_read_file(path, MAX_KEY_FILE, &text, &len, err))
        return -1;
    int rc = parse_cert(path, text, kp, err);
    free(text);
    if (rc)
        return -1;
    if (!kp->public_key[0])
        return pf_errf(err, "%s: no public-key in this file (not a CURVE certificate)", path);
    if (need_secret) {
        if (!kp->secret_key[0])
            return pf_errf(err, "%s: no secret-key in this file (give the _secret certificate)", path);
        char pub[PF_Z85_KEY_LEN + 1];
        if (zmq_curve_public(pub, kp->secret_key) != 0 || strcmp(pub, kp->public_key) != 0)
            return pf_errf(err, "%s: the public-key does not belong to the secret-key", path);
        struct stat st;
        if (stat(path, &st) == 0 && (st.st_mode & 0007))
            pf_warn(LOG, "%s: secret key file is readable by other users (chmod 600 it)", path);
    }
    return 0;
}

int pf_public_key_arg(const char *arg, char out[PF_Z85_KEY_LEN + 1], pf_err *err)
{
    struct stat st;
    int exists = stat(arg, &st) == 0;
    if (!exists && pf_z85_key_valid(arg)) {
        snprintf(out, PF_Z85_KEY_LEN + 1, "%s", arg);
        return 0;
    }
    pf_allowlist a = {0};
    if (pf_allowlist_load(arg, &a, err))
        return -1;
    int rc = 0;
    if (a.n != 1 || (exists && S_ISDIR(st.st_mode)))
        rc = pf_errf(err, "%s: want one public key (a certificate file or a 40-character Z85 key), found %zu", arg,
                     a.n);
    else
        snprintf(out, PF_Z85_KEY_LEN + 1, "%s", a.keys[0]);
    pf_allowlist_free(&a);
    return rc;
}

/* ---------- allow-lists ---------- */

static int allow_add(pf_allowlist *a, const char *key, const char *name)
{
    if (pf_allowlist_find(a, key) >= 0)
        return 0;
    if (a->n == a->cap) {
        size_t nc = a->cap ? 2 * a->cap : 16;
        char(*nk)[PF_Z85_KEY_LEN + 1] = realloc(a->keys, nc * sizeof *nk);
        if (!nk)
            return -1;
        a->keys = nk;
        char(*nn)[64] = realloc(a->names, nc * sizeof *nn);
        if (!nn)
            return -1;
        a->names = nn;
        a->cap = nc;
    }
    snprintf(a->keys[a->n], sizeof a->keys[a->n], "%s", key);
    snprintf(a->names[a->n], sizeof a->names[a->n], "%s", name ? name : "");
    a->n++;
    return 0;
}

/* One file: a certificate (public-key = ...) or a list (a Z85 key per line, optional name after it). */
static int allow_file(pf_allowlist *a, const char *path, const char *fallback_name, pf_err *err)
{
    char *text;
    size_t len;
    if (pf_read_file(path, 16u << 20, &text, &len, err))
        return -1;
    if (strstr(text, "public-key")) {
        pf_keypair kp;
        int rc = parse_cert(path, text, &kp, err);
        free(text);
        if (rc)
            return -1;
        if (!kp.public_key[0])
            return pf_errf(err, "%s: no public-key", path);
        if (kp.secret_key[0])
            pf_warn(LOG, "%s: holds a secret key; an allow-list needs only public certificates", path);
        if (allow_add(a, kp.public_key, kp.name[0] ? kp.name : fallback_name))
            return pf_errf(err, "out of memory");
        return 0;
    }
    int lineno = 0, rc = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char *l = trim(line);
        if (!*l)
            continue;
        /* '#' is a Z85 digit, but 84 * 85^4 > 2^32: no valid key starts with it, so '#' lines are comments. */
        char *sp = l + strcspn(l, " \t");
        char c = *sp;
        *sp = '\0';
        char *k = l;
        size_t kl = strlen(k);
        if (kl == PF_Z85_KEY_LEN + 2 && k[0] == '"' && k[kl - 1] == '"') {
            k[kl - 1] = '\0';
            k++;
        }
        if (pf_z85_key_valid(k)) {
            const char *name = c ? trim(sp + 1) : fallback_name;
            if (allow_add(a, k, name)) {
                rc = pf_errf(err, "out of memory");
                break;
            }
            continue;
        }
        if (*l == '#')
            continue;
        rc = pf_errf(err, "%s: line %d: not a 40-character Z85 public key", path, lineno);
        break;
    }
    free(text);
    return rc;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int pf_allowlist_load(const char *path, pf_allowlist *out, pf_err *err)
{
    memset(out, 0, sizeof *out);
    struct stat st;
    if (stat(path, &st) != 0)
        return pf_errf(err, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return allow_file(out, path, "", err) ? (pf_allowlist_free(out), -1) : 0;
    /* Sorted for stable logs; hidden files and *_secret certificates are skipped (k8s Secret volumes put
     * their real files under ..data and link them: links to regular files are followed). */
    struct dirent **names = NULL;
    int n = scandir(path, &names, NULL, alphasort);
    if (n < 0)
        return pf_errf(err, "%s: %s", path, strerror(errno));
    int rc = 0;
    for (int i = 0; i < n; i++) {
        const char *nm = names[i]->d_name;
        if (rc == 0 && nm[0] != '.' && !ends_with(nm, "_secret") && i < MAX_ALLOW_FILES) {
            char *p = pf_path_join(path, nm);
            struct stat fs;
            if (!p)
                rc = pf_errf(err, "out of memory");
            else if (stat(p, &fs) == 0 && S_ISREG(fs.st_mode)) {
                char fallback[64];   /* the file name without its extension names the key */
                size_t fl = strcspn(nm, ".");
                fl = fl < sizeof fallback - 1 ? fl : sizeof fallback - 1;
                memcpy(fallback, nm, fl);
                fallback[fl] = '\0';
                rc = allow_file(out, p, fallback, err);
            }
            free(p);
        }
        free(names[i]);
    }
    free(names);
    if (rc)
        pf_allowlist_free(out);
    return rc;
}

void pf_allowlist_free(pf_allowlist *a)
{
    free(a->keys);
    free(a->names);
    memset(a, 0, sizeof *a);
}

int pf_allowlist_find(const pf_allowlist *a, const char *key)
{
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->keys[i], key) == 0)
            return (int)i;
    return -1;
}

/* ---------- options ---------- */

int pf_security_option(const char *name, const char *val, pf_security *s, pf_err *err)
{
    if (!strcmp(name, "insecure")) {
        s->insecure = 1;
        return 1;
    }
    const char **dst = !strcmp(name, "curve-server-key")      ? &s->server_key_file
                       : !strcmp(name, "curve-client-key")    ? &s->client_key_file
                       : !strcmp(name, "curve-allow")         ? &s->allow_path
                       : !strcmp(name, "curve-server-public") ? &s->server_public_arg
                       : !strcmp(name, "curve-sink-public")   ? &s->sink_public_arg
                                                              : NULL;
    if (!dst)
        return 0;
    if (!val || !*val)
        return pf_errf(err, "--%s: needs a value", name);
    *dst = val;
    return 1;
}

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
                zap_reply(z->sock, &f[1], "200", "OK", user[0] ? user : key);
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
