/* paliflow producer: queue a job (folders, files, list files) and hand its items out to workers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config_file.h"
#include "base/optable.h"
#include "cli/cli_options.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "pipeline/producer.h"
#include "pipeline/service.h"

typedef struct producer_cli {
    pf_producer_params o;
    pf_service svc;
    pf_opt_list tasks;            /* --task, repeatable: one item per file and task */
    pf_opt_list include, exclude;
    int custom_size;
} producer_cli;

static void producer_init(void *obj)
{
    *(producer_cli *)obj = (producer_cli){.o = pf_producer_default_params()};
}

#define T producer_cli
static const pf_opt g_rows[] = {
    PF_OPT_ROW_STR("bind", T, o.bind, PF_OPT_NONEMPTY | PF_OPT_REQUIRED, "ENDPOINT",
                   "tcp://*:5555, ipc:///run/paliflow.sock, inproc://..."),
    PF_OPT_ROW_STR("db", T, o.db, PF_OPT_NONEMPTY | PF_OPT_REQUIRED, "FILE", "job store (SQLite, WAL)"),
    PF_OPT_ROW_LIST("task", T, tasks, "TASK",
                    "the prompt: 'caption en', 'ocr', 'answer en Q', 'detect cat ; dog', ...; repeat it for several "
                    "tasks per image (one record per image and task); given on the command line, it replaces the "
                    "config file's"),
    PF_OPT_ROW_STR("manifest", T, o.manifest, PF_OPT_NONEMPTY, "FILE",
                   "items from a JSONL, CSV or TSV manifest (header row: path, prompt or task, max_new_tokens, "
                   "temperature, top_k, top_p, seed, id; other columns go to the record's \"extra\"); a bad line "
                   "is named (file:line) and skipped"),
    PF_OPT_ROW_INT("image-size", T, o.image_size, 1, 8192, PF_OPT_NO_DEFAULT, "S",
                   "the model's image size (224, 448, 896); carried in every item; an inference worker whose model "
                   "takes another size gets no work"),
    PF_OPT_ROW_FLAG("custom-image-size", T, custom_size, 0,
                    "accept an --image-size other than 224/448/896 (custom or test models)"),
    PF_OPT_ROW_STR("list", T, o.scan.list_file, PF_OPT_NONEMPTY, "FILE",
                   "also take the paths listed in FILE (one per line, '-' = stdin; a line with a tab is refused: "
                   "per-item prompts go in a --manifest)"),
    PF_OPT_ROW_LIST("include", T, include, "GLOB",
                    "only files whose name or path below the folder matches (repeatable)"),
    PF_OPT_ROW_LIST("exclude", T, exclude, "GLOB",
                    "skip files and folders that match (repeatable); globs match in any case (*.jpg takes "
                    "IMG_1.JPG); the scan logs what each one skipped"),
    PF_OPT_ROW_FLAG("include-hidden", T, o.scan.include_hidden, 0,
                    "also take files and folders named '.*' (skipped by default: .DS_Store)"),
    CLI_TASK_ROWS(T, o.task),
    PF_OPT_ROW_FLAG("retry-failed", T, o.retry_failed, 0, "queue the job's failed items again (their attempts reset)"),
    PF_OPT_ROW_FLAG("path-only", T, o.path_only, 0, "send paths instead of bytes (workers share the storage); files "
                    "are stat'ed, not read: the key is made from path, size and mtime, and records also get "
                    "content_key (the bytes' key, made by the worker)"),
    PF_OPT_ROW_INT("max-attempts", T, o.max_attempts, 1, 1000, PF_OPT_RELOAD, "N",
                   "lost leases or failures before an item becomes an error record"),
    PF_OPT_ROW_DOUBLE("retry-backoff", T, o.retry_backoff_s, 0, 3600, PF_OPT_RELOAD, "S",
                      "wait S x 2^(attempt-1) seconds (jitter 0.5-1.5x, at most 60) before a retry; 0: at once"),
    PF_OPT_ROW_DOUBLE("preprocess-lease", T, o.preprocess_lease_s, 0.1, 1e7, PF_OPT_RELOAD, "S",
                      "seconds a preprocess worker may hold an item"),
    PF_OPT_ROW_DOUBLE("inference-lease", T, o.inference_lease_s, 0.1, 1e7, PF_OPT_RELOAD, "S",
                      "seconds an inference worker may hold an item"),
    PF_OPT_ROW_DOUBLE("ack-timeout", T, o.ack_timeout_s, 0.1, 1e7, PF_OPT_RELOAD, "S",
                      "seconds to wait for the sink to acknowledge a record"),
    PF_OPT_ROW_DOUBLE("heartbeat", T, o.hb_interval, 0.01, 3600, 0, "S", "heartbeat interval in seconds"),
    PF_OPT_ROW_DOUBLE("heartbeat-timeout", T, o.hb_timeout, 0.05, 1e6, PF_OPT_RELOAD, "S",
                      "a peer silent this long (seconds) is gone; its items are requeued"),
    PF_OPT_ROW_INT("max-ready", T, o.max_ready, 1, 1000000, PF_OPT_RELOAD, "N",
                   "preprocessed items kept in memory for inference workers"),
    {"max-file-mb", 0, PF_OPT_SIZE, offsetof(T, o.max_file_bytes), 0.001, 4096, 1048576, .arg = "N",
     .help = "larger files become error records (at most the message limit less 64 KiB)"},
    PF_PROTO_LIMITS_OPT_ROW(T, o.lim),
    CLI_PROGRESS_ROW(T, o.progress),
    PF_OPT_ROW_DOUBLE("progress-interval", T, o.progress_interval, 0.01, 1e6, PF_OPT_RELOAD, "S",
                      "seconds between progress lines"),
    PF_OPT_ROW_STR("report", T, o.report, PF_OPT_NONEMPTY, "FILE",
                   "write the job report (JSON: counts, throughput, error reasons) at the end"),
    PF_OPT_ROW_FLAG("stay", T, o.stay, 0,
                    "when the job is complete keep running (heartbeats, metrics) until SIGTERM, then exit 0 (for "
                    "service managers that restart exited processes)"),
    PF_OPT_ROW_HEADING("security (a tcp --bind needs CURVE keys or --insecure):"),
    /* before the service rows (whose --metrics has its own heading); the same field as their hidden client row */
    {"curve-sink-public", 0, PF_OPT_STR, offsetof(T, svc.sec.sink_public_arg), .flags = PF_OPT_NONEMPTY, .arg = "K",
     .def = "this producer's own key, which the sink on the hub shares",
     .help = "the only CURVE key that may say hello as the sink"},
    PF_SERVICE_OPT_ROWS(T, svc, 0, PF_OPT_HIDDEN),
    PF_OPT_END,
};
#undef T

