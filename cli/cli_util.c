/* cli_util.c - see cli_util.h. */
#include "cli/cli_util.h"

#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "pipeline/config.h"

int cli_not_yet(const char *command, const char *tracking)
{
    fprintf(stderr, "paliflow %s: not implemented yet (%s)\n", command, tracking);
    return 2;
}

int cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    return 0;
}

int cli_parse_options(const char *cmd, int argc, char **argv, const struct option *opts, void (*usage)(FILE *),
                      cli_option_fn on_option, void *arg, int operands)
{
    pf_err err = {{0}};
    int idx, ch;
    optind = 0;   /* full getopt reset */
    opterr = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
        if (ch == 'h') {
            if (usage)
                usage(stdout);
            return 1;
        }
        if (ch != 0)
            return 2;   /* getopt said why */
        const char *name = opts[idx].name, *val = optarg;
        if (!strcmp(name, "log-level")) {
            if (pf_log_level_option(cmd, val))
                return 2;
            continue;
        }
        if (on_option(name, val, arg, &err) < 0) {
            fprintf(stderr, "paliflow %s: %s\n", cmd, err.msg);
            return 2;
        }
    }
    if (!operands && optind < argc) {
        fprintf(stderr, "paliflow %s: unexpected argument '%s'\n", cmd, argv[optind]);
        return 2;
    }
    return 0;
}

void cli_reload(void *reloader)
{
    const cli_reloader *r = reloader;
    pf_err err = {{0}};
    int argc;
    char **argv;
    pf_info("config", "SIGHUP: reloading the configuration");
    if (pf_config_expand_argv(r->argc0, r->argv0, &argc, &argv, &err)) {
        pf_error("config", "reload: %s (nothing changed)", err.msg);
        return;
    }
    if (r->reparse(argc, argv, r->arg))
        pf_error("config", "reload: the configuration does not parse (nothing changed)");
    pf_config_free_argv(argc, argv);
}

void cli_control(pf_control *ctl, pf_service *svc, volatile sig_atomic_t *stop, cli_reloader *reloader)
{
    pf_install_stop_signals(stop);
    ctl->stop = stop;
    ctl->reload = &svc->reload;
    ctl->on_reload = cli_reload;
    ctl->reload_arg = reloader;
}

size_t cli_count_option(int argc, char **argv, const char *name)
{
    size_t n = 0, len = strlen(name);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        if (!strncmp(argv[i], "--", 2) && !strncmp(argv[i] + 2, name, len) && (!argv[i][2 + len] || argv[i][2 + len] == '='))
            n++;
    }
    return n;
}
