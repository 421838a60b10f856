/* paliflow run: the whole pipeline in one process (embedded mode). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "cli/cli_engine.h"
#include "cli/cli_worker.h"
#include "cli/commands.h"
#include "model/seg/decoder.h"
#include "pipeline/config.h"
#include "pipeline/compact.h"
#include "pipeline/embedded.h"
#include "pipeline/run_exit.h"
#include "pipeline/service.h"
#include "workers/stages.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: paliflow run --model DIR --tokenizer FILE --task TASK --out FILE.jsonl [OPTIONS] PATH...\n"
            "\n"
            "Annotate every image under the PATHs in one process: a producer, preprocess threads, one inference\n"
            "worker (continuous batching) and the sink, connected by inproc sockets, the same code and protocol\n"
            "as the multi-process setup. One JSON line per file goes to FILE.jsonl; the job state is kept in\n"
            "FILE.jsonl.db so an interrupted run resumes where it stopped; records missing from FILE.jsonl (deleted,\n"
            "cut) are redone. The output must be a regular file, not in use by another run. Hidden files and\n"
            "folders (names starting with '.', like .DS_Store) are skipped unless --include-hidden.\n"
            "\n"
            PF_RUN_EXIT_HELP
            "\n"
            "  --model DIR              checkpoint folder (required)\n"
            "  --tokenizer FILE         tokenizer.json (required)\n"
            "  --task TASK              'caption en', 'ocr', 'answer en Q', 'detect cat ; dog', any prompt (required);\n"
            "                           repeat it for several tasks per image (one record per image and task; the\n"
            "                           image's vision features are computed once for all its tasks)\n"
            "  --manifest FILE          items from a JSONL, CSV or TSV manifest (header row: path, prompt or task,\n"
            "                           max_new_tokens, temperature, top_k, top_p, seed, id; other columns go to\n"
            "                           the record's \"extra\"); a bad line is named (file:line) and skipped\n"
            "  --out FILE               JSON-lines output (required)\n"
            "  --db FILE                job store (default FILE.jsonl.db)\n"
            "  --image-size S           default: the model's; another size is refused before the job starts\n"
            "  --list FILE              also take the paths listed in FILE ('-' = stdin; no tabs: see --manifest)\n"
            "  --retry-failed           queue the job's failed items again; when a retry succeeds, its earlier\n"
            "                           error record is dropped from FILE.jsonl at the end (one record per item)\n"
            "  --include GLOB, --exclude GLOB   filter files found in folders (repeatable; any case: *.jpg\n"
            "                           takes IMG_1.JPG; the scan logs what each one skipped)\n"
            "  --include-hidden         also take files and folders named '.*'\n"
            PF_TASK_OPTIONS_HELP
            "  --preprocess-threads N   images decoded in parallel (default: cores, at most 4)\n" PF_DECODE_OPTIONS_HELP
            "  --max-batch N            sequences generated together (8)\n"
            "  --max-delay-ms N         when idle, wait this long for more items (20)\n"
            CLI_ENGINE_OPTIONS_HELP
            "  --max-attempts N         tries before an item becomes an error record (3)\n"
            PF_VIEW_OPTIONS_HELP
            "  --publish ENDPOINT       also publish every record on a PUB socket\n"
            "  --report FILE            write the job report (JSON: counts, throughput, error reasons) at the end\n"
            "  --seg-decoder FILE       big_vision's vae-oid.npz: records of 'segment' tasks get \"objects\" with\n"
            "                           masks (COCO RLE); without it, label and box only and a note\n"
            PF_METRICS_HELP
            "  (a tcp --publish needs --curve-server-key and --curve-allow, or --insecure)\n"
            "  --progress MODE          auto | bar | lines | off\n"
            "  --config FILE            options from FILE ('name = value' lines; the command line wins)\n"
            "  --log-level LEVEL        error | warn | info | debug (default warn: failed files and problems)\n"
            "  --help                   this text\n");
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
    pf_embedded_opts eo;
    pf_preprocess_cfg pcfg = {0};
    int decode_mb = PF_DECODE_MEMORY_MB_DEFAULT;
    memset(&eo, 0, sizeof eo);
    pf_service svc;   /* --metrics, and CURVE for a tcp --publish */
    memset(&svc, 0, sizeof svc);
    pf_producer_opts_defaults(&eo.producer);
    pf_sink_opts_defaults(&eo.sink);
    eo.max_batch = 8;
    eo.max_delay_ms = 20;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    eo.pre_threads = cores > 4 ? 4 : cores > 0 ? (int)cores : 1;
    const char **include = calloc((size_t)argc, sizeof *include), **exclude = calloc((size_t)argc, sizeof *exclude);
    const char **more_tasks = calloc((size_t)argc, sizeof *more_tasks);
    size_t n_inc = 0, n_exc = 0, n_more = 0;
    if (!include || !exclude || !more_tasks) {
        free(include);
        free(exclude);
        free(more_tasks);
        pf_config_free_argv(argc, argv);
        fprintf(stderr, "paliflow run: out of memory\n");
        return 2;
    }
    const char *model = NULL, *tokenizer = NULL, *task = NULL, *db = NULL, *seg_path = NULL;
    pf_seg_decoder *seg = NULL;
    pf_session_opts so = {0};
    char *db_default = NULL;
    static const struct option opts[] = {
        {"model", required_argument, 0, 0},        {"tokenizer", required_argument, 0, 0},
        {"task", required_argument, 0, 0},         {"out", required_argument, 0, 0},
        {"manifest", required_argument, 0, 0},     {"retry-failed", no_argument, 0, 0},
        {"db", required_argument, 0, 0},           {"image-size", required_argument, 0, 0},
        {"list", required_argument, 0, 0},         {"include", required_argument, 0, 0},
        {"exclude", required_argument, 0, 0},      {"max-new-tokens", required_argument, 0, 0},
        {"temperature", required_argument, 0, 0},  {"top-k", required_argument, 0, 0},
        {"top-p", required_argument, 0, 0},        {"repetition-penalty", required_argument, 0, 0},
        {"seed", required_argument, 0, 0},         {"autorotate", no_argument, 0, 0},
        {"preprocess-threads", required_argument, 0, 0}, {"max-batch", required_argument, 0, 0},
        {"max-delay-ms", required_argument, 0, 0}, {"max-attempts", required_argument, 0, 0},
        {"publish", required_argument, 0, 0},      {"progress", required_argument, 0, 0},
        {"log-level", required_argument, 0, 0},    {"help", no_argument, 0, 'h'},
        {"report", required_argument, 0, 0},       {"seg-decoder", required_argument, 0, 0},
        PF_SERVICE_LONG_OPTIONS,
        {"max-pixels", required_argument, 0, 0},   {"decode-memory-mb", required_argument, 0, 0},
        {"include-hidden", no_argument, 0, 0},
        CLI_ENGINE_LONG_OPTIONS,
        PF_VIEW_LONG_OPTIONS,
        {0, 0, 0, 0}};
    int rc = 2, idx, c;
    long long iv;
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
        int t = pf_task_option(name, val, &eo.producer.task, &err);
        if (t < 0) {
            fprintf(stderr, "paliflow run: %s\n", err.msg);
            goto out;
        }
        if (t > 0)
            continue;
        if ((t = pf_view_option(name, val, &eo.sink.views, &err)) != 0) {
            if (t < 0) {
                fprintf(stderr, "paliflow run: %s\n", err.msg);
                goto out;
            }
            continue;
        }
        if ((t = cli_engine_option(name, val, &so, &err)) != 0) {
            if (t < 0) {
                fprintf(stderr, "paliflow run: %s\n", err.msg);
                goto out;
            }
            continue;
        }
