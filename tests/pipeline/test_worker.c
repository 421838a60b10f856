/* test_worker - the pipeline's worker runtime (and the embedded runner) with the test stages, for the
 * pipeline tests. Usage:
 *   test_worker preprocess|inference [--delay-ms N] [--steps N] [--model-size S] [worker options]
 *   test_worker embedded --task T --out F [--image-size S] [--model-size S] [--delay-ms N] PATH... */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "pipeline/config.h"
#include "pipeline/embedded.h"
#include "pipeline/service.h"
#include "test_stages.h"
#include "workers/worker.h"

static volatile sig_atomic_t g_stop;

int main(int argc, char **argv)
{
    pf_log_init_from_env();
    if (argc < 2) {
        fprintf(stderr, "usage: test_worker preprocess|inference|embedded [options]\n");
        return 2;
    }
    const char *mode = argv[1];
    argc--;
    argv++;
    pf_test_stage_params cfg = {0, 3, 0};
    pf_worker_params o;
    o = pf_worker_default_params();
    pf_embedded_params eo;
    memset(&eo, 0, sizeof eo);
    eo.producer = pf_producer_default_params();
    eo.sink = pf_sink_default_params();
    eo.pre_threads = 2;
    eo.max_batch = 4;
    static const struct option opts[] = {
        {"producer", required_argument, 0, 0}, {"sink", required_argument, 0, 0},
        {"name", required_argument, 0, 0},     {"threads", required_argument, 0, 0},
        {"credit", required_argument, 0, 0},   {"max-batch", required_argument, 0, 0},
        {"max-delay-ms", required_argument, 0, 0}, {"heartbeat", required_argument, 0, 0},
        {"heartbeat-timeout", required_argument, 0, 0}, {"drain-timeout", required_argument, 0, 0},
        {"exit-when-done", no_argument, 0, 0}, {"max-message-mb", required_argument, 0, 0},
        {"delay-ms", required_argument, 0, 0}, {"steps", required_argument, 0, 0},
        {"model-size", required_argument, 0, 0}, {"task", required_argument, 0, 0},
        {"out", required_argument, 0, 0},      {"image-size", required_argument, 0, 0},
        {"db", required_argument, 0, 0},       {"log-level", required_argument, 0, 0},
        {"report", required_argument, 0, 0},   PF_SERVICE_LONG_OPTIONS,
        {0, 0, 0, 0}};
    static pf_service svc;
    int idx, c;
    pf_err err = {{0}};
    while ((c = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        if (c != 0)
            return 2;
        const char *name = opts[idx].name, *val = optarg;
        if (!strcmp(name, "delay-ms"))
            cfg.delay_ms = atoi(val);
        else if (!strcmp(name, "steps"))
            cfg.steps = atoi(val);
        else if (!strcmp(name, "model-size"))
            cfg.model_size = atoi(val);
        else if (!strcmp(name, "task"))
            eo.producer.task.prompt = val;
        else if (!strcmp(name, "out"))
            eo.sink.out = val;
        else if (!strcmp(name, "db"))
            eo.producer.db = val;
        else if (!strcmp(name, "image-size"))
            eo.producer.image_size = atoi(val);
        else if (!strcmp(name, "report"))
            eo.producer.report = val;
        else if (!strcmp(name, "log-level")) {
            if (pf_log_level_option("test-worker", val))
                return 2;
        } else if (pf_service_option(name, val, &svc, &err)) {
            if (err.msg[0]) {
                fprintf(stderr, "test_worker: %s\n", err.msg);
                return 2;
            }
        } else {
            if (!strcmp(name, "threads"))
                eo.pre_threads = atoi(val);
            if (!strcmp(name, "max-batch"))
                eo.max_batch = atoi(val);
            if (pf_worker_option(name, val, &o, &err) < 0) {
                fprintf(stderr, "test_worker: %s\n", err.msg);
                return 2;
            }
        }
    }
    if (pf_service_start(&svc, &err)) {
        fprintf(stderr, "test_worker: %s\n", err.msg);
        return 2;
    }
    pf_install_stop_signals(&g_stop);
    if (!strcmp(mode, "embedded")) {
        eo.producer.have_task = 1;
        eo.producer.scan.roots = (const char *const *)(argv + optind);
        eo.producer.scan.n_roots = (size_t)(argc - optind);
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
