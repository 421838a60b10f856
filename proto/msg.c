/* msg.c - encode and decode pf_msg (schemas in PROTOCOL.md). */
#include "proto/proto.h"
#include "proto/notes.h"

#include <math.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static const char *const g_type_names[PF_MSG_TYPE_COUNT] = {
    [PF_MSG_NONE] = "none",     [PF_MSG_HELLO] = "hello",   [PF_MSG_WELCOME] = "welcome",
    [PF_MSG_RESET] = "reset",   [PF_MSG_HB] = "hb",         [PF_MSG_CREDIT] = "credit",
    [PF_MSG_ITEM] = "item",     [PF_MSG_TENSOR] = "tensor", [PF_MSG_DONE] = "done",
    [PF_MSG_NACK] = "nack",     [PF_MSG_RESULT] = "result", [PF_MSG_ERROR] = "error",
    [PF_MSG_ACK] = "ack",       [PF_MSG_BYE] = "bye",       [PF_MSG_START] = "start",
    [PF_MSG_LEASE] = "lease",   [PF_MSG_UNLEASE] = "unlease",
    [PF_MSG_NOTES] = "notes",
};

const char *pf_msg_type_name(pf_msg_type t)
{
    return (t > 0 && t < PF_MSG_TYPE_COUNT) ? g_type_names[t] : "none";
}

const char *const pf_timing_names[PF_TIMINGS_N] = {"read_s",   "preprocess_s", "queue_s",
                                                     "prefill_s", "decode_s",     "inference_s"};

void pf_timings_values(const pf_timings *t, double v[PF_TIMINGS_N])
{
    const double all[PF_TIMINGS_N] = {t->read_s, t->preprocess_s, t->queue_s, t->prefill_s, t->decode_s,
                                      t->inference_s};
    memcpy(v, all, sizeof all);
}

pf_task pf_task_default_params(void)
{
    return (pf_task){PF_GENERATION_DEFAULTS};
}

int pf_msg_wants_hello(const pf_msg *m, const char *instance, int *welcomed, double last_hello, double now)
{
    bool may = now - last_hello > 0.2;
    if (m->type == PF_MSG_RESET) {
        *welcomed = 0;
        return may;
    }
    if (m->type == PF_MSG_HB && m->instance && strcmp(m->instance, instance) != 0 && may) {
        *welcomed = 0;
        return 1;
    }
    return 0;
}

void pf_msg_init(pf_msg *m, pf_msg_type type)
{
    memset(m, 0, sizeof *m);
    m->type = type;
    m->version = PF_PROTO_VERSION;
    m->pid = -1;
    m->id = -1;
    m->out_end = -1;
    m->out_records = -1;
    m->timings = (pf_timings){-1, -1, -1, -1, -1, -1};
    m->task = pf_task_default_params();
}

void pf_msg_free(pf_msg *m)
{
    if (!m)
        return;
    free(m->arena_);
    free(m->ids);
    free(m->acks);
    free(m->notes);
    free(m->items);
    memset(m, 0, sizeof *m);
}

/* ---------- arena for decoded strings ---------- */

static const char *arena_put(pf_msg *m, const char *s, size_t n)
{
    if (m->arena_len_ + n + 1 > m->arena_cap_)
        return NULL;
    char *d = m->arena_ + m->arena_len_;
    memcpy(d, s, n);
    d[n] = '\0';
    m->arena_len_ += n + 1;
    return d;
}

/* ---------- decoding ---------- */

static int get_int(const msgpack_object *o, int64_t lo, int64_t hi, int64_t *out)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX || (int64_t)o->via.u64 > hi || (int64_t)o->via.u64 < lo)
            return -1;
        *out = (int64_t)o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        if (o->via.i64 < lo || o->via.i64 > hi)
            return -1;
        *out = o->via.i64;
        return 0;
    }
    return -1;
}

static int get_u64(const msgpack_object *o, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -1;
    *out = o->via.u64;
    return 0;
}

static int get_double(const msgpack_object *o, double *out)
{
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
        *out = o->via.f64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        *out = (double)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *out = (double)o->via.i64;
    else
        return -1;
    return isfinite(*out) ? 0 : -1;
}

static int get_bool(const msgpack_object *o, int32_t *out)
{
    if (o->type == MSGPACK_OBJECT_BOOLEAN) {
        *out = o->via.boolean ? 1 : 0;
        return 0;
    }
    int64_t v;
    if (get_int(o, 0, 1, &v) == 0) {
        *out = (int32_t)v;
        return 0;
    }
    return -1;
}

/* Strings must be valid C strings (no NUL inside): paths, names and keys end up in C APIs. */
static int get_str(pf_msg *m, const msgpack_object *o, const char **out)
{
    if (o->type == MSGPACK_OBJECT_NIL) {
        *out = NULL;
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_STR)
        return -1;
    if (o->via.str.size && memchr(o->via.str.ptr, '\0', o->via.str.size))
        return -1;
    const char *s = arena_put(m, o->via.str.ptr, o->via.str.size);
    if (!s)
        return -1;
    *out = s;
    return 0;
}

