/* cli_worker.c - see cli_worker.h. */
#include "cli/cli_worker.h"

#include <stdio.h>
#include <string.h>

#include "base/config_file.h"
#include "cli/cli_options.h"
#include "image/image.h"

void cli_worker_defaults(void *obj)
{
    *(cli_worker *)obj = (cli_worker){.o = pf_worker_default_params(),
                                      .max_pixels = PF_IMG_DEFAULT_MAX_PIXELS,
                                      .decode_memory_mb = CLI_DECODE_MEMORY_MB_DEFAULT};
}

int cli_worker_wrong_role(const pf_opt *opt, void *field, const char *val, pf_err *err)
{
    (void)field, (void)val;
    return pf_errf(err, "--%s is for %s", opt->name, opt->help);
}

/* SIGHUP: the table's reloadable rows, and the allow-list. */
static int reparse(int argc, char **argv, void *arg)
{
    cli_worker *live = arg;
    cli_worker fresh;
    cli_worker_defaults(&fresh);
    if (pf_opt_parse(live->cmd, &fresh, argc, argv, NULL, 1) != 0)
        return -1;
    pf_opt_reload(live->cmd, live, &fresh);
    pf_service_reloaded(&live->svc, &fresh.svc);
    return 0;
}

/* Check the endpoints against the security settings, start the metrics server, install the stop and reload
 * signals. 0 ok, 2 usage/setup error (message printed). */
static int worker_start(cli_worker *c, volatile sig_atomic_t *stop)
{
    pf_err err = {{0}};
    const char *name = c->cmd->name;
    if (!c->o.producer || !c->o.sink) {
        fprintf(stderr, "paliflow %s: --producer and --sink are required\n", name);
        return 2;
    }
    if (pf_security_load(&c->svc.sec, &err) ||
        pf_security_check_connect(&c->svc.sec, "--producer", c->o.producer, &err) ||
        pf_security_check_connect(&c->svc.sec, "--sink", c->o.sink, &err) ||
        pf_service_start(&c->svc, &err)) {
        fprintf(stderr, "paliflow %s: %s\n", name, err.msg);
        pf_service_stop(&c->svc);
        return 2;
    }
    cli_control(&c->o.ctl, &c->svc, stop, &c->reload);
    c->o.sec = &c->svc.sec;
    return 0;
}

int cli_worker_main(const pf_optcmd *cmd, int argc0, char **argv0, cli_worker_setup_fn setup)
{
    int argc;
    char **argv;
    pf_err err = {{0}};
    if (pf_config_expand_argv(argc0, argv0, &argc, &argv, &err)) {
        fprintf(stderr, "paliflow %s: %s\n", cmd->name, err.msg);
        return 2;
    }
    static cli_worker c; /* the SIGHUP reload reads it */
    static volatile sig_atomic_t stop;
    cli_worker_defaults(&c);
    c.cmd = cmd;
    c.reload = (cli_reloader){argc0, argv0, reparse, &c};
    int rc = pf_opt_parse(cmd, &c, argc, argv, NULL, 0);
    if (rc == 1) { /* --help */
        rc = 0;
    } else if (rc != 0) {
        rc = 2;
    } else if (setup(&c) != 0 || worker_start(&c, &stop) != 0) {
        fprintf(stderr, "Run 'paliflow %s --help' for the options.\n", cmd->name);
        rc = 2;
    } else {
        rc = 0;
        if (pf_worker_run(&c.o, &err)) {
            fprintf(stderr, "paliflow %s: %s\n", cmd->name, err.msg);
            rc = 1;
        }
        pf_service_stop(&c.svc);
    }
    pf_config_free_argv(argc, argv);
    return rc;
}
