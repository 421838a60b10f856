/* sink.c - see sink.h. */
#include "pipeline/sink.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#include <zmq.h>

#include "base/file.h"
#include "base/log.h"
#include "base/metrics.h"
#include "pipeline/boxes.h"
#include "pipeline/keyset.h"
#include "proto/wire.h"

#define LOG "sink"

void pf_sink_opts_defaults(pf_sink_opts *o)
{
    memset(o, 0, sizeof *o);
    o->batch = 64;
    o->flush_s = 0.05;
    o->fsync = 1;
    o->hb_interval = 1.0;
    o->hb_timeout = 10.0;
    o->lim = pf_proto_default_limits();
}

/* ---------- JSON helpers ---------- */

/* JSON needs UTF-8; file names and decoded bytes need not be. Invalid bytes become U+FFFD. */
static json_t *jstr(const char *s)
{
    if (!s)
        return json_null();
    json_t *j = json_string(s);
    if (j)
        return j;
    size_t n = strlen(s);
    char *o = malloc(3 * n + 1);
    if (!o)
        return json_null();
    size_t k = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        int len = u[i] < 0x80 ? 1 : (u[i] >> 5) == 6 ? 2 : (u[i] >> 4) == 14 ? 3 : (u[i] >> 3) == 30 ? 4 : 0;
        int ok = len > 0 && i + (size_t)len <= n;
        for (int c = 1; ok && c < len; c++)
            ok = (u[i + c] & 0xc0) == 0x80;
        if (ok) {
            char tmp[5] = {0};
            memcpy(tmp, s + i, (size_t)len);
            json_t *probe = json_string(tmp);   /* rejects overlongs and surrogates */
            ok = probe != NULL;
            json_decref(probe);
        }
        if (ok) {
            memcpy(o + k, s + i, (size_t)len);
            k += (size_t)len;
            i += (size_t)len;
        } else {
            memcpy(o + k, "\xef\xbf\xbd", 3);
            k += 3;
            i++;
        }
    }
    o[k] = '\0';
    j = json_string(o);
    free(o);
    return j ? j : json_null();
}

/* A record as a msgpack map (what the PUB socket carries), converted from the JSON object. */
static void pack_json(msgpack_packer *pk, const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, json_object_size(j));
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            size_t n = strlen(k);
            msgpack_pack_str(pk, n);
            msgpack_pack_str_body(pk, k, n);
            pack_json(pk, v);
        }
        break;
    }
    case JSON_ARRAY: {
        msgpack_pack_array(pk, json_array_size(j));
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) pack_json(pk, v);
        break;
    }
    case JSON_STRING: {
        size_t n = json_string_length(j);
        msgpack_pack_str(pk, n);
        msgpack_pack_str_body(pk, json_string_value(j), n);
        break;
    }
    case JSON_INTEGER: msgpack_pack_int64(pk, json_integer_value(j)); break;
    case JSON_REAL: msgpack_pack_double(pk, json_real_value(j)); break;
    case JSON_TRUE: msgpack_pack_true(pk); break;
    case JSON_FALSE: msgpack_pack_false(pk); break;
    default: msgpack_pack_nil(pk);
    }
}

static void set_timings(json_t *rec, const pf_timings *t)
{
    json_t *tm = json_object();
    static const char *const names[] = {"read_s", "preprocess_s", "queue_s", "prefill_s", "decode_s", "inference_s"};
    const double v[] = {t->read_s, t->preprocess_s, t->queue_s, t->prefill_s, t->decode_s, t->inference_s};
    for (int i = 0; i < 6; i++)
        if (v[i] >= 0)
            json_object_set_new(tm, names[i], json_real(v[i]));
    json_object_set_new(rec, "timings", tm);
}