/* Like get_str, but NUL bytes are data (generated text may decode byte tokens to NUL). */
static int get_str_n(pf_msg *m, const msgpack_object *o, const char **out, size_t *len)
{
    *len = 0;
    if (o->type == MSGPACK_OBJECT_NIL) {
        *out = NULL;
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_STR)
        return -1;
    const char *s = arena_put(m, o->via.str.ptr, o->via.str.size);
    if (!s)
        return -1;
    *out = s;
    *len = o->via.str.size;
    return 0;
}

/* Inlined: NAME is a literal, so its length is known at compile time and a field is matched against every
 * name decode_field knows with a compare of two sizes, most of them different (this runs for every field of
 * every message). */
static inline __attribute__((always_inline)) int key_is(const msgpack_object *k, const char *name)
{
    size_t n = strlen(name);
    return k->via.str.size == n && memcmp(k->via.str.ptr, name, n) == 0;
}

#define BAD(field) return pf_errf(err, "%s message: field '%s': wrong type or out of range", tname, field)

static int decode_task(pf_msg *m, const msgpack_object *o, const char *tname, pf_err *err)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        BAD("task");
    pf_task *t = &m->task;
    *t = pf_task_default_params();
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
        int64_t iv;
        if (k->type != MSGPACK_OBJECT_STR)
            BAD("task.<key>");
        if (key_is(k, "prompt")) {
            if (get_str(m, v, &t->prompt) || !t->prompt)
                BAD("task.prompt");
        } else if (key_is(k, "max_new_tokens")) {
            if (get_int(v, 0, 1 << 20, &iv))
                BAD("task.max_new_tokens");
            t->max_new_tokens = (int32_t)iv;
        } else if (key_is(k, "temperature")) {
            if (get_double(v, &t->temperature) || t->temperature < 0)
                BAD("task.temperature");
        } else if (key_is(k, "top_k")) {
            if (get_int(v, 0, INT32_MAX, &iv))
                BAD("task.top_k");
            t->top_k = (int32_t)iv;
        } else if (key_is(k, "top_p")) {
            if (get_double(v, &t->top_p) || t->top_p < 0 || t->top_p > 1)
                BAD("task.top_p");
        } else if (key_is(k, "repetition_penalty")) {
            if (get_double(v, &t->repetition_penalty) || t->repetition_penalty <= 0)
                BAD("task.repetition_penalty");
        } else if (key_is(k, "seed")) {
            if (get_u64(v, &t->seed))
                BAD("task.seed");
        } else if (key_is(k, "autorotate")) {
            if (get_bool(v, &t->autorotate))
                BAD("task.autorotate");
        }
    }
    if (!t->prompt)
        return pf_errf(err, "%s message: task without a prompt", tname);
    m->has_task = 1;
    return 0;
}

static int decode_timings(pf_msg *m, const msgpack_object *o, const char *tname, pf_err *err)
{
    (void)m;
    if (o->type != MSGPACK_OBJECT_MAP)
        BAD("timings");
    double *slots[PF_TIMINGS_N] = {&m->timings.read_s,    &m->timings.preprocess_s, &m->timings.queue_s,
                                   &m->timings.prefill_s, &m->timings.decode_s,     &m->timings.inference_s};
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR)
            BAD("timings.<key>");
        for (int j = 0; j < PF_TIMINGS_N; j++)
            if (key_is(k, pf_timing_names[j]) && get_double(v, slots[j]))
                BAD(pf_timing_names[j]);
    }
    return 0;
}

static int decode_workers(pf_msg *m, const msgpack_object *o, const char *tname, pf_err *err)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        BAD("workers");
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR)
            BAD("workers.<key>");
        if (key_is(k, "preprocess") && get_str(m, v, &m->w_preprocess))
            BAD("workers.preprocess");
        if (key_is(k, "inference") && get_str(m, v, &m->w_inference))
            BAD("workers.inference");
    }
    return 0;
}

static int decode_ids(pf_msg *m, const msgpack_object *o, const char *tname, pf_err *err)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        BAD("ids");
    size_t n = o->via.array.size;
    m->ids = malloc((n ? n : 1) * sizeof *m->ids);   /* n is bounded by the validator's limits */
    if (!m->ids)
        return pf_errf(err, "%s message: out of memory for %zu ids", tname, n);
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        if (get_int(&o->via.array.ptr[i], INT32_MIN, INT32_MAX, &v))
            BAD("ids[]");
        m->ids[i] = (int32_t)v;
    }
    m->n_ids = n;
    return 0;
}

