/* paliflow producer: queue a job (folders, files, list files) and hand its items out to workers. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/option.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "pipeline/config.h"
#include "pipeline/producer.h"
#include "pipeline/service.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: paliflow producer --bind ENDPOINT --db FILE.sqlite --task TASK --image-size S [OPTIONS] PATH...\n"
            "\n"
            "Queue every file under the PATHs (folders are walked recursively) for TASK and hand the items out to\n"
            "preprocess and inference workers that connect to ENDPOINT. The sink connects here too. Job state is\n"
            "kept in FILE.sqlite: rerun with the same --db to resume (done items are never redone; --task and\n"
            "--image-size may then be left out). Exits 0 when every item is done or failed, 1 when stopped\n"
            "(SIGTERM/SIGINT: the job store is committed and closed; rerun to resume). SIGHUP re-reads --config.\n"
            "Tar (also .tar.gz/.tgz/.tar.bz2/.tar.xz/.tar.zst) and zip shards, given or found in folders, are read in\n"
            "place: one item per image member (WebDataset samples: the .json/.txt members of its key go to the\n"
            "record's \"extra\"); a --list or manifest line SHARD#MEMBER names one member. Members always travel as\n"
            "bytes (also with --path-only); hostile members are error records (README, \"Your data\").\n"
            "\n"
            "  --bind ENDPOINT          tcp://*:5555, ipc:///run/paliflow.sock, inproc://... (required)\n"
            "  --db FILE                job store (SQLite, WAL) (required)\n"
            "  --task TASK              the prompt: 'caption en', 'ocr', 'answer en Q', 'detect cat ; dog', ...;\n"
            "                           repeat it for several tasks per image (one record per image and task)\n"
            "  --manifest FILE          items from a JSONL, CSV or TSV manifest (header row: path, prompt or task,\n"
            "                           max_new_tokens, temperature, top_k, top_p, seed, id; other columns go to\n"
            "                           the record's \"extra\"); a bad line is named (file:line) and skipped\n"
            "  --image-size S           the model's image size (224, 448, 896); carried in every item; an\n"
            "                           inference worker whose model takes another size gets no work\n"
            "  --custom-image-size      accept an --image-size other than 224/448/896 (custom or test models)\n"
            "  --list FILE              also take the paths listed in FILE (one per line, '-' = stdin; a line with a\n"
            "                           tab is refused: per-item prompts go in a --manifest)\n"
            "  --include GLOB           only files whose name or path below the folder matches (repeatable)\n"
            "  --exclude GLOB           skip files and folders that match (repeatable); globs match in any\n"
            "                           case (*.jpg takes IMG_1.JPG); the scan logs what each one skipped\n"
            "  --include-hidden         also take files and folders named '.*' (skipped by default: .DS_Store)\n"
            PF_TASK_OPTIONS_HELP
            "  --retry-failed           queue the job's failed items again (their attempts reset)\n"
            "  --path-only              send paths instead of bytes (workers share the storage)\n"
            "  --max-attempts N         lost leases or failures before an item becomes an error record (3)\n"
            "  --retry-backoff S        wait S x 2^(attempt-1) s (jitter 0.5-1.5x, at most 60) before a\n"
            "                           retry (0.5; 0: retry at once)\n"
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
            "  --report FILE            write the job report (JSON: counts, throughput, error reasons) at the end\n"
            "  --stay                   when the job is complete keep running (heartbeats, metrics) until SIGTERM,\n"
            "                           then exit 0 (for service managers that restart exited processes)\n"
            "security (a tcp --bind needs CURVE keys or --insecure):\n"
            PF_SECURITY_SERVER_HELP
            "  --curve-sink-public K    the only CURVE key that may say hello as the sink (default: this producer's\n"
            "                           own key, which the sink on the hub shares)\n"
            PF_METRICS_HELP
            "  --config FILE            options from FILE ('name = value' lines; the command line wins)\n"
            "  --log-level LEVEL        error | warn | info | debug\n"
            "  --help                   this text\n");
}

typedef struct producer_cli {
    pf_producer_opts o;
    pf_service svc;
    const char **include, **exclude;
    size_t n_inc, n_exc;
    const char *task;
    int custom_size;
    const char **more_tasks;   /* --task given again: further tasks per image */
    size_t n_more;
} producer_cli;

static const struct option g_opts[] = {
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
    {"report", required_argument, 0, 0},        {"log-level", required_argument, 0, 0},
    {"stay", no_argument, 0, 0},                {"include-hidden", no_argument, 0, 0},
    {"custom-image-size", no_argument, 0, 0},   {"retry-backoff", required_argument, 0, 0},
    {"manifest", required_argument, 0, 0},      {"retry-failed", no_argument, 0, 0},
    PF_SERVICE_LONG_OPTIONS,                    {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0}};