static json_t *make_record(const pf_msg *m)
{
    json_t *rec = json_object();
    json_object_set_new(rec, "path", jstr(m->path));
    json_object_set_new(rec, "key", jstr(m->key));
    json_object_set_new(rec, "task", jstr(m->task.prompt));
    if (m->type == PF_MSG_RESULT) {
        json_object_set_new(rec, "text", m->text ? json_stringn(m->text, m->text_len) : json_null());
        if (pf_task_is_detect(m->task.prompt)) {
            pf_box *b = NULL;
            size_t nb = 0;
            pf_err e = {{0}};
            json_t *boxes = json_array();
            if (pf_boxes_parse(m->text, m->width, m->height, &b, &nb, &e) == 0) {
                for (size_t i = 0; i < nb; i++) {
                    json_array_append_new(
                        boxes, json_pack("{s:o, s:f, s:f, s:f, s:f, s:[i,i,i,i]}", "label", jstr(b[i].label), "x0",
                                         b[i].x0, "y0", b[i].y0, "x1", b[i].x1, "y1", b[i].y1, "loc", b[i].loc[0],
                                         b[i].loc[1], b[i].loc[2], b[i].loc[3]));
                }
                pf_boxes_free(b, nb);
            }
            json_object_set_new(rec, "boxes", boxes);
        }
        json_t *ids = json_array();
        for (size_t i = 0; i < m->n_ids; i++)
            json_array_append_new(ids, json_integer(m->ids[i]));
        json_object_set_new(rec, "ids", ids);
        json_object_set_new(rec, "stopped_by_eos", json_boolean(m->stopped_by_eos));
    } else {
        json_object_set_new(rec, "error", json_pack("{s:o, s:o}", "stage", jstr(m->stage), "message", jstr(m->message)));
    }
    if (m->width > 0 && m->height > 0)
        json_object_set_new(rec, "image", json_pack("{s:i, s:i}", "width", m->width, "height", m->height));
    json_object_set_new(rec, "attempt", json_integer(m->attempt + 1));
    set_timings(rec, &m->timings);
    json_t *w = json_object();
    if (m->w_preprocess)
        json_object_set_new(w, "preprocess", jstr(m->w_preprocess));
    if (m->w_inference)
        json_object_set_new(w, "inference", jstr(m->w_inference));
    json_object_set_new(rec, "workers", w);
    return rec;
}

/* Dedupe identity of a record: the item key plus the path (two files with the same bytes are two items,
 * each with its own record). */
static XXH128_hash_t record_id(const char *key, const char *path)
{
    XXH3_state_t *st = XXH3_createState();
    XXH128_hash_t h = {0, 0};
    if (!st)
        return h;
    XXH3_128bits_reset(st);
    XXH3_128bits_update(st, key, strlen(key) + 1);   /* with the NUL as a separator */
    XXH3_128bits_update(st, path, strlen(path));
    h = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    return h;
}

/* ---------- state ---------- */

typedef struct pend {
    char *line;            /* JSON + '\n' */
    size_t len;
    json_t *rec;
    int64_t id;
    char *key;
    int ok;
    int is_dup;            /* already on disk: acknowledge only */
} pend;

typedef struct sink {
    const pf_sink_opts *o;
    int fd;
    pf_keyset seen;
    void *rsock, *psock, *pub;
    pend *batch;
    size_t n_batch, cap_batch;
    double batch_t0;
    char name[128];
    char instance[40];
    int welcomed, finished;
    double last_heard, last_hb, last_hello;
    int64_t written, dups, in_file, tokens;
    pf_zap *zap;
    pf_sock_watch *watch;
    pf_rate rate_records, rate_tokens;
    struct {
        pf_metric *records[2], *dups, *in_file, *batches, *fsync_s, *tokens, *rps, *tps, *connected;
        pf_metric *timing[6], *errors[3];
    } m;
} sink;

static void metrics_init(sink *s)
{
    s->m.records[0] = pf_counter("paliflow_sink_records_total", "kind=\"result\"",
                                 "Records written to the output file in this run");
    s->m.records[1] = pf_counter("paliflow_sink_records_total", "kind=\"error\"",
                                 "Records written to the output file in this run");
    s->m.dups = pf_counter("paliflow_sink_duplicates_total", "",
                           "Records received again for an item already in the file (acknowledged, not written)");
    s->m.in_file = pf_gauge("paliflow_sink_records_in_file", "",
                            "Records in the output file (found at start + written since)");
    s->m.batches = pf_counter("paliflow_sink_batches_total", "", "Write + fdatasync batches");
    s->m.fsync_s = pf_histogram("paliflow_sink_flush_seconds", "", "Seconds to write and fdatasync one batch",
                                pf_buckets_seconds, pf_buckets_seconds_n);
    s->m.tokens = pf_counter("paliflow_sink_tokens_total", "", "Generated tokens in the records written");
    s->m.rps = pf_gauge("paliflow_sink_records_per_second", "", "Records written per second (last 60 s)");
    s->m.tps = pf_gauge("paliflow_sink_tokens_per_second", "", "Generated tokens written per second (last 60 s)");
    s->m.connected = pf_gauge("paliflow_sink_producer_connected", "", "1 while the producer answers");
    static const char *const names[6] = {"read", "preprocess", "queue", "prefill", "decode", "inference"};
    for (int i = 0; i < 6; i++) {
        char l[48];
        snprintf(l, sizeof l, "stage=\"%s\"", names[i]);
        s->m.timing[i] = pf_histogram("paliflow_stage_seconds", l,
                                      "Per-stage seconds of the items written (from the records' timings)",
                                      pf_buckets_seconds, pf_buckets_seconds_n);
    }
    static const char *const st[3] = {"stage=\"producer\"", "stage=\"preprocess\"", "stage=\"inference\""};
    for (int i = 0; i < 3; i++)
        s->m.errors[i] = pf_counter("paliflow_sink_error_records_total", st[i], "Error records written, by stage");
    pf_rate_init(&s->rate_records, 60);
    pf_rate_init(&s->rate_tokens, 60);
}

