/* paliflow sink: collect results into a JSON-lines file, publish them, acknowledge them to the producer. */
#include <stdio.h>
#include <string.h>

#include "base/config_file.h"
#include "base/optable.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "pipeline/out_view.h"
#include "pipeline/service.h"
#include "pipeline/sink.h"

typedef struct sink_cli {
    pf_sink_params o;
    pf_service svc;
} sink_cli;

static void sink_init(void *obj)
{
    *(sink_cli *)obj = (sink_cli){.o = pf_sink_default_params()};
    ((sink_cli *)obj)->o.compact_at_end = 1;   /* a separate sink compacts at job end; run's own does it with the job store */
}

#define T sink_cli
static const pf_opt g_rows[] = {
    PF_OPT_ROW_STR("bind", T, o.bind, PF_OPT_NONEMPTY | PF_OPT_REQUIRED, "ENDPOINT",
                   "where workers send results, e.g. tcp://*:5556"),
    PF_OPT_ROW_STR("publish", T, o.publish, PF_OPT_NONEMPTY, "ENDPOINT", "PUB socket for subscribers, e.g. tcp://*:5557"),
    PF_OPT_ROW_STR("producer", T, o.producer, PF_OPT_NONEMPTY | PF_OPT_REQUIRED, "ENDPOINT",
                   "the producer, e.g. tcp://host:5555"),
    PF_OPT_ROW_STR("out", T, o.out, PF_OPT_NONEMPTY | PF_OPT_REQUIRED, "FILE",
                   "JSON-lines output, appended to; a regular file, locked while the sink runs (a second sink or "
                   "run on it is refused); the identities of its records are indexed in FILE.seen (a restart "
                   "reads only what the index lacks; delete it and it is rebuilt from FILE)"),
    PF_OPT_ROW_INT("batch", T, o.batch, 1, 1000000, PF_OPT_RELOAD, "N", "records per write+fdatasync batch"),
    {"flush-ms", 0, PF_OPT_DOUBLE, offsetof(T, o.flush_s), 0, 1e7, 0.001, .flags = PF_OPT_RELOAD, .arg = "N",
     .help = "longest a record waits for its batch, in ms"},
    PF_OPT_ROW_FLAG("no-fsync", T, o.fsync, PF_OPT_CLEAR,
                    "skip fdatasync (faster; a crash may lose acknowledged records)"),
    PF_OPT_ROW_STR("name", T, o.name, PF_OPT_NONEMPTY, "NAME", "sink id in logs"),
    PF_OPT_ROW_DOUBLE("heartbeat", T, o.hb_interval, 0.01, 3600, 0, "S", "heartbeat interval in seconds"),
    PF_OPT_ROW_DOUBLE("heartbeat-timeout", T, o.hb_timeout, 0.05, 1e6, PF_OPT_RELOAD, "S",
                      "producer silent this long (seconds) is reported"),
    PF_OPT_ROW_FLAG("exit-when-done", T, o.exit_when_done, 0, "exit 0 once the producer reports the job complete"),
    PF_OPT_ROW_FLAG("no-compact", T, o.compact_at_end, PF_OPT_CLEAR,
                    "keep error records a later success superseded (by default they are removed when the producer "
                    "reports the job complete: one final record per item)"),
    PF_PROTO_LIMITS_OPT_ROW(T, o.lim),
    PF_VIEW_OPT_ROWS(T, o.views),
    PF_OPT_ROW_HEADING("security (tcp endpoints need CURVE keys or --insecure; the sink is a server on --bind and\n"
                       "--publish and a client of the producer: its server key pair doubles as its client pair, and\n"
                       "the producer always admits its own key, so a hub sharing one key pair needs no more;\n"
                       "--curve-client-key is a separate client certificate for the connection to the producer,\n"
                       "--curve-server-public the producer's key when it is not the sink's own):"),
    PF_SERVICE_OPT_ROWS(T, svc, 0, 0),
    PF_OPT_END,
};
#undef T

static const pf_optcmd g_cmd = {
    .name = "sink",
    .synopsis =
        "usage: paliflow sink --bind ENDPOINT --producer ENDPOINT --out FILE.jsonl [--publish ENDPOINT] [OPTIONS]\n"
        "\n"
        "Receive results and error records from the workers on --bind, append one JSON line per item to\n"
        "FILE.jsonl (an item already in the file is never written again, also across restarts), publish every\n"
        "record as a msgpack map on --publish (PUB) when it is given, and acknowledge records to the producer\n"
        "once they are on disk (fdatasync per batch). SIGTERM/SIGINT: the last batch is written, synced and acknowledged,\n"
        "then the sink exits 0. SIGHUP re-reads --config and applies the options marked 'reloads'.\n"
        "\n",
    .opts = g_rows,
    .size = sizeof(sink_cli),
    .init = sink_init,
};

/* SIGHUP: the table's reloadable rows, and the allow-list. */
static int reparse(int argc, char **argv, void *arg)
{
    sink_cli *live = arg;
    sink_cli fresh;
    sink_init(&fresh);
    if (pf_opt_parse(&g_cmd, &fresh, argc, argv, NULL, 1) != 0)
        return -1;
    pf_opt_reload(&g_cmd, live, &fresh);
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
    static sink_cli c; /* the SIGHUP reload reads it */
    sink_init(&c);
    pf_sink_params *o = &c.o;
    int rc = 2;
    int pr = pf_opt_parse(&g_cmd, &c, argc, argv, NULL, 0);
    if (pr == 1) {
        rc = 0;
        goto out;
    }
    if (pr)
        goto out;
    if (!o->bind || !o->producer || !o->out) {
        fprintf(stderr, "paliflow sink: --bind, --producer and --out are required\n");
        goto bad;
    }
    if (pf_view_params_check(&o->views, &err)) {
        fprintf(stderr, "paliflow sink: %s\n", err.msg);
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