static int cli_init(producer_cli *c, int argc)
{
    memset(c, 0, sizeof *c);
    pf_producer_opts_defaults(&c->o);
    c->include = calloc((size_t)argc + 1, sizeof *c->include);
    c->exclude = calloc((size_t)argc + 1, sizeof *c->exclude);
    c->more_tasks = calloc((size_t)argc + 1, sizeof *c->more_tasks);
    return c->include && c->exclude && c->more_tasks ? 0 : -1;
}

static void cli_free(producer_cli *c)
{
    free(c->include);
    free(c->exclude);
    free(c->more_tasks);
}

static int progress_option(const char *val, int *mode, pf_err *err)
{
    if (!strcmp(val, "auto"))
        *mode = -1;
    else if (!strcmp(val, "bar"))
        *mode = 2;
    else if (!strcmp(val, "lines"))
        *mode = 1;
    else if (!strcmp(val, "off"))
        *mode = 0;
    else
        return pf_errf(err, "--progress: want auto|bar|lines|off, got '%s'", val);
    return 1;
}

static int number_option(const char *name, const char *val, pf_producer_opts *o, pf_err *err)
{
    double v;
    PF_NUM_OPTION("image-size", 1, 8192, v, o->image_size = (int)v)
    PF_NUM_OPTION("max-attempts", 1, 1000, v, o->max_attempts = (int)v)
    PF_NUM_OPTION("retry-backoff", 0, 3600, v, o->retry_backoff_s = v)
    PF_NUM_OPTION("preprocess-lease", 0.1, 1e7, v, o->preprocess_lease_s = v)
    PF_NUM_OPTION("inference-lease", 0.1, 1e7, v, o->inference_lease_s = v)
    PF_NUM_OPTION("ack-timeout", 0.1, 1e7, v, o->ack_timeout_s = v)
    PF_NUM_OPTION("heartbeat", 0.01, 3600, v, o->hb_interval = v)
    PF_NUM_OPTION("heartbeat-timeout", 0.05, 1e6, v, o->hb_timeout = v)
    PF_NUM_OPTION("max-ready", 1, 1e6, v, o->max_ready = (int)v)
    PF_NUM_OPTION("max-file-mb", 0.001, 4096, v, o->max_file_bytes = (size_t)(v * 1048576))
    PF_NUM_OPTION("max-message-mb", 1, 4096, v, o->lim.max_msg_bytes = o->lim.max_bin = (size_t)(v * 1048576))
    PF_NUM_OPTION("progress-interval", 0.01, 1e6, v, o->progress_interval = v)
    return 0;
}

/* The producer's options (cli_option_fn): the generation settings, the service's, then its own. */
static int producer_option(const char *name, const char *val, void *arg, pf_err *err)
{
    producer_cli *c = arg;
    pf_producer_opts *o = &c->o;
    int t = pf_task_option(name, val, &o->task, err);
    if (t == 0)
        t = pf_service_option(name, val, &c->svc, err);
    if (t != 0)
        return t;
    if (!strcmp(name, "bind"))
        o->bind = val;
    else if (!strcmp(name, "db"))
        o->db = val;
    else if (!strcmp(name, "task"))
        c->more_tasks[c->n_more++] = val;   /* all of them; cmd_producer keeps the command line's */
    else if (!strcmp(name, "manifest"))
        o->manifest = val;
    else if (!strcmp(name, "retry-failed"))
        o->retry_failed = 1;
    else if (!strcmp(name, "list"))
        o->scan.list_file = val;
    else if (!strcmp(name, "include"))
        c->include[c->n_inc++] = val;
    else if (!strcmp(name, "exclude"))
        c->exclude[c->n_exc++] = val;
    else if (!strcmp(name, "include-hidden"))
        o->scan.include_hidden = 1;
    else if (!strcmp(name, "path-only"))
        o->path_only = 1;
    else if (!strcmp(name, "report"))
        o->report = val;
    else if (!strcmp(name, "stay"))
        o->stay = 1;
    else if (!strcmp(name, "custom-image-size"))
        c->custom_size = 1;
    else if (!strcmp(name, "progress"))
        return progress_option(val, &o->progress, err);
    else
        return number_option(name, val, o, err);
    return 1;
}

/* 0 parsed, 1 --help printed, 2 usage error (message printed). The PATHs stay at argv[optind...]. */
static int parse(int argc, char **argv, producer_cli *c)
{
    return cli_parse_options("producer", argc, argv, g_opts, usage, producer_option, c, 1);
}

