/* cli_util.c - see cli_util.h. */
#include "cli/cli_util.h"

#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "base/config_file.h"
#include "base/signals.h"

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
