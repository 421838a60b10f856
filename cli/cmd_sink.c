/* paliflow sink: collect results into a JSON-lines file, publish them, acknowledge them to the producer. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "base/option.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "pipeline/config.h"
#include "pipeline/out_view.h"
#include "pipeline/service.h"
#include "pipeline/sink.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: paliflow sink --bind ENDPOINT --publish ENDPOINT --producer ENDPOINT --out FILE.jsonl [OPTIONS]\n"
            "\n"
            "Receive results and error records from the workers on --bind, append one JSON line per item to\n"
            "FILE.jsonl (an item already in the file is never written again, also across restarts), publish every\n"
            "record as a msgpack map on --publish (PUB), and acknowledge records to the producer once they are\n"
            "on disk (fdatasync per batch). SIGTERM/SIGINT: the last batch is written, synced and acknowledged,\n"
            "then the sink exits 0. SIGHUP re-reads --config.\n"
            "\n"
            "  --bind ENDPOINT          where workers send results, e.g. tcp://*:5556 (required)\n"
            "  --publish ENDPOINT       PUB socket for subscribers, e.g. tcp://*:5557\n"
            "  --producer ENDPOINT      the producer, e.g. tcp://host:5555 (required)\n"
            "  --out FILE               JSON-lines output, appended to (required); a regular file, locked while\n"
            "                           the sink runs (a second sink or run on it is refused); the identities of\n"
            "                           its records are indexed in FILE.seen (a restart reads only what the index\n"
            "                           lacks; delete it and it is rebuilt from FILE)\n"
            "  --batch N                records per write+fdatasync batch (64)\n"
            "  --flush-ms N             longest a record waits for its batch (50)\n"
            "  --no-fsync               skip fdatasync (faster; a crash may lose acknowledged records)\n"
            "  --name NAME              sink id in logs\n"
            "  --heartbeat S            heartbeat interval (1)\n"
            "  --heartbeat-timeout S    producer silent this long is reported (10)\n"
            "  --exit-when-done         exit 0 once the producer reports the job complete\n"
            "  --no-compact             keep error records a later success superseded (by default they are removed\n"
            "                           when the producer reports the job complete: one final record per item)\n"
            PF_VIEW_OPTIONS_HELP
            "  --max-message-mb N       ZMQ_MAXMSGSIZE and decoder limit (64)\n"
            "security (tcp endpoints need CURVE keys or --insecure; the sink is a server on --bind/--publish and a\n"
            "client of the producer: its server key pair doubles as its client pair, and the producer always admits\n"
            "its own key, so a hub sharing one key pair needs no more):\n"
            PF_SECURITY_SERVER_HELP
            "  --curve-client-key FILE  a separate client certificate for the connection to the producer\n"
            "  --curve-server-public K  the producer's public key (default: this sink's own server key)\n"
            PF_METRICS_HELP
            "  --config FILE            options from FILE ('name = value' lines; the command line wins)\n"
            "  --log-level LEVEL        error | warn | info | debug\n"
            "  --help                   this text\n");
}

typedef struct sink_cli {
    pf_sink_opts o;
    pf_service svc;
} sink_cli;

static const struct option g_opts[] = {
    {"bind", required_argument, 0, 0},      {"publish", required_argument, 0, 0},
    {"producer", required_argument, 0, 0},  {"out", required_argument, 0, 0},
    {"batch", required_argument, 0, 0},     {"flush-ms", required_argument, 0, 0},
    {"no-fsync", no_argument, 0, 0},        {"name", required_argument, 0, 0},
    {"heartbeat", required_argument, 0, 0}, {"heartbeat-timeout", required_argument, 0, 0},
    {"exit-when-done", no_argument, 0, 0},  {"max-message-mb", required_argument, 0, 0},
    {"log-level", required_argument, 0, 0}, PF_SERVICE_LONG_OPTIONS,
    PF_VIEW_LONG_OPTIONS,                   {"no-compact", no_argument, 0, 0},
    {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};

static void cli_init(sink_cli *c)
{
    memset(c, 0, sizeof *c);
    pf_sink_opts_defaults(&c->o);
    c->o.compact_at_end = 1;
}

/* The sink's options (cli_option_fn): the service's, then its own. */
static int sink_option(const char *name, const char *val, void *arg, pf_err *err)
{
    sink_cli *c = arg;
    pf_sink_opts *o = &c->o;
    double v;
    int t = pf_service_option(name, val, &c->svc, err);
    if (t == 0)
        t = pf_view_option(name, val, &o->views, err);
    if (t != 0)
        return t;
    if (!strcmp(name, "bind"))
        o->bind = val;
    else if (!strcmp(name, "publish"))
        o->publish = val;
    else if (!strcmp(name, "producer"))
        o->producer = val;
    else if (!strcmp(name, "out"))
        o->out = val;
    else if (!strcmp(name, "no-fsync"))
        o->fsync = 0;
    else if (!strcmp(name, "name"))
        o->name = val;
    else if (!strcmp(name, "exit-when-done"))
        o->exit_when_done = 1;
    else if (!strcmp(name, "no-compact"))
        o->compact_at_end = 0;
    else {
        PF_NUM_OPTION("batch", 1, 1e6, v, o->batch = (int)v)
        PF_NUM_OPTION("flush-ms", 0, 1e7, v, o->flush_s = v / 1000)
        PF_NUM_OPTION("heartbeat", 0.01, 3600, v, o->hb_interval = v)
        PF_NUM_OPTION("heartbeat-timeout", 0.05, 1e6, v, o->hb_timeout = v)
        PF_NUM_OPTION("max-message-mb", 1, 4096, v, o->lim.max_msg_bytes = o->lim.max_bin = (size_t)(v * 1048576))
        return 0;
    }
    return 1;
}

