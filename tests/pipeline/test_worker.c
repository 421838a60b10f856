/* test_worker - the pipeline's worker runtime (and the embedded runner) with the test stages, for the
 * pipeline tests. Usage:
 *   test_worker preprocess|inference [--delay-ms N] [--steps N] [--model-size S] [worker options]
 *   test_worker embedded --task T --out F [--image-size S] [--model-size S] [--delay-ms N] PATH... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/malloc_tune.h"
#include "base/optable.h"
#include "base/signals.h"
#include "pipeline/embedded.h"
#include "pipeline/service.h"
#include "test_stages.h"
#include "workers/worker.h"

static volatile sig_atomic_t g_stop;

/* Whether --NAME is on the command line (as --NAME V or --NAME=V). */
static int cli_given(int argc, char **argv, const char *name)
{
    size_t n = strlen(name);
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "--", 2) && !strncmp(argv[i] + 2, name, n) && (!argv[i][2 + n] || argv[i][2 + n] == '='))
            return 1;
    return 0;
}

/* Everything the options fill: the worker's params (preprocess|inference), the embedded runner's, the
 * service's, the test stages'. */
typedef struct tw {
    pf_test_stage_params cfg;
    pf_worker_params o;
    pf_embedded_params eo;
    pf_service svc;
    int threads_given, batch_given;
} tw;

static void tw_init(void *obj)
{
    tw *t = obj;
    *t = (tw){.cfg = {0, 3, 0, 0}, .o = pf_worker_default_params()};
    t->eo.producer = pf_producer_default_params();
    t->eo.sink = pf_sink_default_params();
    t->eo.pre_threads = 2;
    t->eo.max_batch = 4;
}

#define T tw
static const pf_opt g_rows[] = {
    PF_OPT_ROW_INT("delay-ms", T, cfg.delay_ms, 0, 1000000, 0, "N", "test stage: per-item delay"),
    PF_OPT_ROW_INT("steps", T, cfg.steps, 0, 1000000, 0, "N", "test stage: decode steps"),
    PF_OPT_ROW_INT("model-size", T, cfg.model_size, 0, 8192, 0, "S", "test stage: the model's image size"),
    PF_OPT_ROW_INT("hang-after", T, cfg.hang_after, 0, 1000000, 0, "N",
                   "test stage: preprocess items after the first N hang until the worker is killed"),
    PF_OPT_ROW_STR("task", T, eo.producer.task.prompt, 0, "T", "embedded: the task"),
    PF_OPT_ROW_STR("out", T, eo.sink.out, 0, "F", "embedded: the output"),
    PF_OPT_ROW_STR("db", T, eo.producer.db, 0, "F", "embedded: the job store"),
    PF_OPT_ROW_INT("image-size", T, eo.producer.image_size, 0, 8192, 0, "S", "embedded: the job's image size"),
    PF_OPT_ROW_STR("report", T, eo.producer.report, 0, "F", "embedded: the job report"),
    PF_OPT_ROW_INT("threads", T, o.threads, 1, 1024, 0, "N", "worker threads (embedded: preprocess threads)"),
    PF_OPT_ROW_INT("max-batch", T, o.max_batch, 1, 4096, 0, "N", "inference batch"),
    PF_OPT_ROW_INT("max-delay-ms", T, o.max_delay_ms, 0, 600000, 0, "N", "inference: wait for more items"),
    PF_OPT_ROW_FLAG("single-frames", T, o.single_frames, 0,
                    "talk as a worker of an older build: no data frames asked for or sent (PROTOCOL.md)"),
    PF_WORKER_OPT_ROWS(T, o),
    PF_SERVICE_OPT_ROWS(T, svc, 0, 0),
    PF_OPT_END,
};
#undef T

static const pf_optcmd g_cmd = {
    .name = "test-worker",
    .synopsis = "usage: test_worker preprocess|inference|embedded [options] [PATH...]\n",
    .opts = g_rows,
    .size = sizeof(tw),
    .init = tw_init,
    .operands = 1,
};

int main(int argc, char **argv)
{
    pf_malloc_tune();   /* before any thread: see base/malloc_tune.c */
    pf_log_init_from_env();
    if (argc < 2) {
        fprintf(stderr, "usage: test_worker preprocess|inference|embedded [options]\n");
        return 2;
    }
    const char *mode = argv[1];
    argc--;
    argv++;
    static tw t;
    tw_init(&t);
    int optind_ = 0;
    if (pf_opt_parse(&g_cmd, &t, argc, argv, &optind_, 0))
        return 2;
    /* the embedded runner takes --threads and --max-batch as its preprocess threads and batch */
    if (cli_given(argc, argv, "threads"))
        t.eo.pre_threads = t.o.threads;
    if (cli_given(argc, argv, "max-batch"))
        t.eo.max_batch = t.o.max_batch;
    pf_test_stage_params cfg = t.cfg;
    pf_worker_params o = t.o;
    pf_embedded_params eo = t.eo;
    pf_service svc = t.svc;
    pf_err err = {{0}};
    if (pf_service_start(&svc, &err)) {
        fprintf(stderr, "test_worker: %s\n", err.msg);
        return 2;
    }
    pf_install_stop_signals(&g_stop);
    if (!strcmp(mode, "embedded")) {
        eo.producer.have_task = 1;
        eo.producer.scan.roots = (const char *const *)(argv + optind_);
        eo.producer.scan.n_roots = (size_t)(argc - optind_);
        eo.producer.progress = 1;
        eo.producer.progress_interval = 0.5;
        eo.pre_ops = &pf_test_preprocess_ops;
        eo.pre_cfg = &cfg;
        eo.inf_ops = &pf_test_inference_ops;
        eo.inf_cfg = &cfg;
        eo.stop = &g_stop;
        pf_job_stats st = {0};
        int r = pf_embedded_run(&eo, &st, &err);
        if (r < 0)
            fprintf(stderr, "test_worker embedded: %s\n", err.msg);
        else
            fprintf(stderr, "test_worker embedded: %lld items, %lld done, %lld failed\n", (long long)st.total,
                    (long long)st.done, (long long)st.failed);
        return r < 0 ? 2 : r;
    }
    if (strcmp(mode, "preprocess") && strcmp(mode, "inference")) {
        fprintf(stderr, "test_worker: unknown mode %s\n", mode);
        return 2;
    }
    o.ops = !strcmp(mode, "preprocess") ? &pf_test_preprocess_ops : &pf_test_inference_ops;
    o.stage_cfg = &cfg;
    o.ctl.stop = &g_stop;
    o.sec = &svc.sec;
    if (pf_security_check_connect(&svc.sec, "--producer", o.producer, &err) ||
        pf_security_check_connect(&svc.sec, "--sink", o.sink, &err)) {
        fprintf(stderr, "test_worker: %s\n", err.msg);
        return 2;
    }
    int rc = pf_worker_run(&o, &err);
    pf_service_stop(&svc);
    if (rc) {
        fprintf(stderr, "test_worker: %s\n", err.msg);
        return 1;
    }
    return 0;
}
