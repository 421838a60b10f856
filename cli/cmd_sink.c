/* paliflow sink: collect results into a JSON-lines file, publish them, acknowledge them to the producer. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "cli/commands.h"
#include "pipeline/config.h"
#include "pipeline/sink.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: paliflow sink --bind ENDPOINT --publish ENDPOINT --producer ENDPOINT --out FILE.jsonl [OPTIONS]\n"
            "\n"
            "Receive results and error records from the workers on --bind, append one JSON line per item to\n"
            "FILE.jsonl (an item already in the file is never written again, also across restarts), publish every\n"
            "record as a msgpack map on --publish (PUB), and acknowledge records to the producer once they are\n"
            "on disk (fdatasync per batch).\n"
            "\n"
            "  --bind ENDPOINT          where workers send results, e.g. tcp://*:5556 (required)\n"
            "  --publish ENDPOINT       PUB socket for subscribers, e.g. tcp://*:5557\n"
            "  --producer ENDPOINT      the producer, e.g. tcp://host:5555 (required)\n"
            "  --out FILE               JSON-lines output, appended to (required)\n"
            "  --batch N                records per write+fdatasync batch (64)\n"
            "  --flush-ms N             longest a record waits for its batch (50)\n"
            "  --no-fsync               skip fdatasync (faster; a crash may lose acknowledged records)\n"
            "  --name NAME              sink id in logs\n"
            "  --heartbeat S            heartbeat interval (1)\n"
            "  --heartbeat-timeout S    producer silent this long is reported (10)\n"
            "  --exit-when-done         exit 0 once the producer reports the job complete\n"
            "  --max-message-mb N       ZMQ_MAXMSGSIZE and decoder limit (64)\n"
            "  --config FILE            options from FILE ('name = value' lines; the command line wins)\n"
            "  --log-level LEVEL        error | warn | info | debug\n"
            "  --help                   this text\n");
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
    pf_sink_opts o;
    pf_sink_opts_defaults(&o);
    static const struct option opts[] = {
        {"bind", required_argument, 0, 0},      {"publish", required_argument, 0, 0},
        {"producer", required_argument, 0, 0},  {"out", required_argument, 0, 0},
        {"batch", required_argument, 0, 0},     {"flush-ms", required_argument, 0, 0},
        {"no-fsync", no_argument, 0, 0},        {"name", required_argument, 0, 0},
        {"heartbeat", required_argument, 0, 0}, {"heartbeat-timeout", required_argument, 0, 0},
        {"exit-when-done", no_argument, 0, 0},  {"max-message-mb", required_argument, 0, 0},
        {"log-level", required_argument, 0, 0}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int rc = 2, idx, c;
    double v;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
        if (c == 'h') {
            usage(stdout);
            rc = 0;
            goto out;
        }
        if (c != 0)
            goto bad;
        const char *name = opts[idx].name, *val = optarg;
#define NUM(opt, lo, hi, dst)                                                                                      \
    else if (!strcmp(name, opt)) {                                                                                 \
        if (pf_parse_double(val, lo, hi, &v)) {                                                                    \
            fprintf(stderr, "paliflow sink: --%s: want a number in [%g, %g], got '%s'\n", opt, (double)lo,          \
                    (double)hi, val);                                                                              \
            goto out;                                                                                              \
        }                                                                                                          \
        dst;                                                                                                       \
    }
        if (!strcmp(name, "bind"))
            o.bind = val;
        else if (!strcmp(name, "publish"))
            o.publish = val;
        else if (!strcmp(name, "producer"))
            o.producer = val;
        else if (!strcmp(name, "out"))
            o.out = val;
        else if (!strcmp(name, "no-fsync"))
            o.fsync = 0;
        else if (!strcmp(name, "name"))
            o.name = val;
        else if (!strcmp(name, "exit-when-done"))
            o.exit_when_done = 1;
        NUM("batch", 1, 1e6, o.batch = (int)v)
        NUM("flush-ms", 0, 1e7, o.flush_s = v / 1000)
        NUM("heartbeat", 0.01, 3600, o.hb_interval = v)
        NUM("heartbeat-timeout", 0.05, 1e6, o.hb_timeout = v)
        NUM("max-message-mb", 1, 4096, o.lim.max_msg_bytes = o.lim.max_bin = (size_t)(v * 1048576))
        else if (!strcmp(name, "log-level") && pf_log_level_option(val))
            goto out;
#undef NUM
    }
    if (optind < argc) {
        fprintf(stderr, "paliflow sink: unexpected argument '%s'\n", argv[optind]);
        goto bad;
    }
    if (!o.bind || !o.producer || !o.out) {
        fprintf(stderr, "paliflow sink: --bind, --producer and --out are required\n");
        goto bad;
    }
    static volatile sig_atomic_t stop;
    pf_install_stop_signals(&stop);
    o.stop = &stop;
    if (pf_sink_run(&o, &err)) {
        fprintf(stderr, "paliflow sink: %s\n", err.msg);
        rc = 1;
    } else {
        rc = 0;
    }
    goto out;
bad:
    fprintf(stderr, "Run 'paliflow sink --help' for the options.\n");
    rc = 2;
out:
    pf_config_free_argv(argc, argv);
    return rc;
}