/* 0 parsed, 1 --help printed, 2 usage error (message printed). */
static int parse(int argc, char **argv, sink_cli *c)
{
    return cli_parse_options("sink", argc, argv, g_opts, usage, sink_option, c, 0);
}

/* SIGHUP: apply what is safe to change while running. */
static int reparse(int argc, char **argv, void *arg)
{
    sink_cli *live = arg;
    sink_cli fresh;
    cli_init(&fresh);
    if (parse(argc, argv, &fresh) != 0)
        return -1;
    pf_sink_opts *o = &live->o;
    PF_RELOAD("batch", o->batch, fresh.o.batch);
    pf_service_log_change("flush-ms", o->flush_s * 1000, fresh.o.flush_s * 1000); /* logged in ms */
    o->flush_s = fresh.o.flush_s;
    PF_RELOAD("heartbeat-timeout", o->hb_timeout, fresh.o.hb_timeout);
    pf_service_reloaded(&live->svc, &fresh.svc);
    return 0;
}

int cmd_sink(int argc0, char **argv0)
{
    int argc;
    char **argv;
    pf_err err = {{0}};
    if (pf_config_expand_argv(argc0, argv0, &argc, &argv, &err)) {
        fprintf(stderr, "paliflow sink: %s\n", err.msg);
        return 2;
    }
    sink_cli c;
    cli_init(&c);
    pf_sink_opts *o = &c.o;
    int rc = 2;
    int pr = parse(argc, argv, &c);
    if (pr == 1) {
        rc = 0;
        goto out;
    }
    if (pr)
        goto bad;
    if (!o->bind || !o->producer || !o->out) {
        fprintf(stderr, "paliflow sink: --bind, --producer and --out are required\n");
        goto bad;
    }
    if (pf_security_load(&c.svc.sec, &err) || pf_security_check_bind(&c.svc.sec, "--bind", o->bind, &err) ||
        (o->publish && pf_security_check_bind(&c.svc.sec, "--publish", o->publish, &err)) ||
        pf_security_check_connect(&c.svc.sec, "--producer", o->producer, &err)) {
        fprintf(stderr, "paliflow sink: %s\n", err.msg);
        goto bad;
    }
    if (pf_service_start(&c.svc, &err)) {
        fprintf(stderr, "paliflow sink: %s\n", err.msg);
        pf_service_stop(&c.svc);
        goto out;
    }
    static volatile sig_atomic_t stop;
    cli_reloader rl = {argc0, argv0, reparse, &c};
    cli_control(&o->ctl, &c.svc, &stop, &rl);
    o->sec = &c.svc.sec;
    if (pf_sink_run(o, &err)) {
        fprintf(stderr, "paliflow sink: %s\n", err.msg);
        rc = 1;
    } else {
        rc = 0;
    }
    pf_service_stop(&c.svc);
    goto out;
bad:
    fprintf(stderr, "Run 'paliflow sink --help' for the options.\n");
    rc = 2;
out:
    pf_config_free_argv(argc, argv);
    return rc;
}
