/* paliflow run: the whole pipeline in one process (embedded mode). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config_file.h"
#include "base/log.h"
#include "base/optable.h"
#include "base/signals.h"
#include "cli/cli_options.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "model/seg/decoder.h"
#include "pipeline/compact.h"
#include "pipeline/out_view.h"
#include "pipeline/embedded.h"
#include "pipeline/run_exit.h"
#include "pipeline/service.h"
#include "image/image.h"
#include "workers/stages.h"

typedef struct run_cli {
    pf_embedded_params eo;
    pf_service svc;                 /* --metrics, and CURVE for a tcp --publish */
    pf_preprocess_params pcfg;      /* --max-pixels */
    double decode_mb;
    pf_session_params so;
    const char *model, *tokenizer, *db, *seg_path;
    pf_opt_list tasks, include, exclude;
} run_cli;

static void run_init(void *obj)
{
    run_cli *c = obj;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    *c = (run_cli){.eo = {.producer = pf_producer_default_params(), .sink = pf_sink_default_params(),
                          .max_batch = 8, .max_delay_ms = 20, .pre_threads = cores > 4 ? 4 : cores > 0 ? (int)cores : 1},
                   .pcfg = {.max_pixels = PF_IMG_DEFAULT_MAX_PIXELS},
                   .decode_mb = CLI_DECODE_MEMORY_MB_DEFAULT};
}

#define T run_cli
static const pf_opt g_rows[] = {
    PF_OPT_ROW_STR("model", T, model, PF_OPT_NONEMPTY | PF_OPT_REQUIRED, "DIR", "checkpoint folder"),
    PF_OPT_ROW_STR("tokenizer", T, tokenizer, PF_OPT_NONEMPTY | PF_OPT_REQUIRED, "FILE", "tokenizer.json"),
    {"task", 0, PF_OPT_LIST, offsetof(T, tasks), .flags = PF_OPT_NONEMPTY | PF_OPT_REQUIRED, .arg = "TASK",
     .help = "'caption en', 'ocr', 'answer en Q', 'detect cat ; dog', any prompt; repeat it for several tasks per "
             "image (one record per image and task; the image's vision features are computed once for all its "
             "tasks); given on the command line, it replaces the config file's"},
    PF_OPT_ROW_STR("manifest", T, eo.producer.manifest, PF_OPT_NONEMPTY, "FILE",
                   "items from a JSONL, CSV or TSV manifest (header row: path, prompt or task, max_new_tokens, "
                   "temperature, top_k, top_p, seed, id; other columns go to the record's \"extra\"); a bad line "
                   "is named (file:line) and skipped"),
    PF_OPT_ROW_STR("out", T, eo.sink.out, PF_OPT_NONEMPTY | PF_OPT_REQUIRED, "FILE", "JSON-lines output"),
    {"db", 0, PF_OPT_STR, offsetof(T, db), .flags = PF_OPT_NONEMPTY, .arg = "FILE", .def = "FILE.jsonl.db",
     .help = "job store"},
    {"image-size", 0, PF_OPT_INT, offsetof(T, eo.producer.image_size), 224, 896, .arg = "S", .def = "the model's",
     .help = "another size than the model's is refused before the job starts"},
    PF_OPT_ROW_STR("list", T, eo.producer.scan.list_file, PF_OPT_NONEMPTY, "FILE",
                   "also take the paths listed in FILE ('-' = stdin; no tabs: see --manifest)"),
    PF_OPT_ROW_FLAG("retry-failed", T, eo.producer.retry_failed, 0,
                    "queue the job's failed items again; when a retry succeeds, its earlier error record is "
                    "dropped from FILE.jsonl at the end (one record per item)"),
    PF_OPT_ROW_LIST("include", T, include, "GLOB",
                    "only files found in folders whose name or path matches (repeatable; any case: *.jpg takes "
                    "IMG_1.JPG; the scan logs what each one skipped)"),
    PF_OPT_ROW_LIST("exclude", T, exclude, "GLOB", "skip files and folders that match (repeatable)"),
    PF_OPT_ROW_FLAG("include-hidden", T, eo.producer.scan.include_hidden, 0, "also take files and folders named '.*'"),
    CLI_TASK_ROWS(T, eo.producer.task),
    {"preprocess-threads", 0, PF_OPT_INT, offsetof(T, eo.pre_threads), 1, 256, .arg = "N",
     .def = "cores, at most 4", .help = "images decoded in parallel"},
    CLI_DECODE_ROWS(T, pcfg.max_pixels, decode_mb),
    PF_OPT_ROW_INT("max-batch", T, eo.max_batch, 1, 4096, 0, "N", "sequences generated together"),
    PF_OPT_ROW_INT("max-delay-ms", T, eo.max_delay_ms, 0, 600000, 0, "N", "when idle, wait this long for more items"),
    CLI_ENGINE_ROWS(T, so),
    PF_OPT_ROW_INT("max-attempts", T, eo.producer.max_attempts, 1, 1000, 0, "N",
                   "tries before an item becomes an error record"),
    PF_OPT_ROW_STR("publish", T, eo.sink.publish, PF_OPT_NONEMPTY, "ENDPOINT",
                   "also publish every record on a PUB socket (a tcp one needs --curve-server-key and "
                   "--curve-allow, or --insecure)"),
    PF_VIEW_OPT_ROWS(T, eo.sink.views),
    PF_OPT_ROW_STR("report", T, eo.producer.report, PF_OPT_NONEMPTY, "FILE",
                   "write the job report (JSON: counts, throughput, error reasons) at the end"),
    PF_OPT_ROW_STR("seg-decoder", T, seg_path, PF_OPT_NONEMPTY, "FILE",
                   "big_vision's vae-oid.npz: records of 'segment' tasks get \"objects\" with masks (COCO RLE); "
                   "without it, label and box only and a note"),
    CLI_PROGRESS_ROW(T, eo.producer.progress),
    {"log-level", 0, PF_OPT_FUNC, 0, .fn = pf_opt_log_level, .arg = "LEVEL", .def = "warn: failed files and problems",
     .help = "error | warn | info | debug (also PALIFLOW_LOG)"},
    PF_SERVICE_OPT_ROWS(T, svc, 0, PF_OPT_HIDDEN),
    PF_OPT_END,
};
#undef T

