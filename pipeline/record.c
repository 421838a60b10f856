/* record.c - see record.h. jansson builds the JSON; the msgpack form is converted from it, so the two
 * cannot disagree. */
#include "pipeline/record.h"

#include <stdlib.h>
#include <string.h>

#include "base/base64.h"
#include "model/seg/objects.h"
#include "model/seg/boxes.h"

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
    double v[PF_TIMINGS_N];
    pf_timings_values(t, v);
    for (int i = 0; i < PF_TIMINGS_N; i++)
        if (v[i] >= 0)
            json_object_set_new(tm, pf_timing_names[i], json_real(v[i]));
    json_object_set_new(rec, "timings", tm);
}

/* The path, losslessly: `path` is always valid UTF-8 for readers (U+FFFD for each invalid byte), and a name
 * that is not valid UTF-8 also gets `path_b64`, the base64 of its raw bytes, which is its identity (two
 * files whose names differ only in invalid bytes have one `path` but two `path_b64`). */
static void set_path(json_t *rec, const char *path)
{
    json_t *exact = path ? json_string(path) : NULL;
    if (exact || !path) {
        json_object_set_new(rec, "path", exact ? exact : json_null());
        return;
    }
    json_object_set_new(rec, "path", jstr(path));
    char *b64 = pf_b64_encode(path, strlen(path));
    json_object_set_new(rec, "path_b64", b64 ? json_string(b64) : json_null());
    free(b64);
}

int pf_record_path(const json_t *rec, char **path)
{
    *path = NULL;
    json_t *b = json_object_get(rec, "path_b64");
    if (b) {
        uint8_t *raw;
        size_t n;
        if (!json_is_string(b) || pf_b64_decode(json_string_value(b), &raw, &n) != 0)
            return -1;
        if (n == 0 || memchr(raw, 0, n)) { /* not a file name */
            free(raw);
            return -1;
        }
        *path = (char *)raw;
        return 0;
    }
    const char *p = json_string_value(json_object_get(rec, "path"));
    if (!p || !*p)
        return -1;
    return (*path = strdup(p)) ? 0 : -1;
}

/* The item's own additions (manifest "id" and "extra" columns) go in at the top level, but never over a
 * field the record already has: a column named like a record field cannot forge or hide the result. A meta
 * that is not a JSON object (a hostile worker) is dropped. */
static void add_meta(json_t *rec, const char *meta)
{
    if (!meta || !*meta)
        return;
    json_t *j = json_loads(meta, 0, NULL);
    const char *k;
    json_t *v;
    if (json_is_object(j))
        json_object_foreach(j, k, v)
        {
            if (!json_object_get(rec, k))
                json_object_set(rec, k, v);
        }
    json_decref(j);
}

json_t *pf_record_make(const pf_msg *m)
{
    json_t *rec = json_object();
    set_path(rec, m->path);
    json_object_set_new(rec, "key", jstr(m->key));
    if (m->content_key)   /* --path-only: `key` is made from the file's path, size and time; this from its bytes */
        json_object_set_new(rec, "content_key", jstr(m->content_key));
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
        if (pf_seg_prompt_is_segment(m->task.prompt))   /* masks made by the worker, or label + box only */
            pf_seg_record_objects(rec, m->text, m->text_len, m->width, m->height, NULL, m->objects, m->objects_len);
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
    add_meta(rec, m->meta);
    return rec;
}

void pf_record_pack(const json_t *rec, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    json_t *env = json_deep_copy(rec);
    json_object_set_new(env, "v", json_integer(PF_PROTO_VERSION));
    json_object_set_new(env, "type", json_string("record"));
    pack_json(&pk, env);
    json_decref(env);
}