static int decode_acks(pf_msg *m, const msgpack_object *o, const char *tname, pf_err *err)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        BAD("acks");
    size_t n = o->via.array.size;
    m->acks = calloc(n ? n : 1, sizeof *m->acks);
    if (!m->acks)
        return pf_errf(err, "%s message: out of memory for %zu acks", tname, n);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size < 3 || e->via.array.size > 4)
            BAD("acks[] (want [id, key, ok] or [id, key, ok, end])");
        int64_t id, end = -1;
        int32_t ok;
        if (get_int(&e->via.array.ptr[0], 0, INT64_MAX, &id) || get_str(m, &e->via.array.ptr[1], &m->acks[i].key) ||
            !m->acks[i].key || get_bool(&e->via.array.ptr[2], &ok) ||
            (e->via.array.size == 4 && get_int(&e->via.array.ptr[3], 0, INT64_MAX, &end)))
            BAD("acks[]");
        m->acks[i].id = id;
        m->acks[i].ok = ok;
        m->acks[i].end = end;
    }
    m->n_acks = n;
    return 0;
}

static int is_stage(const char *s)
{
    return s && (!strcmp(s, "preprocess") || !strcmp(s, "inference"));
}

/* A `notes` message's entries (PROTOCOL.md): a lease [id, key, path, stage, holder, holder_key|nil], an
 * unlease [id, key]; each checked as the lease and unlease messages are (an entry the sink would refuse as a
 * message of its own refuses the whole message: the entries after it depend on it). */
static int decode_notes(pf_msg *m, const msgpack_object *o, const char *tname, pf_err *err)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        BAD("notes");
    size_t n = o->via.array.size;   /* bounded by the validator's limits */
    m->notes = calloc(n ? n : 1, sizeof *m->notes);
    if (!m->notes)
        return pf_errf(err, "%s message: out of memory for %zu notes", tname, n);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];
        pf_note *t = &m->notes[i];
        if (e->type != MSGPACK_OBJECT_ARRAY || (e->via.array.size != 2 && e->via.array.size != 6))
            return pf_errf(err, "%s message: notes[%zu]: want [id, key] or [id, key, path, stage, holder, "
                           "holder_key]", tname, i);
        const msgpack_object *f = e->via.array.ptr;
        t->type = e->via.array.size == 2 ? PF_MSG_UNLEASE : PF_MSG_LEASE;
        if (get_int(&f[0], 0, INT64_MAX, &t->id) || get_str(m, &f[1], &t->key) || !t->key || !*t->key)
            return pf_errf(err, "%s message: notes[%zu]: id or key wrong type or out of range", tname, i);
        if (t->type == PF_MSG_UNLEASE)
            continue;
        if (get_str(m, &f[2], &t->path) || !t->path || get_str(m, &f[3], &t->stage) || !is_stage(t->stage) ||
            get_str(m, &f[4], &t->holder) || !t->holder || !*t->holder || get_str(m, &f[5], &t->holder_key))
            return pf_errf(err, "%s message: notes[%zu]: path, stage, holder or holder_key wrong type or out of "
                           "range", tname, i);
    }
    m->n_notes = n;
    return 0;
}

/* "items" of a batched start/done: [[id, key] or [id, key, stage, message], ...]. The array's size was
 * checked against the limits (pf_mp_validate) before msgpack-c allocated it; this allocation is that size. */
static int decode_items(pf_msg *m, const msgpack_object *o, const char *tname, pf_err *err)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size == 0)
        BAD("items (want a non-empty array)");
    size_t n = o->via.array.size;
    m->items = calloc(n, sizeof *m->items);
    if (!m->items)
        return pf_errf(err, "%s message: out of memory for %zu items", tname, n);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_ARRAY || (e->via.array.size != 2 && e->via.array.size != 4))
            BAD("items[] (want [id, key] or [id, key, stage, message])");
        pf_item_ref *r = &m->items[i];
        const msgpack_object *f = e->via.array.ptr;
        if (get_int(&f[0], 0, INT64_MAX, &r->id) || get_str(m, &f[1], &r->key) || !r->key || !*r->key)
            BAD("items[] (id, key)");
        if (e->via.array.size == 4 &&
            (get_str(m, &f[2], &r->stage) || !r->stage || get_str(m, &f[3], &r->message) || !r->message))
            BAD("items[] (stage, message)");
    }
    m->n_items = n;
    return 0;
}