static const pf_optcmd g_cmd = {
    .name = "run",
    .synopsis =
        "usage: paliflow run --model DIR --tokenizer FILE --task TASK --out FILE.jsonl [OPTIONS] PATH...\n"
        "\n"
        "Annotate every image under the PATHs in one process: a producer, preprocess threads, one inference\n"
        "worker (continuous batching) and the sink, connected by inproc sockets, the same code and protocol\n"
        "as the multi-process setup. One JSON line per file goes to FILE.jsonl; the job state is kept in\n"
        "FILE.jsonl.db so an interrupted run resumes where it stopped; records missing from FILE.jsonl (deleted,\n"
        "cut) are redone. The output must be a regular file, not in use by another run. Hidden files and\n"
        "folders (names starting with '.', like .DS_Store) are skipped unless --include-hidden.\n"
        "\n"
        "Tar (also .tar.gz/.tgz/.tar.bz2/.tar.xz/.tar.zst) and zip shards, given or found in folders, are read in\n"
        "place: one item per image member (WebDataset samples: the .json/.txt members of its key go to the\n"
        "record's \"extra\"); a --list or manifest line SHARD#MEMBER names one member. Hostile members are\n"
        "error records (README, \"Your data\").\n"
        "\n" PF_RUN_EXIT_HELP "\n",
    .opts = g_rows,
    .size = sizeof(run_cli),
    .init = run_init,
    .operands = 1,
};

/* The tasks and the job store path. 0 ok, -1 refused (printed). */
static int take_tasks(run_cli *c, int argc0, char **argv0, char **db_default)
{
    pf_producer_params *p = &c->eo.producer;
    pf_opt_list_keep_last(&c->tasks, cli_count_option(argc0, argv0, "task"));
    if (!c->model || !c->tokenizer || !c->tasks.n || !c->eo.sink.out) {
        fprintf(stderr, "paliflow run: --model, --tokenizer, --task and --out are required\n");
        return -1;
    }
    pf_err err = {{0}};
    if (pf_view_params_check(&c->eo.sink.views, &err)) {
        fprintf(stderr, "paliflow run: %s\n", err.msg);
        return -1;
    }
    p->task.prompt = c->tasks.v[0];
    p->have_task = 1;
    p->more_tasks = c->tasks.v + 1;
    p->n_more_tasks = c->tasks.n - 1;
    if (!c->db) {
        size_t n = strlen(c->eo.sink.out) + 4;
        if (!(*db_default = malloc(n))) {
            fprintf(stderr, "paliflow run: out of memory\n");
            return -1;
        }
        snprintf(*db_default, n, "%s.db", c->eo.sink.out);
        c->db = *db_default;
    }
    p->db = c->db;
    return 0;
}

