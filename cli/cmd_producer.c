/* paliflow producer: queue a job (folders, files, list files) and hand its items out to workers. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "cli/commands.h"
#include "pipeline/config.h"
#include "pipeline/producer.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: paliflow producer --bind ENDPOINT --db FILE.sqlite --task TASK --image-size S [OPTIONS] PATH...\n"
            "\n"
            "Queue every file under the PATHs (folders are walked recursively) for TASK and hand the items out to\n"
            "preprocess and inference workers that connect to ENDPOINT. The sink connects here too. Job state is\n"
            "kept in FILE.sqlite: rerun with the same --db to resume (done items are never redone; --task and\n"
            "--image-size may then be left out). Exits 0 when every item is done or failed.\n"
            "\n"
            "  --bind ENDPOINT          tcp://*:5555, ipc:///run/paliflow.sock, inproc://... (required)\n"
            "  --db FILE                job store (SQLite, WAL) (required)\n"
            "  --task TASK              the prompt: 'caption en', 'ocr', 'answer en Q', 'detect cat ; dog', ...\n"
            "  --image-size S           the model's image size (224, 448, 896); carried in every item\n"
            "  --list FILE              also take the paths listed in FILE (one per line, '-' = stdin)\n"
            "  --include GLOB           only files whose name or path below the folder matches (repeatable)\n"
            "  --exclude GLOB           skip files and folders that match (repeatable)\n"
            PF_TASK_OPTIONS_HELP
            "  --path-only              send paths instead of bytes (workers share the storage)\n"
            "  --max-attempts N         lost leases or failures before an item becomes an error record (3)\n"
            "  --preprocess-lease S     seconds a preprocess worker may hold an item (120)\n"
            "  --inference-lease S      seconds an inference worker may hold an item (1800)\n"
            "  --ack-timeout S          seconds to wait for the sink to acknowledge a record (60)\n"
            "  --heartbeat S            heartbeat interval (1)\n"
            "  --heartbeat-timeout S    a peer silent this long is gone; its items are requeued (10)\n"
            "  --max-ready N            preprocessed items kept in memory for inference workers (64)\n"
            "  --max-file-mb N          larger files become error records (48)\n"
            "  --max-message-mb N       ZMQ_MAXMSGSIZE and decoder limit (64)\n"
            "  --progress MODE          auto | bar | lines | off (auto: bar on a terminal)\n"
            "  --progress-interval S    seconds between progress lines (10)\n"
            "  --config FILE            options from FILE ('name = value' lines; the command line wins)\n"
            "  --log-level LEVEL        error | warn | info | debug\n"
            "  --help                   this text\n");
}

int cmd_producer(int argc0, char **argv0)
{
    int argc;
    char **argv;
    pf_err err = {{0}};
    if (pf_config_expand_argv(argc0, argv0, &argc, &argv, &err)) {
        fprintf(stderr, "paliflow producer: %s\n", err.msg);
        return 2;
    }
    pf_producer_opts o;
    pf_producer_opts_defaults(&o);
    const char **include = calloc((size_t)argc, sizeof *include), **exclude = calloc((size_t)argc, sizeof *exclude);
    size_t n_inc = 0, n_exc = 0;
    const char *task = NULL;
    long long iv;
    double dv;
    int rc = 2;
    static const struct option opts[] = {
        {"bind", required_argument, 0, 0},          {"db", required_argument, 0, 0},
        {"task", required_argument, 0, 0},          {"image-size", required_argument, 0, 0},
        {"list", required_argument, 0, 0},          {"include", required_argument, 0, 0},
        {"exclude", required_argument, 0, 0},       {"max-new-tokens", required_argument, 0, 0},
        {"temperature", required_argument, 0, 0},   {"top-k", required_argument, 0, 0},
        {"top-p", required_argument, 0, 0},         {"repetition-penalty", required_argument, 0, 0},
        {"seed", required_argument, 0, 0},          {"autorotate", no_argument, 0, 0},
        {"path-only", no_argument, 0, 0},           {"max-attempts", required_argument, 0, 0},
        {"preprocess-lease", required_argument, 0, 0}, {"inference-lease", required_argument, 0, 0},
        {"ack-timeout", required_argument, 0, 0},   {"heartbeat", required_argument, 0, 0},
        {"heartbeat-timeout", required_argument, 0, 0}, {"max-ready", required_argument, 0, 0},
        {"max-file-mb", required_argument, 0, 0},   {"max-message-mb", required_argument, 0, 0},
        {"progress", required_argument, 0, 0},      {"progress-interval", required_argument, 0, 0},
        {"log-level", required_argument, 0, 0},     {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int idx, c;
    optind = 1;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
        if (c == 'h') {
            usage(stdout);
            rc = 0;
            goto out;
        }
        if (c != 0)
            goto bad;
        const char *name = opts[idx].name, *val = optarg;
        int t = pf_task_option(name, val, &o.task, &err);
        if (t < 0) {
            fprintf(stderr, "paliflow producer: %s\n", err.msg);
            goto out;
        }
        if (t > 0)
            continue;
#define NUM(opt, lo, hi, dst)                                                                                      \
    else if (!strcmp(name, opt)) {                                                                                 \
        if (pf_parse_double(val, lo, hi, &dv)) {                                                                   \
            fprintf(stderr, "paliflow producer: --%s: want a number in [%g, %g], got '%s'\n", opt, (double)lo,      \
                    (double)hi, val);                                                                              \
            goto out;                                                                                              \
        }                                                                                                          \
        dst;                                                                                                       \
    }
        if (!strcmp(name, "bind"))
            o.bind = val;
        else if (!strcmp(name, "db"))
            o.db = val;
        else if (!strcmp(name, "task"))
            task = val;
        else if (!strcmp(name, "list"))
            o.scan.list_file = val;
        else if (!strcmp(name, "include"))
            include[n_inc++] = val;
        else if (!strcmp(name, "exclude"))
            exclude[n_exc++] = val;
        else if (!strcmp(name, "path-only"))
            o.path_only = 1;
        NUM("image-size", 1, 8192, o.image_size = (int)dv)
        NUM("max-attempts", 1, 1000, o.max_attempts = (int)dv)
        NUM("preprocess-lease", 0.1, 1e7, o.preprocess_lease_s = dv)
        NUM("inference-lease", 0.1, 1e7, o.inference_lease_s = dv)
        NUM("ack-timeout", 0.1, 1e7, o.ack_timeout_s = dv)
        NUM("heartbeat", 0.01, 3600, o.hb_interval = dv)
        NUM("heartbeat-timeout", 0.05, 1e6, o.hb_timeout = dv)
        NUM("max-ready", 1, 1e6, o.max_ready = (int)dv)
        NUM("max-file-mb", 0.001, 4096, o.max_file_bytes = (size_t)(dv * 1048576))
        NUM("max-message-mb", 1, 4096, o.lim.max_msg_bytes = o.lim.max_bin = (size_t)(dv * 1048576))
        NUM("progress-interval", 0.01, 1e6, o.progress_interval = dv)
        else if (!strcmp(name, "progress")) {
            if (!strcmp(val, "auto"))
                o.progress = -1;
            else if (!strcmp(val, "bar"))
                o.progress = 2;
            else if (!strcmp(val, "lines"))
                o.progress = 1;
            else if (!strcmp(val, "off"))
                o.progress = 0;
            else {
                fprintf(stderr, "paliflow producer: --progress: want auto|bar|lines|off, got '%s'\n", val);
                goto out;
            }
        } else if (!strcmp(name, "log-level")) {
            if (pf_log_level_option(val))
                goto out;
        }
#undef NUM
    }
    (void)iv;
    if (!o.bind || !o.db) {
        fprintf(stderr, "paliflow producer: --bind and --db are required\n");
        goto bad;
    }
    if (task) {
        if (o.image_size <= 0) {
            fprintf(stderr, "paliflow producer: --task needs --image-size (the model's image size)\n");
            goto bad;
        }
        if (!*task) {
            fprintf(stderr, "paliflow producer: --task is empty\n");
            goto bad;
        }
        o.task.prompt = task;
        o.have_task = 1;
    }
    /* The file size limit must fit in a message with its envelope. */
    if (o.max_file_bytes + 65536 > o.lim.max_msg_bytes)
        o.max_file_bytes = o.lim.max_msg_bytes - 65536;
    o.scan.roots = (const char *const *)(argv + optind);
    o.scan.n_roots = (size_t)(argc - optind);
    o.scan.include = include;
    o.scan.n_include = n_inc;
    o.scan.exclude = exclude;
    o.scan.n_exclude = n_exc;
    static volatile sig_atomic_t stop;
    pf_install_stop_signals(&stop);
    o.stop = &stop;
    pf_job_stats st;
    int r = pf_producer_run(&o, &st, &err);
    if (r < 0) {
        fprintf(stderr, "paliflow producer: %s\n", err.msg);
        rc = 2;
    } else {
        rc = r == 0 ? 0 : 1;
    }
    goto out;
bad:
    fprintf(stderr, "Run 'paliflow producer --help' for the options.\n");
    rc = 2;
out:
    free(include);
    free(exclude);
    pf_config_free_argv(argc, argv);
    return rc;
}