static int decode_field(pf_msg *m, const msgpack_object *k, const msgpack_object *v, const char *tname, pf_err *err)
{
    int64_t iv;
#define STRF(name, dst)                                                                                            \
    if (key_is(k, name)) {                                                                                         \
        if (get_str(m, v, &m->dst))                                                                                \
            BAD(name);                                                                                             \
        return 0;                                                                                                  \
    }
#define INTF(name, dst, lo, hi)                                                                                    \
    if (key_is(k, name)) {                                                                                         \
        if (get_int(v, lo, hi, &iv))                                                                               \
            BAD(name);                                                                                             \
        m->dst = iv;                                                                                               \
        return 0;                                                                                                  \
    }
#define BOOLF(name, dst)                                                                                           \
    if (key_is(k, name)) {                                                                                         \
        if (get_bool(v, &m->dst))                                                                                  \
            BAD(name);                                                                                             \
        return 0;                                                                                                  \
    }
    STRF("role", role)
    STRF("name", name)
    STRF("host", host)
    STRF("instance", instance)
    STRF("key", key)
    STRF("path", path)
    STRF("file", file)
    STRF("content_key", content_key)
    STRF("stage", stage)
    STRF("message", message)
    STRF("holder", holder)
    STRF("holder_key", holder_key)
    STRF("meta", meta)
    if (key_is(k, "text")) {
        if (get_str_n(m, v, &m->text, &m->text_len))
            BAD("text");
        return 0;
    }
    INTF("pid", pid, 0, INT64_MAX)
    INTF("capacity", capacity, 0, 1 << 20)
    INTF("out_end", out_end, 0, INT64_MAX)
    INTF("out_records", out_records, 0, INT64_MAX)
    INTF("credit", credit, 0, 1 << 20)
    INTF("hello_seq", hello_seq, 0, INT64_MAX)
    INTF("total", n_total, 0, INT64_MAX)
    INTF("done", n_done, 0, INT64_MAX)
    INTF("failed", n_failed, 0, INT64_MAX)
    INTF("id", id, 0, INT64_MAX)
    INTF("attempt", attempt, 0, 1 << 20)
    INTF("image_size", image_size, 1, 8192)
    INTF("width", width, 0, 1 << 30)
    INTF("height", height, 0, 1 << 30)
    BOOLF("finished", finished)
    BOOLF("path_only", path_only)
    BOOLF("handback", handback)
    BOOLF("worker_fault", worker_fault)
    BOOLF("stopped_by_eos", stopped_by_eos)
    BOOLF("leases", leases)
    BOOLF("batch_notes", batch_notes)
    BOOLF("batch", batch)
    BOOLF("data_frame", data_frame)
    BOOLF("data_frames", data_frames)
    if (key_is(k, "lease_s")) {
        if (get_double(v, &m->lease_s) || m->lease_s < 0)
            BAD("lease_s");
        return 0;
    }
    if (key_is(k, "data")) {
        if (v->type != MSGPACK_OBJECT_BIN)
            BAD("data");
        m->data = (const uint8_t *)v->via.bin.ptr;
        m->data_len = v->via.bin.size;
        return 0;
    }
    if (key_is(k, "objects")) {   /* copied: records are made after the receive buffer is gone */
        if (v->type != MSGPACK_OBJECT_BIN || !(m->objects = arena_put(m, v->via.bin.ptr, v->via.bin.size)))
            BAD("objects");
        m->objects_len = v->via.bin.size;
        return 0;
    }
    if (key_is(k, "task"))
        return decode_task(m, v, tname, err);
    if (key_is(k, "timings"))
        return decode_timings(m, v, tname, err);
    if (key_is(k, "workers"))
        return decode_workers(m, v, tname, err);
    if (key_is(k, "ids"))
        return m->ids ? pf_errf(err, "%s message: duplicate field 'ids'", tname) : decode_ids(m, v, tname, err);
    if (key_is(k, "acks"))
        return m->acks ? pf_errf(err, "%s message: duplicate field 'acks'", tname) : decode_acks(m, v, tname, err);
    if (key_is(k, "notes"))
        return m->notes ? pf_errf(err, "%s message: duplicate field 'notes'", tname) : decode_notes(m, v, tname, err);
    if (key_is(k, "items"))
        return m->items ? pf_errf(err, "%s message: duplicate field 'items'", tname) : decode_items(m, v, tname, err);
    return 0;   /* unknown fields are ignored: newer peers may add fields within the same version */
#undef STRF
#undef INTF
#undef BOOLF
}

static int require(const char *tname, const char *field, int ok, pf_err *err)
{
    return ok ? 0 : pf_errf(err, "%s message: missing or invalid field '%s'", tname, field);
}

static int check_tensor(const pf_msg *m, const char *tname, pf_err *err)
{
    if (require(tname, "image_size", m->image_size > 0, err) || require(tname, "width", m->width > 0, err) ||
        require(tname, "height", m->height > 0, err))
        return -1;
    size_t want = (size_t)m->image_size * (size_t)m->image_size * 3;
    if (m->data_len != want)
        return pf_errf(err, "%s message: data holds %zu bytes, a uint8 [%d,%d,3] image needs %zu", tname,
                       m->data_len, m->image_size, m->image_size, want);
    return 0;
}