static void observe_record(sink *s, const pf_msg *m)
{
    const pf_timings *t = &m->timings;
    const double v[6] = {t->read_s, t->preprocess_s, t->queue_s, t->prefill_s, t->decode_s, t->inference_s};
    for (int i = 0; i < 6; i++)
        if (v[i] >= 0)
            pf_metric_observe(s->m.timing[i], v[i]);
    if (m->type == PF_MSG_RESULT) {
        s->tokens += (int64_t)m->n_ids;
        pf_metric_add(s->m.tokens, (double)m->n_ids);
    } else {
        int k = m->stage && !strcmp(m->stage, "producer") ? 0 : m->stage && !strcmp(m->stage, "preprocess") ? 1 : 2;
        pf_metric_add(s->m.errors[k], 1);
    }
}

static int load_existing(sink *s, pf_err *err)
{
    FILE *f = fopen(s->o->out, "r");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        return pf_errf(err, "%s: %s", s->o->out, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    off_t good = 0, pos = 0;
    int64_t records = 0, bad = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        pos += n;
        if (line[n - 1] != '\n')
            break;   /* torn last line (the sink died mid-write): cut below */
        good = pos;
        json_error_t je;
        json_t *j = json_loadb(line, (size_t)n, 0, &je);
        const char *key = j ? json_string_value(json_object_get(j, "key")) : NULL;
        const char *path = j ? json_string_value(json_object_get(j, "path")) : NULL;
        if (key && path) {
            XXH128_hash_t h = record_id(key, path);
            if (pf_keyset_add(&s->seen, h.high64, h.low64) < 0) {
                json_decref(j);
                free(line);
                fclose(f);
                return pf_errf(err, "%s: out of memory loading %lld records", s->o->out, (long long)records);
            }
            records++;
        } else {
            bad++;
        }
        json_decref(j);
    }
    free(line);
    int rerr = ferror(f);
    fclose(f);
    if (rerr)
        return pf_errf(err, "%s: read error", s->o->out);
    struct stat st;
    if (stat(s->o->out, &st) == 0 && st.st_size > good) {
        pf_warn(LOG, "%s: cutting a torn last line (%lld bytes) left by a crash", s->o->out,
                (long long)(st.st_size - good));
        if (truncate(s->o->out, good) != 0)
            return pf_errf(err, "%s: cannot cut the torn last line: %s", s->o->out, strerror(errno));
    }
    if (bad)
        pf_warn(LOG, "%s: %lld lines are not records of ours (ignored)", s->o->out, (long long)bad);
    if (records)
        pf_info(LOG, "%s: %lld records already written (kept; their items will not be written again)", s->o->out,
                (long long)records);
    s->in_file = records;
    return 0;
}

static void send_prod(sink *s, pf_msg *m)
{
    pf_err e = {{0}};
    m->name = s->name;
    if (s->instance[0])
        m->instance = s->instance;
    if (pf_wire_send(s->psock, NULL, 0, m, &e)) {
        if (errno == EAGAIN)   /* not connected: the producer is down or refused our key (see the watch) */
            pf_debug(LOG, "to producer (%s): %s", pf_msg_type_name(m->type), e.msg);
        else
            pf_warn(LOG, "to producer (%s): %s", pf_msg_type_name(m->type), e.msg);
    }
}

static void send_hello(sink *s, double now)
{
    pf_msg m;
    pf_msg_init(&m, PF_MSG_HELLO);
    m.role = "sink";
    char host[64] = {0};
    gethostname(host, sizeof host - 1);
    m.host = host;
    m.pid = getpid();
    send_prod(s, &m);
    s->last_hello = now;
}