/* SIGHUP: apply what is safe to change mid-job. */
static int reparse(int argc, char **argv, void *arg)
{
    producer_cli *live = arg;
    producer_cli fresh;
    int rc = -1;
    if (cli_init(&fresh, argc) == 0 && parse(argc, argv, &fresh) == 0) {
        pf_producer_opts *o = &live->o;
        const pf_producer_opts *n = &fresh.o;
        PF_RELOAD("max-attempts", o->max_attempts, n->max_attempts);
        PF_RELOAD("retry-backoff", o->retry_backoff_s, n->retry_backoff_s);
        PF_RELOAD("preprocess-lease", o->preprocess_lease_s, n->preprocess_lease_s);
        PF_RELOAD("inference-lease", o->inference_lease_s, n->inference_lease_s);
        PF_RELOAD("ack-timeout", o->ack_timeout_s, n->ack_timeout_s);
        PF_RELOAD("heartbeat-timeout", o->hb_timeout, n->hb_timeout);
        PF_RELOAD("max-ready", o->max_ready, n->max_ready);
        PF_RELOAD("progress-interval", o->progress_interval, n->progress_interval);
        if (strcmp(o->bind, n->bind ? n->bind : "") != 0 || strcmp(o->db, n->db ? n->db : "") != 0)
            pf_warn("config", "reload: --bind/--db changed: restart the producer to apply");
        pf_service_reloaded(&live->svc, &fresh.svc);
        rc = 0;
    }
    cli_free(&fresh);
    return rc;
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
    producer_cli c;
    int rc = 2;
    if (cli_init(&c, argc)) {
        fprintf(stderr, "paliflow producer: out of memory\n");
        goto out;
    }
    pf_producer_opts *o = &c.o;
    int pr = parse(argc, argv, &c);
    if (pr == 1) {
        rc = 0;
        goto out;
    }
    if (pr)
        goto bad;
    if (!o->bind || !o->db) {
        fprintf(stderr, "paliflow producer: --bind and --db are required\n");
        goto bad;
    }
    /* --task is repeatable (several tasks per image); the command line's replace a config file's */
    size_t n_cli = cli_count_option(argc0, argv0, "task");
    if (n_cli && n_cli < c.n_more) {
        memmove(c.more_tasks, c.more_tasks + (c.n_more - n_cli), n_cli * sizeof *c.more_tasks);
        c.n_more = n_cli;
    }
    if (c.n_more) {
        c.task = c.more_tasks[0];
        memmove(c.more_tasks, c.more_tasks + 1, (c.n_more - 1) * sizeof *c.more_tasks);
        c.n_more--;
    }
    if (c.task) {
        if (o->image_size <= 0) {
            fprintf(stderr, "paliflow producer: --task needs --image-size (the model's image size)\n");
            goto bad;
        }
        /* A typo (300) would make every tensor the wrong size for every worker: refused up front. */
        if (!c.custom_size && !pf_image_size_is_paligemma(o->image_size)) {
            fprintf(stderr, "paliflow producer: --image-size %d: PaliGemma takes 224, 448 or 896 (--custom-image-size "
                            "for another model)\n", o->image_size);
            goto bad;
        }
        if (!*c.task) {
            fprintf(stderr, "paliflow producer: --task is empty\n");
            goto bad;
        }
        o->task.prompt = c.task;
        o->have_task = 1;
        for (size_t i = 0; i < c.n_more; i++)
            if (!*c.more_tasks[i]) {
                fprintf(stderr, "paliflow producer: --task is empty\n");
                goto bad;
            }
        o->more_tasks = c.more_tasks;
        o->n_more_tasks = c.n_more;
    }
    if (pf_security_load(&c.svc.sec, &err) || pf_security_check_bind(&c.svc.sec, "--bind", o->bind, &err)) {
        fprintf(stderr, "paliflow producer: %s\n", err.msg);
        goto bad;
    }
    /* The file size limit must fit in a message with its envelope. */
    if (o->max_file_bytes + 65536 > o->lim.max_msg_bytes)
        o->max_file_bytes = o->lim.max_msg_bytes - 65536;
    o->scan.roots = (const char *const *)(argv + optind);
    o->scan.n_roots = (size_t)(argc - optind);
    o->scan.include = c.include;
    o->scan.n_include = c.n_inc;
    o->scan.exclude = c.exclude;
    o->scan.n_exclude = c.n_exc;
    if (pf_service_start(&c.svc, &err)) {
        fprintf(stderr, "paliflow producer: %s\n", err.msg);
        pf_service_stop(&c.svc);
        rc = 2;
        goto out;
    }
    static volatile sig_atomic_t stop;
    cli_reloader rl = {argc0, argv0, reparse, &c};
    cli_control(&o->ctl, &c.svc, &stop, &rl);
    o->sec = &c.svc.sec;
    pf_job_stats st;
    int r = pf_producer_run(o, &st, &err);
    pf_service_stop(&c.svc);
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
    cli_free(&c);
    pf_config_free_argv(argc, argv);
    return rc;
}