static int check_required(const pf_msg *m, const char *tname, pf_err *err)
{
    int item = m->id >= 0 && m->key && *m->key;
    switch (m->type) {
    case PF_MSG_HELLO:
        if (require(tname, "role", m->role && (!strcmp(m->role, "preprocess") || !strcmp(m->role, "inference") ||
                                               !strcmp(m->role, "sink")), err))
            return -1;
        return require(tname, "name", m->name && *m->name, err);
    case PF_MSG_WELCOME:
    case PF_MSG_RESET:
        return require(tname, "instance", m->instance && *m->instance, err);
    case PF_MSG_HB:
    case PF_MSG_BYE:
    case PF_MSG_CREDIT:
        return 0;
    case PF_MSG_ITEM:
        if (require(tname, "id/key", item, err) || require(tname, "path", m->path != NULL, err) ||
            require(tname, "task", m->has_task, err) || require(tname, "image_size", m->image_size > 0, err))
            return -1;
        if (m->width > 0 || m->height > 0)
            return check_tensor(m, tname, err);          /* an inference item carries the tensor */
        return require(tname, "data", m->path_only || m->data != NULL, err);
    case PF_MSG_TENSOR:
        if (require(tname, "id/key", item, err))
            return -1;
        return check_tensor(m, tname, err);
    case PF_MSG_DONE:
    case PF_MSG_START:
        /* one item (id, key), or a batch (items): never both, so no item is read twice or missed */
        if (m->items)
            return m->id >= 0 || m->key ? pf_errf(err, "%s message: both 'items' and 'id'/'key'", tname) : 0;
        return require(tname, "id/key", item, err);
    case PF_MSG_NACK:
        return require(tname, "id/key", item, err);
    case PF_MSG_RESULT:
        if (require(tname, "id/key", item, err) || require(tname, "path", m->path != NULL, err) ||
            require(tname, "task", m->has_task, err))
            return -1;
        return require(tname, "text", m->text != NULL, err);
    case PF_MSG_ERROR:
        if (require(tname, "id/key", item, err) || require(tname, "path", m->path != NULL, err) ||
            require(tname, "task", m->has_task, err) || require(tname, "stage", m->stage != NULL, err))
            return -1;
        return require(tname, "message", m->message != NULL, err);
    case PF_MSG_ACK:
        return require(tname, "acks", m->acks != NULL, err);
    case PF_MSG_LEASE:
        if (require(tname, "id/key", item, err) || require(tname, "path", m->path != NULL, err) ||
            require(tname, "holder", m->holder && *m->holder, err))
            return -1;
        return require(tname, "stage", is_stage(m->stage), err);
    case PF_MSG_UNLEASE:
        return require(tname, "id/key", item, err);
    case PF_MSG_NOTES:
        return require(tname, "notes", m->notes != NULL, err);
    default:
        return pf_errf(err, "message of unknown type");
    }
}

/* The map's fields into M, each type- and range-checked; the required fields are not checked yet (a data frame
 * may bring `data`). */
static int decode_map(const uint8_t *buf, size_t len, const pf_proto_limits *lim, pf_msg *m, pf_err *err)
{
    pf_msg_init(m, PF_MSG_NONE);
    m->version = 0;
    if (pf_mp_validate(buf, len, lim, err))
        return -1;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int rc = -1;
    if (msgpack_unpack_next(&up, (const char *)buf, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len) {
        pf_errf(err, "msgpack: cannot unpack the message");
        goto out;
    }
    const msgpack_object *root = &up.data;
    if (root->type != MSGPACK_OBJECT_MAP) {
        pf_errf(err, "message is not a msgpack map");
        goto out;
    }
    /* Strings are copied out with a NUL each: at most 2*len bytes (every str has a >= 1 byte header). */
    m->arena_cap_ = 2 * len + 16;
    m->arena_ = malloc(m->arena_cap_);
    if (!m->arena_) {
        pf_errf(err, "out of memory decoding a %zu-byte message", len);
        goto out;
    }
    const msgpack_object_map *map = &root->via.map;
    int64_t version = -1;
    const msgpack_object *tobj = NULL;
    for (uint32_t i = 0; i < map->size; i++) {
        const msgpack_object *k = &map->ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR) {
            pf_errf(err, "message: a key is not a string");
            goto out;
        }
        if (key_is(k, "v")) {
            if (get_int(&map->ptr[i].val, 0, INT32_MAX, &version)) {
                pf_errf(err, "message: field 'v': not a version number");
                goto out;
            }
        } else if (key_is(k, "type")) {
            tobj = &map->ptr[i].val;
        }
    }
    if (version < 0) {
        pf_errf(err, "message without a protocol version ('v')");
        goto out;
    }
    if (version != PF_PROTO_VERSION) {
        pf_errf(err, "message of protocol version %lld, this build speaks version %d", (long long)version,
                PF_PROTO_VERSION);
        goto out;
    }
    m->version = (uint32_t)version;
    if (!tobj || tobj->type != MSGPACK_OBJECT_STR) {
        pf_errf(err, "message without a type ('type')");
        goto out;
    }
    for (int t = 1; t < PF_MSG_TYPE_COUNT; t++)
        if (tobj->via.str.size == strlen(g_type_names[t]) &&
            memcmp(tobj->via.str.ptr, g_type_names[t], tobj->via.str.size) == 0)
            m->type = (pf_msg_type)t;
    if (m->type == PF_MSG_NONE) {
        pf_errf(err, "message of unknown type '%.*s'", (int)(tobj->via.str.size > 32 ? 32 : tobj->via.str.size),
                tobj->via.str.ptr);
        goto out;
    }
    const char *tname = g_type_names[m->type];
    for (uint32_t i = 0; i < map->size; i++)
        if (decode_field(m, &map->ptr[i].key, &map->ptr[i].val, tname, err))
            goto out;
    rc = 0;
out:
    msgpack_unpacked_destroy(&up);
    return rc;
}

