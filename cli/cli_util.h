/* cli_util.h - what the long-running commands share besides their option tables: SIGHUP reloads and
 * the stop/reload controls they hand their role. */
#ifndef PF_CLI_UTIL_H
#define PF_CLI_UTIL_H

#include <stddef.h>

#include "base/control.h"
#include "pipeline/service.h"

/* How many times --NAME (or --NAME=...) is on the command line ARGV itself, before --config expansion: a
 * repeatable option given there replaces the config file's values instead of adding to them
 * (pf_opt_list_keep_last). */
size_t cli_count_option(int argc, char **argv, const char *name);

/* SIGHUP in a long-running command: its command line is expanded again (with the --config file as it is
 * now) and handed to REPARSE(argc, argv, arg), which parses it into a fresh copy of the options and applies
 * what is safe to change mid-run; it returns 0, or -1 when it does not parse (nothing changed). */
typedef struct cli_reloader {
    int argc0;
    char **argv0;   /* as the command got them */
    int (*reparse)(int argc, char **argv, void *arg);
    void *arg;
} cli_reloader;

/* The roles' on_reload callback (pf_control.on_reload) with reload_arg a cli_reloader. Logs the reload and
 * its failures. */
void cli_reload(void *reloader);

/* Hand a role its controls: SIGTERM/SIGINT set *STOP (installed here); the service's SIGHUP flag asks for a
 * reload, which RELOADER carries out. */
void cli_control(pf_control *ctl, pf_service *svc, volatile sig_atomic_t *stop, cli_reloader *reloader);

#endif
