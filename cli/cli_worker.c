/* cli_worker.c - see cli_worker.h. */
#include "cli/cli_worker.h"

#include <getopt.h>
#include <string.h>

#include "base/log.h"
#include "cli/cli_engine.h"
#include "pipeline/config.h"

static const struct option g_opts[] = {
    {"producer", required_argument, 0, 0},  {"sink", required_argument, 0, 0},
    {"model", required_argument, 0, 0},     {"tokenizer", required_argument, 0, 0},
    {"name", required_argument, 0, 0},      {"threads", required_argument, 0, 0},
    {"max-batch", required_argument, 0, 0}, {"max-delay-ms", required_argument, 0, 0},
    {"credit", required_argument, 0, 0},    {"heartbeat", required_argument, 0, 0},
    {"heartbeat-timeout", required_argument, 0, 0}, {"drain-timeout", required_argument, 0, 0},
    {"exit-when-done", no_argument, 0, 0},  {"max-message-mb", required_argument, 0, 0},
    {"log-level", required_argument, 0, 0}, PF_SERVICE_LONG_OPTIONS,
    {"backend", required_argument, 0, 0},   {"precision", required_argument, 0, 0},
    {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};

void cli_worker_init(cli_worker *c, const char *cmd, int inference, int argc0, char **argv0)
{
    memset(c, 0, sizeof *c);
    pf_worker_opts_defaults(&c->o);
    c->cmd = cmd;
    c->inference = inference;
    c->argc0 = argc0;
    c->argv0 = argv0;
}

int cli_worker_parse(cli_worker *c, int argc, char **argv, void (*usage)(FILE *))
{
    pf_err err = {{0}};
    int idx, ch;
    optind = 0;
    opterr = 1;
    while ((ch = getopt_long(argc, argv, "h", g_opts, &idx)) != -1) {
        if (ch == 'h') {
            if (usage)
                usage(stdout);
            return 1;
        }
        if (ch != 0)
            return 2;
        const char *name = g_opts[idx].name, *val = optarg;
        int t = 0;
        if (!strcmp(name, "log-level")) {
            if (pf_log_level_option(val))
                return 2;
            continue;
        }
        /* a preprocess worker has no model; a config file shared by both roles may still name it */
        if (!strcmp(name, "model") || !strcmp(name, "tokenizer")) {
            if (!c->inference) {
                fprintf(stderr, "paliflow %s: --%s is for inference workers\n", c->cmd, name);
                return 2;
            }
            if (!strcmp(name, "model"))
                c->model = val;
            else
                c->tokenizer = val;
            continue;
        }
        if (!c->inference && (!strcmp(name, "max-batch") || !strcmp(name, "max-delay-ms"))) {
            fprintf(stderr, "paliflow %s: --%s is for inference workers\n", c->cmd, name);
            return 2;
        }
        if (!strcmp(name, "backend") || !strcmp(name, "precision") || (c->inference && !strcmp(name, "threads"))) {
            if (!c->inference) {
                fprintf(stderr, "paliflow %s: --%s is for inference workers\n", c->cmd, name);
                return 2;
            }
            if (cli_engine_option(name, val, &c->so, &err) < 0) {
                fprintf(stderr, "paliflow %s: %s\n", c->cmd, err.msg);
                return 2;
            }
            continue;
        }
        t = pf_service_option(name, val, &c->svc, &err);
        if (t == 0)
            t = pf_worker_option(name, val, &c->o, &err);
        if (t < 0) {
            fprintf(stderr, "paliflow %s: %s\n", c->cmd, err.msg);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "paliflow %s: unexpected argument '%s'\n", c->cmd, argv[optind]);
        return 2;
    }
    return 0;
}

static void on_reload(void *arg)
{
    cli_worker *live = arg;
    pf_err err = {{0}};
    int argc;
    char **argv;
    pf_info("config", "SIGHUP: reloading the configuration");
    if (pf_config_expand_argv(live->argc0, live->argv0, &argc, &argv, &err)) {
        pf_error("config", "reload: %s (nothing changed)", err.msg);
        return;
    }
    cli_worker fresh;
    cli_worker_init(&fresh, live->cmd, live->inference, live->argc0, live->argv0);
    if (cli_worker_parse(&fresh, argc, argv, NULL) == 0) {
        pf_service_log_change("drain-timeout", live->o.drain_timeout, fresh.o.drain_timeout);
        pf_service_log_change("heartbeat-timeout", live->o.hb_timeout, fresh.o.hb_timeout);
        live->o.drain_timeout = fresh.o.drain_timeout;
        live->o.hb_timeout = fresh.o.hb_timeout;
        if (strcmp(live->o.producer, fresh.o.producer ? fresh.o.producer : "") != 0 ||
            strcmp(live->o.sink, fresh.o.sink ? fresh.o.sink : "") != 0)
            pf_warn("config", "reload: --producer/--sink changed: restart the worker to apply");
    } else {
        pf_error("config", "reload: the configuration does not parse (nothing changed)");
    }
    pf_config_free_argv(argc, argv);
}

int cli_worker_start(cli_worker *c, volatile sig_atomic_t *stop)
{
    pf_err err = {{0}};
    if (!c->o.producer || !c->o.sink) {
        fprintf(stderr, "paliflow %s: --producer and --sink are required\n", c->cmd);
        return 2;
    }
    if (pf_security_load(&c->svc.sec, &err) ||
        pf_security_check_connect(&c->svc.sec, "--producer", c->o.producer, &err) ||
        pf_security_check_connect(&c->svc.sec, "--sink", c->o.sink, &err) ||
        pf_service_start(&c->svc, &err)) {
        fprintf(stderr, "paliflow %s: %s\n", c->cmd, err.msg);
        pf_service_stop(&c->svc);
        return 2;
    }
    pf_install_stop_signals(stop);
    c->o.stop = stop;
    c->o.sec = &c->svc.sec;
    c->o.reload = &c->svc.reload;
    c->o.on_reload = on_reload;
    c->o.reload_arg = c;
    return 0;
}

void cli_worker_stop(cli_worker *c)
{
    pf_service_stop(&c->svc);
}