/* The rules of PROTOCOL.md, "Data frames": the map says `data_frame` exactly when a second frame came, only an
 * item or a tensor carries one, and then its bytes are not also in the map (which would say twice what the
 * item's bytes are). */
static int attach_data_frame(pf_msg *m, const uint8_t *data, size_t data_len, const pf_proto_limits *lim,
                             pf_err *err)
{
    const char *tname = g_type_names[m->type];
    if (!data) {
        if (m->data_frame)
            return pf_errf(err, "%s message: says data_frame but no data frame follows the map", tname);
        return 0;
    }
    if (!m->data_frame)
        return pf_errf(err, "%s message: a second (data) frame follows a map that does not say data_frame",
                       tname);
    if (m->type != PF_MSG_ITEM && m->type != PF_MSG_TENSOR)
        return pf_errf(err, "%s message: only an item or a tensor carries a data frame", tname);
    if (m->data)
        return pf_errf(err, "%s message: 'data' both in the map and in a data frame", tname);
    if (data_len > lim->max_bin)
        return pf_errf(err, "%s message: data frame of %zu bytes exceeds the limit of %zu bytes", tname, data_len,
                       lim->max_bin);
    m->data = data;
    m->data_len = data_len;
    return 0;
}

int pf_msg_decode_frames(const uint8_t *buf, size_t len, const uint8_t *data, size_t data_len,
                         const pf_proto_limits *lim, pf_msg *m, pf_err *err)
{
    if (decode_map(buf, len, lim, m, err) || attach_data_frame(m, data, data_len, lim, err))
        return -1;
    return check_required(m, g_type_names[m->type], err);
}

int pf_msg_decode(const uint8_t *buf, size_t len, const pf_proto_limits *lim, pf_msg *m, pf_err *err)
{
    return pf_msg_decode_frames(buf, len, NULL, 0, lim, m, err);
}

/* ---------- encoding ---------- */

/* Maps are written with a map32 header reserved up front and patched with the final count, so
 * optional fields need no counting pass (valid msgpack; decoders accept non-minimal headers). */
typedef struct enc {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} enc;

static size_t map_begin(enc *e)
{
    size_t at = e->sb.size;
    static const char hdr[5] = {(char)0xdf, 0, 0, 0, 0};
    msgpack_sbuffer_write(&e->sb, hdr, 5);
    return at;
}

static void map_end(enc *e, size_t at, uint32_t n)
{
    unsigned char *p = (unsigned char *)e->sb.data + at + 1;
    p[0] = (unsigned char)(n >> 24);
    p[1] = (unsigned char)(n >> 16);
    p[2] = (unsigned char)(n >> 8);
    p[3] = (unsigned char)n;
}

static void pk_str(enc *e, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(&e->pk, n);
    msgpack_pack_str_body(&e->pk, s, n);
}

#define KEY(name) (pk_str(e, name), n++)
#define KV_STR(name, val)                                                                                          \
    do {                                                                                                           \
        if (val) {                                                                                                 \
            KEY(name);                                                                                             \
            pk_str(e, val);                                                                                        \
        }                                                                                                          \
    } while (0)
#define KV_INT(name, val)                                                                                          \
    do {                                                                                                           \
        KEY(name);                                                                                                 \
        msgpack_pack_int64(&e->pk, (int64_t)(val));                                                                \
    } while (0)
#define KV_DBL(name, val)                                                                                          \
    do {                                                                                                           \
        KEY(name);                                                                                                 \
        msgpack_pack_double(&e->pk, (double)(val));                                                                \
    } while (0)
#define KV_BOOL(name, val)                                                                                         \
    do {                                                                                                           \
        KEY(name);                                                                                                 \
        if (val)                                                                                                   \
            msgpack_pack_true(&e->pk);                                                                             \
        else                                                                                                       \
            msgpack_pack_false(&e->pk);                                                                            \
    } while (0)

static void enc_task(enc *e, const pf_task *t)
{
    uint32_t n = 0;
    size_t at = map_begin(e);
    KV_STR("prompt", t->prompt ? t->prompt : "");
    KV_INT("max_new_tokens", t->max_new_tokens);
    KV_DBL("temperature", t->temperature);
    KV_INT("top_k", t->top_k);
    KV_DBL("top_p", t->top_p);
    KV_DBL("repetition_penalty", t->repetition_penalty);
    KEY("seed");
    msgpack_pack_uint64(&e->pk, t->seed);
    KV_BOOL("autorotate", t->autorotate);
    map_end(e, at, n);
}

static void enc_timings(enc *e, const pf_timings *tm)
{
    uint32_t n = 0;
    size_t at = map_begin(e);
    double v[PF_TIMINGS_N];
    pf_timings_values(tm, v);
    for (int i = 0; i < PF_TIMINGS_N; i++)
        if (v[i] >= 0)
            KV_DBL(pf_timing_names[i], v[i]);
    map_end(e, at, n);
}

