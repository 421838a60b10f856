/* curve_keys.c - CURVE key pairs, czmq-style certificate files and allow-lists (see security.h). */
#include "proto/security.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

#define LOG "security"
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