static const pf_optcmd g_cmd = {
    .name = "producer",
    .synopsis =
        "usage: paliflow producer --bind ENDPOINT --db FILE.sqlite --task TASK --image-size S [OPTIONS] PATH...\n"
        "\n"
        "Queue every file under the PATHs (folders are walked recursively) for TASK and hand the items out to\n"
        "preprocess and inference workers that connect to ENDPOINT. The sink connects here too. Job state is\n"
        "kept in FILE.sqlite: rerun with the same --db to resume (done items are never redone; --task and\n"
        "--image-size may then be left out). Exits 0 when every item is done or failed, 1 when stopped\n"
        "(SIGTERM/SIGINT: the job store is committed and closed; rerun to resume), 2 when it cannot run (bad\n"
        "options, the job store or --bind unusable: the reason is on stderr). SIGHUP re-reads --config and\n"
        "applies the options marked 'reloads'.\n"
        "\n"
        "Tar (also .tar.gz/.tgz/.tar.bz2/.tar.xz/.tar.zst) and zip shards, given or found in folders, are read in\n"
        "place: one item per image member (WebDataset samples: the .json/.txt members of its key go to the\n"
        "record's \"extra\"); a --list or manifest line SHARD#MEMBER names one member. Members always travel as\n"
        "bytes (also with --path-only); hostile members are error records (README, \"Your data\").\n"
        "\n",
    .opts = g_rows,
    .size = sizeof(producer_cli),
    .init = producer_init,
    .operands = 1,
};

