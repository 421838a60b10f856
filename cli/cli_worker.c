/* cli_worker.c - see cli_worker.h. */
#include "cli/cli_worker.h"

#include <getopt.h>
#include <string.h>

#include "base/log.h"
#include "base/option.h"
#include "cli/cli_engine.h"
#include "cli/cli_util.h"
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
    {"max-pixels", required_argument, 0, 0}, {"decode-memory-mb", required_argument, 0, 0},
    {"seg-decoder", required_argument, 0, 0},
    {"no-memory-check", no_argument, 0, 0}, {"adapter", required_argument, 0, 0},
    {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};

static int reparse(int argc, char **argv, void *arg);

void cli_worker_init(cli_worker *c, const char *cmd, int inference, int argc0, char **argv0)
{
    memset(c, 0, sizeof *c);
    c->o = pf_worker_default_params();
    c->cmd = cmd;
    c->inference = inference;
    c->reload = (cli_reloader){argc0, argv0, reparse, c};
}

/* The worker commands' options (cli_option_fn). A preprocess worker has no model and does not batch; an
 * inference worker's --threads are its compute threads (with --backend, --precision), a preprocess worker's
 * its decode threads. A config file shared by both roles may still name their options. */
static int worker_option(const char *name, const char *val, void *arg, pf_err *err)
{
    cli_worker *c = arg;
    if (!strcmp(name, "model") || !strcmp(name, "tokenizer") || !strcmp(name, "seg-decoder")) {
        if (!c->inference)
            return pf_errf(err, "--%s is for inference workers", name);
        if (!strcmp(name, "model"))
            c->model = val;
        else if (!strcmp(name, "tokenizer"))
            c->tokenizer = val;
        else
            c->seg_decoder = val;
        return 1;
    }
    if (!c->inference && (!strcmp(name, "max-batch") || !strcmp(name, "max-delay-ms")))
        return pf_errf(err, "--%s is for inference workers", name);
    if (!strcmp(name, "max-pixels") || !strcmp(name, "decode-memory-mb")) {
        if (c->inference)
            return pf_errf(err, "--%s is for preprocess workers", name);
        double v;
        PF_NUM_OPTION("max-pixels", 1, 1e12, v, c->max_pixels = (uint64_t)v)
        PF_NUM_OPTION("decode-memory-mb", 16, 1 << 20, v, c->decode_memory_mb = v)
    }
    if (!strcmp(name, "backend") || !strcmp(name, "precision") || !strcmp(name, "no-memory-check") ||
        !strcmp(name, "adapter") || (c->inference && !strcmp(name, "threads"))) {
        if (!c->inference)
            return pf_errf(err, "--%s is for inference workers", name);
        return cli_engine_option(name, val, &c->so, err);
    }
    int t = pf_service_option(name, val, &c->svc, err);
    return t ? t : pf_worker_option(name, val, &c->o, err);
}

int cli_worker_parse(cli_worker *c, int argc, char **argv, void (*usage)(FILE *))
{
    return cli_parse_options(c->cmd, argc, argv, g_opts, usage, worker_option, c, 0);
}

/* SIGHUP: apply what is safe to change while running. */
static int reparse(int argc, char **argv, void *arg)
{
    cli_worker *live = arg;
    cli_worker fresh;
    cli_worker_init(&fresh, live->cmd, live->inference, live->reload.argc0, live->reload.argv0);
    if (cli_worker_parse(&fresh, argc, argv, NULL) != 0)
        return -1;
    PF_RELOAD("drain-timeout", live->o.drain_timeout, fresh.o.drain_timeout);
    PF_RELOAD("heartbeat-timeout", live->o.hb_timeout, fresh.o.hb_timeout);
    if (strcmp(live->o.producer, fresh.o.producer ? fresh.o.producer : "") != 0 ||
        strcmp(live->o.sink, fresh.o.sink ? fresh.o.sink : "") != 0)
        pf_warn("config", "reload: --producer/--sink changed: restart the worker to apply");
    if (live->max_pixels != fresh.max_pixels || live->decode_memory_mb != fresh.decode_memory_mb)
        pf_warn("config", "reload: --max-pixels/--decode-memory-mb changed: restart the worker to apply");
    return 0;
}

/* Check the endpoints against the security settings, start the metrics server, install the stop and reload
 * signals. 0 ok, 2 usage/setup error (message printed). */
static int worker_start(cli_worker *c, volatile sig_atomic_t *stop)
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
    cli_control(&c->o.ctl, &c->svc, stop, &c->reload);
    c->o.sec = &c->svc.sec;
    return 0;
}

int cli_worker_main(const char *cmd, int inference, int argc0, char **argv0, void (*usage)(FILE *),
                    cli_worker_setup_fn setup)
{
    int argc;
    char **argv;
    pf_err err = {{0}};
    if (pf_config_expand_argv(argc0, argv0, &argc, &argv, &err)) {
        fprintf(stderr, "paliflow %s: %s\n", cmd, err.msg);
        return 2;
    }
    static cli_worker c; /* the SIGHUP reload reads it */
    static volatile sig_atomic_t stop;
    cli_worker_init(&c, cmd, inference, argc0, argv0);
    int rc = cli_worker_parse(&c, argc, argv, usage);
    if (rc == 1) { /* --help */
        rc = 0;
    } else if (rc != 0 || setup(&c) != 0 || worker_start(&c, &stop) != 0) {
        fprintf(stderr, "Run 'paliflow %s --help' for the options.\n", cmd);
        rc = 2;
    } else {
        rc = 0;
        if (pf_worker_run(&c.o, &err)) {
            fprintf(stderr, "paliflow %s: %s\n", cmd, err.msg);
            rc = 1;
        }
        pf_service_stop(&c.svc);
    }
    pf_config_free_argv(argc, argv);
    return rc;
}