static int batch_add(sink *s, pend *p)
{
    if (s->n_batch == s->cap_batch) {
        size_t nc = s->cap_batch ? 2 * s->cap_batch : 64;
        pend *nb = realloc(s->batch, nc * sizeof *nb);
        if (!nb)
            return -1;
        s->batch = nb;
        s->cap_batch = nc;
    }
    if (s->n_batch == 0)
        s->batch_t0 = pf_now();
    s->batch[s->n_batch++] = *p;
    return 0;
}

static void on_record(sink *s, const pf_msg *m)
{
    XXH128_hash_t h = record_id(m->key, m->path);
    pend p = {0};
    p.id = m->id;
    p.key = strdup(m->key);
    p.ok = m->type == PF_MSG_RESULT;
    if (!p.key)
        return;
    /* Mark as seen now so a duplicate inside the same batch is caught too; a crash before the batch is
     * synced loses the mark with the record, and the item is redone. */
    int added = pf_keyset_add(&s->seen, h.high64, h.low64);
    if (added <= 0) {
        p.is_dup = 1;
        s->dups++;
        pf_debug(LOG, "%s: duplicate record dropped (acknowledged again)", m->path);
    } else {
        observe_record(s, m);
        p.rec = make_record(m);
        char *txt = json_dumps(p.rec, JSON_COMPACT);
        if (!txt) {
            json_decref(p.rec);
            free(p.key);
            return;
        }
        p.len = strlen(txt);
        p.line = malloc(p.len + 2);
        if (p.line)
            memcpy(p.line, txt, p.len);
        free(txt);
        if (!p.line) {
            json_decref(p.rec);
            free(p.key);
            return;
        }
        p.line[p.len++] = '\n';
        p.line[p.len] = '\0';
    }
    if (batch_add(s, &p)) {
        free(p.line);
        json_decref(p.rec);
        free(p.key);
    }
}

static int write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Write, sync, publish, acknowledge. */
static int flush_batch(sink *s, pf_err *err)
{
    if (!s->n_batch)
        return 0;
    size_t total = 0;
    double t_flush = pf_now();
    for (size_t i = 0; i < s->n_batch; i++)
        total += s->batch[i].len;
    if (total) {
        char *buf = malloc(total);
        if (!buf)
            return pf_errf(err, "out of memory writing %zu bytes", total);
        size_t k = 0;
        for (size_t i = 0; i < s->n_batch; i++) {
            memcpy(buf + k, s->batch[i].line ? s->batch[i].line : "", s->batch[i].len);
            k += s->batch[i].len;
        }
        int bad = write_all(s->fd, buf, total);
        free(buf);
        if (bad)
            return pf_errf(err, "%s: write failed: %s", s->o->out, strerror(errno));
        if (s->o->fsync && fdatasync(s->fd) != 0)
            return pf_errf(err, "%s: fdatasync failed: %s", s->o->out, strerror(errno));
        pf_metric_add(s->m.batches, 1);
        pf_metric_observe(s->m.fsync_s, pf_now() - t_flush);
    }
    pf_ack *acks = calloc(s->n_batch, sizeof *acks);
    for (size_t i = 0; i < s->n_batch; i++) {
        pend *p = &s->batch[i];
        if (p->rec && s->pub) {
            msgpack_sbuffer sb;
            msgpack_packer pk;
            msgpack_sbuffer_init(&sb);
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            json_t *env = json_deep_copy(p->rec);
            json_object_set_new(env, "v", json_integer(PF_PROTO_VERSION));
            json_object_set_new(env, "type", json_string("record"));
            pack_json(&pk, env);
            json_decref(env);
            if (zmq_send(s->pub, sb.data, sb.size, ZMQ_DONTWAIT) < 0)
                pf_debug(LOG, "publish: %s", zmq_strerror(errno));
            msgpack_sbuffer_destroy(&sb);
        }
        if (!p->is_dup) {
            s->written++;
            s->in_file++;
            pf_metric_add(s->m.records[p->ok ? 0 : 1], 1);
        } else {
            pf_metric_add(s->m.dups, 1);
        }
        if (acks) {
            acks[i].id = p->id;
            acks[i].key = p->key;
            acks[i].ok = p->ok;
        }
    }
    if (acks) {
        pf_msg m;
        pf_msg_init(&m, PF_MSG_ACK);
        m.acks = acks;
        m.n_acks = s->n_batch;
        send_prod(s, &m);
        free(acks);
    }
    for (size_t i = 0; i < s->n_batch; i++) {
        free(s->batch[i].line);
        json_decref(s->batch[i].rec);
        free(s->batch[i].key);
    }
    s->n_batch = 0;
    return 0;
}