/* What the command derives from the parsed options, the same for the live and a reloaded copy (so a reload
 * compares like with like): the file size limit must fit in a message with its envelope. */
static void producer_finish(producer_cli *c)
{
    if (c->o.max_file_bytes + 65536 > c->o.lim.max_msg_bytes)
        c->o.max_file_bytes = c->o.lim.max_msg_bytes - 65536;
}

/* SIGHUP: the table's reloadable rows, and the allow-list. */
static int reparse(int argc, char **argv, void *arg)
{
    producer_cli *live = arg;
    producer_cli fresh;
    producer_init(&fresh);
    int rc = -1;
    if (pf_opt_parse(&g_cmd, &fresh, argc, argv, NULL, 1) == 0) {
        producer_finish(&fresh);
        pf_opt_reload(&g_cmd, live, &fresh);
        pf_service_reloaded(&live->svc, &fresh.svc);
        rc = 0;
    }
    pf_opt_free(&g_cmd, &fresh);
    return rc;
}

/* The job's tasks: the first is the item's prompt, the others more tasks per file. 0 ok, -1 refused
 * (printed). */
static int take_tasks(producer_cli *c, int argc0, char **argv0)
{
    pf_producer_params *o = &c->o;
    pf_opt_list_keep_last(&c->tasks, cli_count_option(argc0, argv0, "task"));
    if (!c->tasks.n)
        return 0;
    if (o->image_size <= 0) {
        fprintf(stderr, "paliflow producer: --task needs --image-size (the model's image size)\n");
        return -1;
    }
    /* A typo (300) would make every tensor the wrong size for every worker: refused up front. */
    if (!c->custom_size && !pf_image_size_is_paligemma(o->image_size)) {
        fprintf(stderr, "paliflow producer: --image-size %d: PaliGemma takes 224, 448 or 896 (--custom-image-size "
                        "for another model)\n", o->image_size);
        return -1;
    }
    o->task.prompt = c->tasks.v[0];
    o->have_task = 1;
    o->more_tasks = c->tasks.v + 1;
    o->n_more_tasks = c->tasks.n - 1;
    return 0;
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
    static producer_cli c; /* the SIGHUP reload reads it */
    producer_init(&c);
    pf_producer_params *o = &c.o;
    int rc = 2, first;
    int pr = pf_opt_parse(&g_cmd, &c, argc, argv, &first, 0);
    if (pr == 1) {
        rc = 0;
        goto out;
    }
    if (pr)
        goto out;
    if (!o->bind || !o->db) {
        fprintf(stderr, "paliflow producer: --bind and --db are required\n");
        goto bad;
    }
    if (take_tasks(&c, argc0, argv0))
        goto bad;
    if (pf_security_load(&c.svc.sec, &err) || pf_security_check_bind(&c.svc.sec, "--bind", o->bind, &err)) {
        fprintf(stderr, "paliflow producer: %s\n", err.msg);
        goto bad;
    }
    producer_finish(&c);
    o->scan.roots = (const char *const *)(argv + first);
    o->scan.n_roots = (size_t)(argc - first);
    o->scan.include = c.include.v;
    o->scan.n_include = c.include.n;
    o->scan.exclude = c.exclude.v;
    o->scan.n_exclude = c.exclude.n;
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
    pf_opt_free(&g_cmd, &c);
    pf_config_free_argv(argc, argv);
    return rc;
}
