/* paliflow keygen: make a CURVE key pair (czmq-style certificate files) for secure transport. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "proto/security.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: paliflow keygen --out FILE [--name NAME] [--force]\n"
            "       paliflow keygen --show FILE\n"
            "\n"
            "Make a CURVE key pair for paliflow's encrypted and authenticated transport (ZeroMQ CURVE, Curve25519).\n"
            "Writes two certificate files in ZeroMQ's (czmq) format:\n"
            "  FILE          the public certificate (mode 0644): hand it to the other side\n"
            "  FILE_secret   the secret certificate (mode 0600): never leaves this machine\n"
            "A server (producer, sink) takes its FILE_secret with --curve-server-key and the public files of its\n"
            "clients with --curve-allow (a directory of them, or one file); a client (worker) takes its FILE_secret\n"
            "with --curve-client-key and the server's public FILE with --curve-server-public.\n"
            "\n"
            "  --out FILE       where to write (FILE and FILE_secret); existing files are kept unless --force\n"
            "  --name NAME      a name stored in the certificates (shown in logs when the key connects)\n"
            "  --force          replace existing files\n"
            "  --show FILE      print the public key of a certificate (public or secret) and exit\n"
            "  --config FILE    options from FILE, 'name = value' lines (the command line wins)\n"
            "  --help           this text\n");
}

int cmd_keygen(int argc, char **argv)
{
    static const struct option opts[] = {{"out", required_argument, 0, 'o'}, {"name", required_argument, 0, 'n'},
                                         {"force", no_argument, 0, 'f'},      {"show", required_argument, 0, 's'},
                                         {"help", no_argument, 0, 'h'},       {0, 0, 0, 0}};
    const char *out = NULL, *name = NULL, *show = NULL;
    int force = 0, c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'n': name = optarg; break;
        case 'f': force = 1; break;
        case 's': show = optarg; break;
        case 'h': usage(stdout); return 0;
        default: goto bad;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "paliflow keygen: unexpected argument '%s'\n", argv[optind]);
        goto bad;
    }
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
