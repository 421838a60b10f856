/* paliflow keygen: make a CURVE key pair (czmq-style certificate files) for secure transport. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/optable.h"
#include "cli/commands.h"
#include "proto/security.h"

typedef struct keygen_cli {
    const char *out, *name, *show;
    int force;
} keygen_cli;

static void keygen_init(void *obj)
{
    *(keygen_cli *)obj = (keygen_cli){0};
}

#define T keygen_cli
static const pf_opt g_rows[] = {
    PF_OPT_ROW_STR("out", T, out, PF_OPT_NONEMPTY, "FILE",
                   "where to write (FILE and FILE_secret); existing files are kept unless --force"),
    PF_OPT_ROW_STR("name", T, name, PF_OPT_NO_DEFAULT, "NAME",
                   "a name stored in the certificates (shown in logs when the key connects)"),
    PF_OPT_ROW_FLAG("force", T, force, 0, "replace existing files"),
    PF_OPT_ROW_STR("show", T, show, PF_OPT_NONEMPTY, "FILE",
                   "print the public key of a certificate (public or secret) and exit"),
    PF_OPT_END,
};
#undef T

static const pf_optcmd g_cmd = {
    .name = "keygen",
    .synopsis = "usage: paliflow keygen --out FILE [--name NAME] [--force]\n"
                "       paliflow keygen --show FILE\n"
                "\n"
                "Make a CURVE key pair for paliflow's encrypted and authenticated transport (ZeroMQ CURVE,\n"
                "Curve25519).\n"
                "Writes two certificate files in ZeroMQ's (czmq) format:\n"
                "  FILE          the public certificate (mode 0644): hand it to the other side\n"
                "  FILE_secret   the secret certificate (mode 0600): never leaves this machine\n"
                "A server (producer, sink) takes its FILE_secret with --curve-server-key and the public files of\n"
                "its clients with --curve-allow (a directory of them, or one file); a client (worker) takes its\n"
                "FILE_secret with --curve-client-key and the server's public FILE with --curve-server-public.\n"
                "\n",
    .opts = g_rows,
    .size = sizeof(keygen_cli),
    .init = keygen_init,
};

int cmd_keygen(int argc, char **argv)
{
    keygen_cli o;
    keygen_init(&o);
    int pr = pf_opt_parse(&g_cmd, &o, argc, argv, NULL, 0);
    if (pr)
        return pr == 1 ? 0 : 2;
    const char *out = o.out, *name = o.name, *show = o.show;
    int force = o.force;
    pf_err err = {{0}};
    if (show) {
        pf_keypair kp;
        if (pf_cert_load(show, &kp, 0, &err)) {
            fprintf(stderr, "paliflow keygen: %s\n", err.msg);
            return 2;
        }
        printf("%s\n", kp.public_key);
        return 0;
    }
    if (!out) {
        fprintf(stderr, "paliflow keygen: --out FILE is required\n");
        goto bad;
    }
    if (name && (strlen(name) >= sizeof(((pf_keypair *)0)->name) || strpbrk(name, "\"\n\\"))) {
        fprintf(stderr, "paliflow keygen: --name: at most 63 characters, no quotes, backslashes or newlines\n");
        goto bad;
    }
    pf_keypair kp;
    if (pf_keypair_generate(&kp, &err)) {
        fprintf(stderr, "paliflow keygen: %s\n", err.msg);
        return 2;
    }
    if (name)
        snprintf(kp.name, sizeof kp.name, "%s", name);
    if (pf_cert_save(out, &kp, force, &err)) {
        fprintf(stderr, "paliflow keygen: %s\n", err.msg);
        return 2;
    }
    memset(kp.secret_key, 0, sizeof kp.secret_key);
    fprintf(stderr, "paliflow keygen: wrote %s (public) and %s_secret (secret, mode 0600)\n", out, out);
    printf("%s\n", kp.public_key);
    return 0;
bad:
    fprintf(stderr, "Run 'paliflow keygen --help' for the options.\n");
    return 2;
}