static void enc_workers(enc *e, const pf_msg *m)
{
    uint32_t n = 0;
    size_t at = map_begin(e);
    KV_STR("preprocess", m->w_preprocess);
    KV_STR("inference", m->w_inference);
    map_end(e, at, n);
}

int pf_msg_encode(const pf_msg *m, uint8_t **out, size_t *len, pf_err *err)
{
    if (m->type <= PF_MSG_NONE || m->type >= PF_MSG_TYPE_COUNT)
        return pf_errf(err, "encode: message of unknown type %d", (int)m->type);
    enc E, *e = &E;
    msgpack_sbuffer_init(&e->sb);
    msgpack_packer_init(&e->pk, &e->sb, msgpack_sbuffer_write);
    uint32_t n = 0;
    size_t at = map_begin(e);
    KV_INT("v", PF_PROTO_VERSION);
    KV_STR("type", g_type_names[m->type]);
    KV_STR("role", m->role);
    KV_STR("name", m->name);
    KV_STR("host", m->host);
    KV_STR("instance", m->instance);
    if (m->pid >= 0)
        KV_INT("pid", m->pid);
    /* Fields are written for the types that carry them, and whenever set (so what decodes re-encodes). */
    if (m->type == PF_MSG_HELLO || m->capacity)
        KV_INT("capacity", m->capacity);
    if (m->out_end >= 0)
        KV_INT("out_end", m->out_end);
    if (m->out_records >= 0)
        KV_INT("out_records", m->out_records);
    if (m->type == PF_MSG_CREDIT || m->type == PF_MSG_TENSOR || m->type == PF_MSG_DONE || m->type == PF_MSG_NACK ||
        m->credit)
        KV_INT("credit", m->credit);
    if (m->type == PF_MSG_HB && (m->n_total || m->finished)) {
        KV_BOOL("finished", m->finished);
        KV_INT("total", m->n_total);
        KV_INT("done", m->n_done);
        KV_INT("failed", m->n_failed);
    }
    if (m->id >= 0)
        KV_INT("id", m->id);
    KV_STR("key", m->key);
    KV_STR("path", m->path);
    KV_STR("file", m->file);
    KV_STR("content_key", m->content_key);
    if (m->attempt)
        KV_INT("attempt", m->attempt);
    if (m->has_task) {
        KEY("task");
        enc_task(e, &m->task);
    }
    if (m->image_size > 0)
        KV_INT("image_size", m->image_size);
    if (m->path_only)
        KV_BOOL("path_only", 1);
    if (m->width > 0)
        KV_INT("width", m->width);
    if (m->height > 0)
        KV_INT("height", m->height);
    if (m->lease_s > 0)
        KV_DBL("lease_s", m->lease_s);
    KV_STR("stage", m->stage);
    KV_STR("message", m->message);
    KV_STR("holder", m->holder);
    KV_STR("holder_key", m->holder_key);
    KV_STR("meta", m->meta);
    if (m->leases)
        KV_BOOL("leases", 1);
    if (m->batch_notes)
        KV_BOOL("batch_notes", 1);
    if (m->batch)
        KV_BOOL("batch", 1);
    if (m->data_frame)
        KV_BOOL("data_frame", 1);
    if (m->data_frames)
        KV_BOOL("data_frames", 1);
    if (m->handback)
        KV_BOOL("handback", 1);
    if (m->worker_fault)
        KV_BOOL("worker_fault", 1);
    if (m->hello_seq > 0)
        KV_INT("hello_seq", m->hello_seq);
    if (m->text) {
        KEY("text");
        size_t tl = m->text_len ? m->text_len : strlen(m->text);
        msgpack_pack_str(&e->pk, tl);
        msgpack_pack_str_body(&e->pk, m->text, tl);
    }
    if (m->type == PF_MSG_RESULT || m->n_ids) {
        KEY("ids");
        msgpack_pack_array(&e->pk, m->n_ids);
        for (size_t i = 0; i < m->n_ids; i++)
            msgpack_pack_int32(&e->pk, m->ids[i]);
        KV_BOOL("stopped_by_eos", m->stopped_by_eos);
    }
    if (m->objects) {
        KEY("objects");
        msgpack_pack_bin(&e->pk, m->objects_len);
        msgpack_pack_bin_body(&e->pk, m->objects, m->objects_len);
    }
    if (m->w_preprocess || m->w_inference) {
        KEY("workers");
        enc_workers(e, m);
    }
    const pf_timings *tm = &m->timings;
    if (tm->read_s >= 0 || tm->preprocess_s >= 0 || tm->queue_s >= 0 || tm->prefill_s >= 0 || tm->decode_s >= 0 ||
        tm->inference_s >= 0) {
        KEY("timings");
        enc_timings(e, tm);
    }
    if (m->type == PF_MSG_ACK || m->n_acks) {
        KEY("acks");
        msgpack_pack_array(&e->pk, m->n_acks);
        for (size_t i = 0; i < m->n_acks; i++) {
            msgpack_pack_array(&e->pk, m->acks[i].end >= 0 ? 4 : 3);
            msgpack_pack_int64(&e->pk, m->acks[i].id);
            pk_str(e, m->acks[i].key ? m->acks[i].key : "");
            if (m->acks[i].ok)
                msgpack_pack_true(&e->pk);
            else
                msgpack_pack_false(&e->pk);
            if (m->acks[i].end >= 0)
                msgpack_pack_int64(&e->pk, m->acks[i].end);
        }
    }
    if (m->type == PF_MSG_NOTES || m->n_notes) {
        KEY("notes");
        msgpack_pack_array(&e->pk, m->n_notes);
        for (size_t i = 0; i < m->n_notes; i++)
            if (pf_note_pack(&e->pk, &m->notes[i])) {
                msgpack_sbuffer_destroy(&e->sb);
                return pf_errf(err, "encode notes: notes[%zu] is not a lease or unlease note", i);
            }
    }
    if (m->n_items) {
        KEY("items");
        msgpack_pack_array(&e->pk, m->n_items);
        for (size_t i = 0; i < m->n_items; i++) {
            const pf_item_ref *r = &m->items[i];
            int err_rec = r->stage && r->message;
            msgpack_pack_array(&e->pk, err_rec ? 4 : 2);
            msgpack_pack_int64(&e->pk, r->id);
            pk_str(e, r->key ? r->key : "");
            if (err_rec) {
                pk_str(e, r->stage);
                pk_str(e, r->message);
            }
        }
    }
    if (m->data && !m->data_frame) {   /* else it goes as the second frame */
        KEY("data");
        msgpack_pack_bin(&e->pk, m->data_len);
        msgpack_pack_bin_body(&e->pk, m->data, m->data_len);
    }
    map_end(e, at, n);
    if (!e->sb.data) {
        msgpack_sbuffer_destroy(&e->sb);
        return pf_errf(err, "encode %s: out of memory", g_type_names[m->type]);
    }
    *len = e->sb.size;
    *out = (uint8_t *)msgpack_sbuffer_release(&e->sb);
    return 0;
}

