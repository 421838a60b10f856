/* producer_stats.c - what the producer tells the outside about the job: Prometheus metrics (registered
 * once, gauges refreshed every 0.1 s) and the job report (--report, see producer.h). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/file.h"
#include "base/log.h"
#include "pipeline/producer_internal.h"

void pf_prod_metrics_init(prod *p)
{
    static const char *const states[6] = {"queued", "leased", "ready", "awaiting_ack", "done", "failed"};
    static const char *const stages[2] = {"stage=\"preprocess\"", "stage=\"inference\""};
    static const char *const roles[4] = {"", "role=\"preprocess\"", "role=\"inference\"", "role=\"sink\""};
    char l[64];
    for (int i = 0; i < 6; i++) {
        snprintf(l, sizeof l, "state=\"%s\"", states[i]);
        p->m.items[i] = pf_gauge("paliflow_producer_items", l,
                                 "Items of the job by state (queued: not handed out yet; leased: held by a worker; "
                                 "ready: preprocessed, waiting for inference; awaiting_ack: record sent, not yet on "
                                 "disk; done; failed: error record written)");
    }
    p->m.queue[0] = pf_gauge("paliflow_producer_queue_depth", "queue=\"preprocess\"",
                             "Items waiting for a worker: raw (preprocess) or preprocessed (inference)");
    p->m.queue[1] = pf_gauge("paliflow_producer_queue_depth", "queue=\"inference\"",
                             "Items waiting for a worker: raw (preprocess) or preprocessed (inference)");
    p->m.job_items = pf_gauge("paliflow_producer_job_items", "", "Items in the job (grows while the scan runs)");
    for (int k = 0; k < 2; k++) {
        p->m.leased[k] = pf_counter("paliflow_producer_leased_total", stages[k], "Items handed to a worker (leases)");
        p->m.retried[k] = pf_counter("paliflow_producer_retried_total", stages[k],
                                     "Leases lost (expired, worker gone, handed back, retry asked) and requeued");
        p->m.expired[k] = pf_counter("paliflow_producer_leases_expired_total", stages[k],
                                     "Leases whose deadline passed");
        p->m.handed_back[k] = pf_counter("paliflow_producer_handed_back_total", stages[k],
                                         "Items a leaving worker handed back (no attempt counted)");
        p->m.stage_s[k] = pf_histogram("paliflow_producer_lease_seconds", stages[k],
                                       "Seconds from handing an item out to getting its result back",
                                       pf_buckets_seconds, pf_buckets_seconds_n);
    }
    p->m.finished[0] = pf_counter("paliflow_producer_finished_total", "outcome=\"done\"",
                                  "Items finished in this run (record on disk)");
    p->m.finished[1] = pf_counter("paliflow_producer_finished_total", "outcome=\"failed\"",
                                  "Items finished in this run (record on disk)");
    static const char *const estages[3] = {"stage=\"producer\"", "stage=\"preprocess\"", "stage=\"inference\""};
    for (int k = 0; k < 3; k++)
        p->m.errors[k] = pf_counter("paliflow_producer_error_records_total", estages[k],
                                    "Error records the producer made (unreadable file, gave up after N attempts)");
    for (int r = 1; r < 4; r++) {
        p->m.workers[r] = pf_gauge("paliflow_producer_workers", roles[r], "Connected peers by role");
        p->m.joined[r] = pf_counter("paliflow_producer_workers_joined_total", roles[r], "Peers that joined");
        p->m.lost[r] = pf_counter("paliflow_producer_workers_lost_total", roles[r],
                                  "Peers that left or went silent");
        p->m.hb_age[r] = pf_gauge("paliflow_producer_heartbeat_age_seconds", roles[r],
                                  "Longest time since a connected peer of this role was heard from");
    }
    p->m.ips = pf_gauge("paliflow_producer_images_per_second", "", "Items finished per second (last 60 s)");
    p->m.complete = pf_gauge("paliflow_producer_job_complete", "", "1 once every item is done or failed");
    p->m.scanning = pf_gauge("paliflow_producer_scanning", "", "1 while the inputs are being listed");
    pf_rate_init(&p->rate, 60);
}

void pf_prod_update_gauges(prod *p, double now)
{
    int64_t n[6] = {0};
    for (size_t i = 0; i < p->n_fl; i++) {
        int st = p->fl[i]->stage;
        n[st == FL_PRE || st == FL_INF ? 1 : st == FL_READY ? 2 : 3]++;
    }
    n[0] = p->total - p->done - p->failed - (int64_t)p->n_fl;
    n[4] = p->done;
    n[5] = p->failed;
    for (int i = 0; i < 6; i++)
        pf_metric_set(p->m.items[i], (double)(n[i] > 0 ? n[i] : 0));
    pf_metric_set(p->m.queue[0], (double)(n[0] > 0 ? n[0] : 0));
    pf_metric_set(p->m.queue[1], (double)n[2]);
    pf_metric_set(p->m.job_items, (double)p->total);
    for (int r = 1; r < 4; r++) {
        double age = 0;
        for (int i = 0; i < p->n_peers; i++)
            if (p->peers[i].used && p->peers[i].role == r && now - p->peers[i].last_seen > age)
                age = now - p->peers[i].last_seen;
        pf_metric_set(p->m.workers[r], pf_prod_count_role(p, r));
        pf_metric_set(p->m.hb_age[r], age);
    }
    pf_metric_set(p->m.ips, pf_rate_update(&p->rate, now, (double)(p->done_run + p->failed_run)));
    pf_metric_set(p->m.scanning, p->scanning);
    p->last_gauges = now;
}

static void iso_time(double unix_s, char *buf, size_t cap)
{
    time_t t = (time_t)unix_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

typedef struct reasons_acc {
    json_t *by_reason, *by_stage;
    int64_t n;
} reasons_acc;

static void add_reason(const char *reason, int64_t n, void *arg)
{
    reasons_acc *a = arg;
    /* "stage: message" (what the producer stores); older stores may hold the message alone */
    const char *colon = strstr(reason, ": ");
    char stage[32] = "unknown";
    if (colon && (size_t)(colon - reason) < sizeof stage && strspn(reason, "abcdefghijklmnopqrstuvwxyz") ==
                                                                  (size_t)(colon - reason)) {
        memcpy(stage, reason, (size_t)(colon - reason));
        stage[colon - reason] = '\0';
    }
    json_t *prev = json_object_get(a->by_stage, stage);
    json_object_set_new(a->by_stage, stage, json_integer(json_integer_value(prev) + n));
    json_array_append_new(a->by_reason, json_pack("{s:s, s:I}", "reason", reason, "count", (json_int_t)n));
    a->n += n;
}