#define INT(opt, lo, hi, dst)                                                                                      \
    else if (!strcmp(name, opt)) {                                                                                 \
        if (pf_parse_int(val, lo, hi, &iv)) {                                                                      \
            fprintf(stderr, "paliflow run: --%s: want an integer in [%lld, %lld], got '%s'\n", opt, (long long)lo,  \
                    (long long)hi, val);                                                                           \
            goto out;                                                                                              \
        }                                                                                                          \
        dst;                                                                                                       \
    }
        if (!strcmp(name, "model"))
            model = val;
        else if (!strcmp(name, "tokenizer"))
            tokenizer = val;
        else if (!strcmp(name, "task"))
            more_tasks[n_more++] = val;   /* all of them; the command line's replace a config file's below */
        else if (!strcmp(name, "manifest"))
            eo.producer.manifest = val;
        else if (!strcmp(name, "retry-failed"))
            eo.producer.retry_failed = 1;
        else if (!strcmp(name, "out"))
            eo.sink.out = val;
        else if (!strcmp(name, "db"))
            db = val;
        else if (!strcmp(name, "list"))
            eo.producer.scan.list_file = val;
        else if (!strcmp(name, "include"))
            include[n_inc++] = val;
        else if (!strcmp(name, "exclude"))
            exclude[n_exc++] = val;
        else if (!strcmp(name, "publish"))
            eo.sink.publish = val;
        else if (!strcmp(name, "report"))
            eo.producer.report = val;
        else if (!strcmp(name, "seg-decoder"))
            seg_path = val;
        else if (!strcmp(name, "include-hidden"))
            eo.producer.scan.include_hidden = 1;
        else if ((t = pf_service_option(name, val, &svc, &err)) != 0) {
            if (t < 0) {
                fprintf(stderr, "paliflow run: %s\n", err.msg);
                goto out;
            }
        }
        INT("image-size", 224, 896, eo.producer.image_size = (int)iv)
        INT("preprocess-threads", 1, 256, eo.pre_threads = (int)iv)
        INT("max-batch", 1, 4096, eo.max_batch = (int)iv)
        INT("max-delay-ms", 0, 600000, eo.max_delay_ms = (int)iv)
        INT("max-attempts", 1, 1000, eo.producer.max_attempts = (int)iv)
        INT("max-pixels", 1, 1000000000000LL, pcfg.max_pixels = (uint64_t)iv)
        INT("decode-memory-mb", 16, 1 << 20, decode_mb = (int)iv)
        else if (!strcmp(name, "progress")) {
            eo.producer.progress = !strcmp(val, "bar") ? 2 : !strcmp(val, "lines") ? 1 : !strcmp(val, "off") ? 0 : -1;
            if (eo.producer.progress < 0 && strcmp(val, "auto")) {
                fprintf(stderr, "paliflow run: --progress: want auto|bar|lines|off, got '%s'\n", val);
                goto out;
            }
        } else if (!strcmp(name, "log-level") && pf_log_level_option("run", val))
            goto out;