int cmd_run(int argc0, char **argv0)
{
    int argc;
    char **argv;
    pf_err err = {{0}};
    if (pf_config_expand_argv(argc0, argv0, &argc, &argv, &err)) {
        fprintf(stderr, "paliflow run: %s\n", err.msg);
        return 2;
    }
    /* One person at a terminal: by default only what they act on (failed files, problems); the roles'
     * INFO lines (joins, scans, shutdown) are for the services' logs. --log-level / PALIFLOW_LOG win. */
    if (!getenv("PALIFLOW_LOG"))
        pf_log_set_level(PF_LOG_WARN);
    static run_cli c;
    run_init(&c);
    pf_embedded_params *e = &c.eo;
    pf_seg_decoder *seg = NULL;
    char *db_default = NULL;
    int rc = 2, first;
    int pr = pf_opt_parse(&g_cmd, &c, argc, argv, &first, 0);
    if (pr == 1) {
        rc = 0;
        goto out;
    }
    if (pr)
        goto out;
    if (take_tasks(&c, argc0, argv0, &db_default))
        goto bad;
    if (first == argc && !e->producer.scan.list_file && !e->producer.manifest) {
        fprintf(stderr, "paliflow run: give at least one PATH (file or folder), --list FILE or --manifest FILE\n");
        goto bad;
    }
    /* Before anything starts: a missing or malformed decoder is refused by name, not found out per record. */
    if (c.seg_path && pf_seg_decoder_load(c.seg_path, &seg, &err)) {
        fprintf(stderr, "paliflow run: --seg-decoder: %s\n", err.msg);
        goto out;
    }
    e->producer.scan.roots = (const char *const *)(argv + first);
    e->producer.scan.n_roots = (size_t)(argc - first);
    e->producer.scan.include = c.include.v;
    e->producer.scan.n_include = c.include.n;
    e->producer.scan.exclude = c.exclude.v;
    e->producer.scan.n_exclude = c.exclude.n;
    /* One process: a lost peer means a bug, not a network; keep the timeouts generous. */
    e->producer.hb_timeout = 60;
    e->sink.hb_timeout = 60;
    if (pf_security_load(&c.svc.sec, &err) ||
        (e->sink.publish && pf_security_check_bind(&c.svc.sec, "--publish", e->sink.publish, &err))) {
        fprintf(stderr, "paliflow run: %s\n", err.msg);
        goto bad;
    }
    e->sink.sec = &c.svc.sec;
    if (pf_service_start(&c.svc, &err)) {
        fprintf(stderr, "paliflow run: %s\n", err.msg);
        rc = PF_EXIT_ERROR;
        goto out;
    }
    static volatile sig_atomic_t stop;
    pf_install_stop_signals(&stop);
    e->stop = &stop;
    /* one decode budget shared by the --preprocess-threads (freed at exit with the process) */
    static pf_img_budget *budget;
    if (!budget && !(budget = pf_img_budget_new((uint64_t)(c.decode_mb * 1048576.0)))) {
        fprintf(stderr, "paliflow run: out of memory\n");
        rc = PF_EXIT_ERROR;
        goto out;
    }
    c.pcfg.budget = budget;
    pf_inference_params icfg = {.model_dir = c.model, .tokenizer = c.tokenizer, .session = c.so,
                                .max_batch = e->max_batch, .seg_decoder = seg};
    e->pre_ops = &pf_stage_preprocess_ops;
    e->pre_cfg = &c.pcfg;
    e->inf_ops = &pf_stage_inference_ops;
    e->inf_cfg = &icfg;
    pf_job_stats st = {0};
    int r = pf_embedded_run(e, &st, &err);
    if (r < 0) {
        fprintf(stderr, "paliflow run: %s\n", err.msg);
    } else if (r > 0) {
        fprintf(stderr, "paliflow run: interrupted at %lld of %lld files; rerun the same command to resume (job "
                "state in %s)\n", (long long)(st.done + st.failed), (long long)st.total, c.db);
    } else {
        /* one final record per (item, task): errors a later success superseded leave the output */
        int64_t dropped = 0;
        if (pf_output_compact(e->sink.out, c.db, &dropped, &err))
            fprintf(stderr, "paliflow run: %s (superseded error records stay in the output)\n", err.msg);
        else if (dropped && pf_views_refresh(&e->sink.views, e->sink.out, &err))
            fprintf(stderr, "paliflow run: %s (the other output forms catch up at the next run)\n", err.msg);
        char hidden[64] = "";
        if (st.hidden_skipped)
            snprintf(hidden, sizeof hidden, " (%lld hidden skipped)", (long long)st.hidden_skipped);
        fprintf(stderr, "paliflow run: %lld files%s, %lld records, %lld errors -> %s (%.1f s)%s", (long long)st.total,
                hidden, (long long)st.done, (long long)st.failed, e->sink.out, st.seconds,
                st.failed && !st.done ? "; every file failed: see the warnings above" : "");
        if (dropped)
            fprintf(stderr, "; %lld earlier error record%s superseded by a success and removed", (long long)dropped,
                    dropped == 1 ? "" : "s");
        fputc('\n', stderr);
    }
    rc = pf_run_exit_code(r, &st);
    goto out;
bad:
    fprintf(stderr, "Run 'paliflow run --help' for the options.\n");
    rc = 2;
out:
    pf_service_stop(&c.svc);
    pf_seg_decoder_free(seg);
    pf_opt_free(&g_cmd, &c);
    free(db_default);
    pf_config_free_argv(argc, argv);
    return rc;
}