static void on_producer_msg(sink *s, pf_wire_in *in, double now)
{
    pf_msg *m = &in->msg;
    s->last_heard = now;
    switch (m->type) {
    case PF_MSG_WELCOME:
        if (strcmp(s->instance, m->instance) != 0)
            pf_info(LOG, "connected to producer %s", m->instance);
        snprintf(s->instance, sizeof s->instance, "%s", m->instance);
        s->welcomed = 1;
        break;
    case PF_MSG_RESET:
        s->welcomed = 0;
        if (now - s->last_hello > 0.2)
            send_hello(s, now);
        break;
    case PF_MSG_HB:
        if (m->instance && strcmp(m->instance, s->instance) != 0 && now - s->last_hello > 0.2) {
            s->welcomed = 0;
            send_hello(s, now);
        }
        if (m->finished && !s->finished) {
            s->finished = 1;
            pf_info(LOG, "producer reports the job complete (%lld done, %lld failed)", (long long)m->n_done,
                    (long long)m->n_failed);
        }
        break;
    case PF_MSG_ERROR:
    case PF_MSG_RESULT:
        on_record(s, m);
        break;
    default:
        break;
    }
}

int pf_sink_run(const pf_sink_opts *o, pf_err *err)
{
    sink S = {0}, *s = &S;
    s->o = o;
    s->fd = -1;
    pf_keyset_init(&s->seen);
    if (o->name)
        snprintf(s->name, sizeof s->name, "%s", o->name);
    else {
        char host[64] = {0};
        gethostname(host, sizeof host - 1);
        snprintf(s->name, sizeof s->name, "%s-sink-%d", host, (int)getpid());
    }
    int rc = -1;
    metrics_init(s);
    pf_health_register("sink", 60);
    void *ctx = o->zctx ? o->zctx : zmq_ctx_new();
    if (!ctx)
        return pf_errf(err, "zmq_ctx_new failed");
    if (load_existing(s, err))
        goto out;
    pf_metric_set(s->m.in_file, (double)s->in_file);
    s->fd = open(o->out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (s->fd < 0) {
        pf_errf(err, "%s: %s", o->out, strerror(errno));
        goto out;
    }
    s->rsock = pf_wire_socket(ctx, ZMQ_ROUTER, &o->lim, 0, err);
    s->psock = s->rsock ? pf_wire_socket(ctx, ZMQ_DEALER, &o->lim, 2000, err) : NULL;
    if (!s->psock)
        goto out;
    if ((pf_security_curve_bind(o->sec, o->bind) || (o->publish && pf_security_curve_bind(o->sec, o->publish))) &&
        pf_zap_start(ctx, o->sec->allow_path, o->sec->server.public_key, &s->zap, err))
        goto out;
    if (pf_secure_bind(s->rsock, o->bind, o->sec, err))
        goto out;
    if (o->publish) {
        s->pub = pf_wire_socket(ctx, ZMQ_PUB, &o->lim, 1000, err);
        if (!s->pub || pf_secure_bind(s->pub, o->publish, o->sec, err))
            goto out;
    }
    zmq_setsockopt(s->psock, ZMQ_ROUTING_ID, s->name, strlen(s->name));
    if (o->sec && pf_endpoint_is_network(o->producer)) {
        char peer[300];
        snprintf(peer, sizeof peer, "producer %s", o->producer);
        s->watch = pf_sock_watch_start(ctx, s->psock, o->producer, peer);
    }
    if (pf_secure_connect(s->psock, o->producer, o->sec, o->sec ? o->sec->server_public : NULL, err))
        goto out;
    pf_health_ready("sink", 1);
    pf_info(LOG, "%s: writing %s, results on %s, publishing on %s, producer %s", s->name, o->out, o->bind,
            o->publish ? o->publish : "(none)", o->producer);
    double now = pf_now();
    s->last_heard = now;
    send_hello(s, now);
    int silent = 0;
    while (!(o->stop && *o->stop)) {
        zmq_pollitem_t it[2] = {{s->rsock, 0, ZMQ_POLLIN, 0}, {s->psock, 0, ZMQ_POLLIN, 0}};
        long timeout = s->n_batch ? (long)(o->flush_s * 1000 / 2) + 1 : 100;
        if (zmq_poll(it, 2, timeout) < 0 && errno == ETERM)
            break;
        now = pf_now();
        pf_health_tick("sink");
        pf_sock_watch_poll(s->watch);
        if (o->reload && *o->reload) {
            *o->reload = 0;
            if (o->on_reload)
                o->on_reload(o->reload_arg);
            pf_err re = {{0}};
            if (s->zap && pf_zap_reload(s->zap, o->sec->allow_path, &re))
                pf_error(LOG, "reload: %s (the previous allow-list stays)", re.msg);
        }
        for (int k = 0; k < 1000; k++) {
            pf_wire_in in;
            pf_err e = {{0}};
            int got = pf_wire_recv(s->rsock, 1, &o->lim, &in, &e);
            if (got == 0)
                break;
            if (got == -2)
                goto stopped;
            if (got < 0) {
                char id[128];
                pf_warn(LOG, "bad message from %s: %s", pf_wire_ident_str(in.ident, in.ident_len, id, sizeof id), e.msg);
                continue;
            }
            if (in.msg.type == PF_MSG_RESULT || in.msg.type == PF_MSG_ERROR)
                on_record(s, &in.msg);
            pf_wire_in_close(&in);
            if (s->n_batch >= (size_t)o->batch && flush_batch(s, err))
                goto out;
        }
        for (int k = 0; k < 1000; k++) {
            pf_wire_in in;
            pf_err e = {{0}};
            int got = pf_wire_recv(s->psock, 0, &o->lim, &in, &e);
            if (got == 0)
                break;
            if (got == -2)
                goto stopped;
            if (got < 0) {
                pf_warn(LOG, "bad message from the producer: %s", e.msg);
                continue;
            }
            on_producer_msg(s, &in, now);
            pf_wire_in_close(&in);
        }
        if (s->n_batch && (s->n_batch >= (size_t)o->batch || now - s->batch_t0 >= o->flush_s))
            if (flush_batch(s, err))
                goto out;
        if (now - s->last_hb >= o->hb_interval) {
            pf_msg hb;
            pf_msg_init(&hb, PF_MSG_HB);
            send_prod(s, &hb);
            s->last_hb = now;
            if (!s->welcomed && now - s->last_hello >= o->hb_interval)
                send_hello(s, now);
        }
        if (!silent && now - s->last_heard > o->hb_timeout) {
            pf_warn(LOG, "producer silent for %.1f s; still collecting results", now - s->last_heard);
            silent = 1;
            s->welcomed = 0;
        } else if (silent && now - s->last_heard <= o->hb_timeout) {
            silent = 0;
        }
        pf_metric_set(s->m.in_file, (double)s->in_file);
        pf_metric_set(s->m.connected, !silent && s->welcomed);
        pf_metric_set(s->m.rps, pf_rate_update(&s->rate_records, now, (double)s->written));
        pf_metric_set(s->m.tps, pf_rate_update(&s->rate_tokens, now, (double)s->tokens));
        if (o->exit_when_done && s->finished && s->n_batch == 0) {
            pf_info(LOG, "job complete: exiting");
            break;
        }
    }
stopped:
    if (flush_batch(s, err))
        goto out;
    pf_info(LOG, "%lld records written, %lld duplicates dropped", (long long)s->written, (long long)s->dups);
    rc = 0;
out:
    for (size_t i = 0; i < s->n_batch; i++) {
        free(s->batch[i].line);
        json_decref(s->batch[i].rec);
        free(s->batch[i].key);
    }
    free(s->batch);
    pf_metric_set(s->m.in_file, (double)s->in_file);
    pf_health_ready("sink", 0);
    pf_health_unregister("sink");
    pf_sock_watch_stop(s->watch);
    if (s->pub)
        zmq_close(s->pub);
    if (s->rsock)
        zmq_close(s->rsock);
    if (s->psock)
        zmq_close(s->psock);
    pf_zap_stop(s->zap);
    if (!o->zctx)
        zmq_ctx_term(ctx);
    if (s->fd >= 0) {
        if (o->fsync && fsync(s->fd) != 0)
            pf_error(LOG, "%s: fsync on close: %s", o->out, strerror(errno));
        close(s->fd);
    }
    pf_keyset_free(&s->seen);
    return rc;
}