/* ---------- keys ---------- */

uint64_t pf_task_hash(const pf_task *t, int image_size)
{
    /* Canonical text of every setting that changes the output; the format is part of the protocol
     * (changing it changes every key). */
    char buf[512];
    int n = snprintf(buf, sizeof buf, "paliflow-task-v1\nmax_new_tokens=%d\ntemperature=%.9g\ntop_k=%d\n"
                     "top_p=%.9g\nrepetition_penalty=%.9g\nseed=%llu\nautorotate=%d\nimage_size=%d\nprompt=",
                     t->max_new_tokens, t->temperature, t->top_k, t->top_p, t->repetition_penalty,
                     (unsigned long long)t->seed, t->autorotate, image_size);
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return 0;
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, buf, (size_t)n);
    if (t->prompt)
        XXH3_64bits_update(st, t->prompt, strlen(t->prompt));
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

void pf_item_key(const void *bytes, size_t len, uint64_t settings_hash, char out[PF_KEY_LEN + 1])
{
    XXH128_hash_t h = XXH3_128bits(bytes, len);
    snprintf(out, PF_KEY_LEN + 1, "%016llx%016llx-%016llx", (unsigned long long)h.high64,
             (unsigned long long)h.low64, (unsigned long long)settings_hash);
}

void pf_item_stat_key(const char *ident, int64_t size, int64_t mtime_ns, uint64_t settings_hash,
                      char out[PF_KEY_LEN + 1])
{
    /* "stat\0" in front: never the hash of some file's bytes by accident; the path enters as its own hash, so
     * any length fits a fixed buffer */
    XXH128_hash_t d = XXH3_128bits(ident, strlen(ident));
    uint64_t v[4] = {d.high64, d.low64, (uint64_t)size, (uint64_t)mtime_ns};
    uint8_t buf[5 + sizeof v];
    memcpy(buf, "stat", 5);
    memcpy(buf + 5, v, sizeof v);
    XXH128_hash_t h = XXH3_128bits(buf, sizeof buf);
    snprintf(out, PF_KEY_LEN + 1, "%016llx%016llx-%016llx", (unsigned long long)h.high64,
             (unsigned long long)h.low64, (unsigned long long)settings_hash);
}

int pf_item_content_key(const void *bytes, size_t len, const char *item_key, char out[PF_KEY_LEN + 1])
{
    if (!item_key || strlen(item_key) != PF_KEY_LEN || item_key[32] != '-')
        return -1;
    uint64_t settings = strtoull(item_key + 33, NULL, 16);
    pf_item_key(bytes, len, settings, out);
    return 0;
}

int pf_task_is_detect(const char *prompt)
{
    return prompt && strncmp(prompt, "detect", 6) == 0 && (prompt[6] == ' ' || prompt[6] == '\0');
}
