/* cli_util.h - small helpers shared by the subcommands. */
#ifndef PF_CLI_UTIL_H
#define PF_CLI_UTIL_H

#include <getopt.h>
#include <stdio.h>

#include "base/control.h"
#include "base/err.h"
#include "pipeline/service.h"

/* For subcommands that are not built yet: say so plainly (and which issue tracks it), exit 2. */
int cli_not_yet(const char *command, const char *tracking);

/* True if argv holds --help or -h. */
int cli_wants_help(int argc, char **argv);
/* How many times --NAME (or --NAME=...) is on the command line ARGV itself, before --config expansion: a
 * repeatable option given there replaces the config file's values instead of adding to them. */
size_t cli_count_option(int argc, char **argv, const char *name);

/* A command's option handler (base/option.h): NAME without dashes; 1 taken, 0 not its own, -1 bad value. */
typedef int (*cli_option_fn)(const char *name, const char *val, void *arg, pf_err *err);

/* Parse the long options of ARGV (OPTS lists --help as 'h'), handing each to ON_OPTION, except --help
 * (USAGE(stdout), when USAGE is given) and --log-level. Operands stay at argv[optind...]; with OPERANDS 0 they
 * are an error. getopt is reset first, so a reload can parse again. Returns 0 parsed, 1 --help, 2 usage
 * error (message printed, "paliflow CMD: ..."). */
int cli_parse_options(const char *cmd, int argc, char **argv, const struct option *opts, void (*usage)(FILE *),
                      cli_option_fn on_option, void *arg, int operands);

/* SIGHUP in a long-running command: its command line is expanded again (with the --config file as it is
 * now) and handed to REPARSE(argc, argv, arg), which parses it into a fresh copy of the options and applies
 * what is safe to change mid-run; it returns 0, or -1 when it does not parse (nothing changed). */
typedef struct cli_reloader {
    int argc0;
    char **argv0;   /* as the command got them */
    int (*reparse)(int argc, char **argv, void *arg);
    void *arg;
} cli_reloader;

/* The roles' on_reload callback (pf_*_opts.on_reload) with reload_arg a cli_reloader. Logs the reload and
 * its failures. */
void cli_reload(void *reloader);

/* Hand a role its controls: SIGTERM/SIGINT set *STOP (installed here); the service's SIGHUP flag asks for a
 * reload, which RELOADER carries out. */
void cli_control(pf_control *ctl, pf_service *svc, volatile sig_atomic_t *stop, cli_reloader *reloader);

#endif