int pf_prod_write_report(prod *p, int complete, pf_err *err)
{
    double now_unix = pf_prod_unix_now(), secs = pf_now() - p->t0;
    char started[32], finished[32];
    iso_time(p->t0_unix, started, sizeof started);
    iso_time(now_unix, finished, sizeof finished);
    reasons_acc acc = {json_array(), json_object(), 0};
    /* Reasons of every failed item of the job (not only this run's), largest groups first. */
    if (pf_jobstore_error_reasons(p->js, 50, add_reason, &acc, err)) {
        json_decref(acc.by_reason);
        json_decref(acc.by_stage);
        return -1;
    }
    int64_t done_run = p->done_run, failed_run = p->failed_run;
    json_t *workers = json_object();
    for (int r = 1; r < 4; r++)
        json_object_set_new(workers, pf_prod_role_name(r),
                            json_pack("{s:I, s:I}", "joined", (json_int_t)p->joined[r], "lost", (json_int_t)p->lost[r]));
    json_t *j = json_pack(
        "{s:s, s:s, s:{s:s, s:s, s:i, s:s}, s:s, s:s, s:f,"
        " s:{s:I, s:I, s:I, s:I, s:I, s:I},"
        " s:{s:f, s:f},"
        " s:{s:I, s:I, s:I, s:{s:{s:I, s:I, s:I}, s:{s:I, s:I, s:I}}},"
        " s:o, s:{s:I, s:o, s:o}}",
        "paliflow_report", "job", "status", complete ? "complete" : "interrupted",
        "job", "db", p->o->db, "task", p->prompt ? p->prompt : "", "image_size", p->image_size, "instance", p->instance,
        "started_at", started, "finished_at", finished, "seconds", secs,
        "items", "total", (json_int_t)p->total, "done", (json_int_t)p->done, "failed", (json_int_t)p->failed,
        "remaining", (json_int_t)(p->total - p->done - p->failed), "done_this_run", (json_int_t)done_run,
        "failed_this_run", (json_int_t)failed_run,
        "throughput", "items_per_second", secs > 0 ? (double)(done_run + failed_run) / secs : 0.0,
        "done_per_second", secs > 0 ? (double)done_run / secs : 0.0,
        "retries", "requeued", (json_int_t)(p->requeued[0] + p->requeued[1]),
        "leases_expired", (json_int_t)(p->expired[0] + p->expired[1]),
        "handed_back", (json_int_t)(p->handed_back[0] + p->handed_back[1]),
        "by_stage", "preprocess", "requeued", (json_int_t)p->requeued[0], "leases_expired", (json_int_t)p->expired[0],
        "handed_back", (json_int_t)p->handed_back[0], "inference", "requeued", (json_int_t)p->requeued[1],
        "leases_expired", (json_int_t)p->expired[1], "handed_back", (json_int_t)p->handed_back[1],
        "workers", workers,
        "errors", "count", (json_int_t)p->failed, "by_stage", acc.by_stage, "by_reason", acc.by_reason);
    if (!j)
        return pf_errf(err, "--report %s: cannot build the report (out of memory?)", p->o->report);
    char *txt = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!txt)
        return pf_errf(err, "--report %s: out of memory", p->o->report);
    size_t n = strlen(txt);
    char *withnl = realloc(txt, n + 2);
    if (!withnl) {
        free(txt);
        return pf_errf(err, "--report %s: out of memory", p->o->report);
    }
    withnl[n] = '\n';
    withnl[n + 1] = '\0';
    int rc = pf_write_file_atomic(p->o->report, withnl, n + 1, err);
    free(withnl);
    return rc ? pf_err_prefix(err, "--report") : 0;
}