#undef INT
    }
    /* --task is repeatable (several tasks per image); the command line's replace a config file's */
    size_t n_cli = cli_count_option(argc0, argv0, "task");
    if (n_cli && n_cli < n_more) {
        memmove(more_tasks, more_tasks + (n_more - n_cli), n_cli * sizeof *more_tasks);
        n_more = n_cli;
    }
    if (n_more) {
        task = more_tasks[0];
        memmove(more_tasks, more_tasks + 1, (n_more - 1) * sizeof *more_tasks);
        n_more--;
    }
    for (size_t i = 0; i < n_more; i++)
        if (!*more_tasks[i])
            task = "";
    eo.producer.more_tasks = more_tasks;
    eo.producer.n_more_tasks = n_more;
    if (!model || !tokenizer || !task || !eo.sink.out) {
        fprintf(stderr, "paliflow run: --model, --tokenizer, --task and --out are required\n");
        goto bad;
    }
    if (!*task) {
        fprintf(stderr, "paliflow run: --task is empty\n");
        goto bad;
    }
    if (optind == argc && !eo.producer.scan.list_file && !eo.producer.manifest) {
        fprintf(stderr, "paliflow run: give at least one PATH (file or folder), --list FILE or --manifest FILE\n");
        goto bad;
    }
    /* Before anything starts: a missing or malformed decoder is refused by name, not found out per record. */
    if (seg_path && pf_seg_decoder_load(seg_path, &seg, &err)) {
        fprintf(stderr, "paliflow run: --seg-decoder: %s\n", err.msg);
        goto out;
    }
    if (!db) {
        size_t n = strlen(eo.sink.out) + 4;
        db_default = malloc(n);
        if (!db_default)
            goto out;
        snprintf(db_default, n, "%s.db", eo.sink.out);
        db = db_default;
    }
    eo.producer.db = db;
    eo.producer.task.prompt = task;
    eo.producer.have_task = 1;
    eo.producer.scan.roots = (const char *const *)(argv + optind);
    eo.producer.scan.n_roots = (size_t)(argc - optind);
    eo.producer.scan.include = include;
    eo.producer.scan.n_include = n_inc;
    eo.producer.scan.exclude = exclude;
    eo.producer.scan.n_exclude = n_exc;
    /* One process: a lost peer means a bug, not a network; keep the timeouts generous. */
    eo.producer.hb_timeout = 60;
    eo.sink.hb_timeout = 60;
    if (pf_security_load(&svc.sec, &err) ||
        (eo.sink.publish && pf_security_check_bind(&svc.sec, "--publish", eo.sink.publish, &err))) {
        fprintf(stderr, "paliflow run: %s\n", err.msg);
        goto bad;
    }
    eo.sink.sec = &svc.sec;
    if (pf_service_start(&svc, &err)) {
        fprintf(stderr, "paliflow run: %s\n", err.msg);
        rc = PF_EXIT_ERROR;
        goto out;
    }
    static volatile sig_atomic_t stop;
    pf_install_stop_signals(&stop);
    eo.stop = &stop;
    /* one decode budget shared by the --preprocess-threads (freed at exit with the process) */
    static pf_img_budget *budget;
    if (!budget && !(budget = pf_img_budget_new((uint64_t)decode_mb << 20))) {
        fprintf(stderr, "paliflow run: out of memory\n");
        rc = PF_EXIT_ERROR;
        goto out;
    }
    pcfg.budget = budget;
    pf_inference_cfg icfg = {.model_dir = model, .tokenizer = tokenizer, .session = so, .max_batch = eo.max_batch,
                             .seg_decoder = seg};
    eo.pre_ops = &pf_stage_preprocess_ops;
    eo.pre_cfg = &pcfg;
    eo.inf_ops = &pf_stage_inference_ops;
    eo.inf_cfg = &icfg;
    pf_job_stats st = {0};
    int r = pf_embedded_run(&eo, &st, &err);
    if (r < 0) {
        fprintf(stderr, "paliflow run: %s\n", err.msg);
    } else if (r > 0) {
        fprintf(stderr, "paliflow run: interrupted at %lld of %lld files; rerun the same command to resume (job "
                "state in %s)\n", (long long)(st.done + st.failed), (long long)st.total, db);
    } else {
        /* one final record per (item, task): errors a later success superseded leave the output */
        int64_t dropped = 0;
        if (pf_output_compact(eo.sink.out, db, &dropped, &err))
            fprintf(stderr, "paliflow run: %s (superseded error records stay in the output)\n", err.msg);
        else if (dropped && pf_views_refresh(&eo.sink.views, eo.sink.out, &err))
            fprintf(stderr, "paliflow run: %s (the other output forms catch up at the next run)\n", err.msg);
        char hidden[64] = "";
        if (st.hidden_skipped)
            snprintf(hidden, sizeof hidden, " (%lld hidden skipped)", (long long)st.hidden_skipped);
        fprintf(stderr, "paliflow run: %lld files%s, %lld records, %lld errors -> %s (%.1f s)%s", (long long)st.total,
                hidden, (long long)st.done, (long long)st.failed, eo.sink.out, st.seconds,
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
    pf_service_stop(&svc);
    pf_seg_decoder_free(seg);
    free(include);
    free(exclude);
    free(more_tasks);
    free(db_default);
    pf_config_free_argv(argc, argv);
    return rc;
}
