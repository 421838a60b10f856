/* record_line.c - see record_line.h. Every rule here mirrors a choice of jansson 2.14 or of record.c; the
 * comments name which. */
#include "pipeline/record_line.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base64.h"
#include "base/grow.h"
#include "model/seg/objects.h"
#include "pipeline/json_real.h"
#include "pipeline/record.h"

#define MAX_KEYS 24   /* the record's own fields (at most 16), for the meta fields' "not over a field" rule */

typedef struct wr {
    pf_line_buf *b;
    int oom;
    int n_fields;   /* fields written to the record object so far */
    const char *keys[MAX_KEYS];   /* the fields written */
    int n_keys;
    json_t *objs;   /* a segment record's objects (put_objects) */
} wr;

static void put(wr *w, const void *s, size_t n)
{
    if (w->oom || PF_GROW(w->b->p, w->b->cap, w->b->n, n, 1024)) {
        w->oom = 1;
        return;
    }
    memcpy(w->b->p + w->b->n, s, n);
    w->b->n += n;
}

#define PUT_LIT(w, lit) put((w), (lit), sizeof(lit) - 1)

/* jansson's utf8_check_first + utf8_check_full: the length of the valid UTF-8 character at S (N bytes left),
 * 0 when there is none (a stray continuation byte, an overlong form, a surrogate, above U+10FFFF, cut short). */
static size_t utf8_char(const unsigned char *s, size_t n)
{
    unsigned u = s[0];
    size_t len;
    uint32_t v;
    if (u < 0x80)
        return 1;
    if (u >= 0xC2 && u <= 0xDF)
        len = 2, v = u & 0x1F;
    else if (u >= 0xE0 && u <= 0xEF)
        len = 3, v = u & 0x0F;
    else if (u >= 0xF0 && u <= 0xF4)
        len = 4, v = u & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || (len == 3 && v < 0x800) || (len == 4 && v < 0x10000))
        return 0;
    return len;
}

/* json_string / json_stringn accept S[0..N) */
static int utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t len = utf8_char(u + i, n - i);
        if (!len)
            return 0;
        i += len;
    }
    return 1;
}

/* The body of a valid UTF-8 string as jansson's dump_string writes it (no flags): '"' and '\\' escaped, the
 * control characters as \b \f \n \r \t or \u00XX (upper-case hex), everything else as it is. */
static void put_escaped(wr *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t run = 0;   /* bytes copied as they are, pending */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            run++;
            continue;
        }
        put(w, s + i - run, run);
        run = 0;
        char e[6] = {'\\', 0};
        size_t el = 2;
        switch (c) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        default:
            memcpy(e + 1, "u00", 3);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            el = 6;
        }
        put(w, e, el);
    }
    put(w, s + n - run, run);
}

static void put_string(wr *w, const char *s, size_t n)
{
    PUT_LIT(w, "\"");
    put_escaped(w, s, n);
    PUT_LIT(w, "\"");
}

/* record.c's jstr: NULL is null; a string that is not valid UTF-8 gets U+FFFD for each byte that does not
 * start a valid character. */
static void put_jstr(wr *w, const char *s)
{
    if (!s) {
        PUT_LIT(w, "null");
        return;
    }
    size_t n = strlen(s);
    if (utf8_valid(s, n)) {
        put_string(w, s, n);
        return;
    }
    const unsigned char *u = (const unsigned char *)s;
    PUT_LIT(w, "\"");
    for (size_t i = 0; i < n;) {
        size_t len = utf8_char(u + i, n - i);
        if (len) {
            put_escaped(w, s + i, len);
            i += len;
        } else {
            PUT_LIT(w, "\xef\xbf\xbd");
            i++;
        }
    }
    PUT_LIT(w, "\"");
}

/* The next field of the record object: '{' or ',', then "KEY": (KEY lives until the line is done). */
static void field(wr *w, const char *key)
{
    put(w, w->n_fields++ ? "," : "{", 1);
    put_string(w, key, strlen(key));
    PUT_LIT(w, ":");
    if (w->n_keys < MAX_KEYS)
        w->keys[w->n_keys++] = key;
}

static int has_field(const wr *w, const char *key)
{
    for (int i = 0; i < w->n_keys; i++)
        if (!strcmp(w->keys[i], key))
            return 1;
    return 0;
}

/* jansson's "%" JSON_INTEGER_FORMAT */
static void put_int(wr *w, int64_t v)
{
    char t[24];
    int n = 0;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        t[sizeof t - 1 - n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        t[sizeof t - 1 - n++] = '-';
    put(w, t + sizeof t - n, (size_t)n);
}

static int dump_cb(const char *buf, size_t size, void *data)
{
    wr *w = data;
    put(w, buf, size);
    return w->oom ? -1 : 0;
}

/* A value built with jansson, dumped as the whole record's dump would write it. */
static void put_json(wr *w, const json_t *j)
{
    if (json_dump_callback(j, dump_cb, w, JSON_COMPACT | JSON_ENCODE_ANY))
        w->oom = 1;
}

/* record.c's set_path: the path, and `path_b64` when it is not valid UTF-8. */
static void put_path(wr *w, const char *path)
{
    field(w, "path");
    put_jstr(w, path);
    if (!path || utf8_valid(path, strlen(path)))
        return;
    field(w, "path_b64");
    char *b64 = pf_b64_encode(path, strlen(path));
    if (b64)
        put_string(w, b64, strlen(b64));
    else
        PUT_LIT(w, "null");
    free(b64);
}

/* A segment prompt's "objects" (and "note"): pf_seg_record_objects decides them, into an object of their
 * own whose fields go into the record in its order. */
static void put_objects(wr *w, const pf_msg *m)
{
    json_t *objs = w->objs = json_object();   /* kept until the line is done: its keys are in w->keys */
    if (!objs) {
        w->oom = 1;
        return;
    }
    pf_seg_record_objects(objs, m->text, m->text_len, m->width, m->height, NULL, m->objects, m->objects_len);
    const char *k;
    json_t *v;
    json_object_foreach(objs, k, v) {
        field(w, k);
        put_json(w, v);
    }
}

static void put_result(wr *w, const pf_msg *m)
{
    /* json_stringn: NULL for text that is not valid UTF-8, and json_object_set_new then adds no field */
    if (!m->text) {
        field(w, "text");
        PUT_LIT(w, "null");
    } else if (utf8_valid(m->text, m->text_len)) {
        field(w, "text");
        put_string(w, m->text, m->text_len);
    }
    if (pf_task_is_detect(m->task.prompt)) {
        json_t *boxes = pf_record_boxes(m);
        field(w, "boxes");
        put_json(w, boxes);
        json_decref(boxes);
    }
    if (pf_seg_prompt_is_segment(m->task.prompt))
        put_objects(w, m);
    field(w, "ids");
    PUT_LIT(w, "[");
    for (size_t i = 0; i < m->n_ids; i++) {
        if (i)
            PUT_LIT(w, ",");
        put_int(w, m->ids[i]);
    }
    PUT_LIT(w, "]");
    field(w, "stopped_by_eos");
    if (m->stopped_by_eos)
        PUT_LIT(w, "true");
    else
        PUT_LIT(w, "false");
}

/* record.c's set_timings: the stages that were timed (>= 0), a real each (json_real refuses infinity: no
 * field). */
static void put_timings(wr *w, const pf_timings *t)
{
    double v[PF_TIMINGS_N];
    pf_timings_values(t, v);
    field(w, "timings");
    int n = 0;
    for (int i = 0; i < PF_TIMINGS_N; i++) {
        if (!(v[i] >= 0) || !isfinite(v[i]))
            continue;
        put(w, n++ ? ",\"" : "{\"", 2);
        put(w, pf_timing_names[i], strlen(pf_timing_names[i]));
        PUT_LIT(w, "\":");
        char num[PF_JSON_REAL_MAX];
        put(w, num, pf_json_real(v[i], num));
    }
    put(w, n ? "}" : "{}", n ? 1 : 2);
}

static void put_workers(wr *w, const pf_msg *m)
{
    field(w, "workers");
    PUT_LIT(w, "{");
    if (m->w_preprocess) {
        PUT_LIT(w, "\"preprocess\":");
        put_jstr(w, m->w_preprocess);
    }
    if (m->w_inference) {
        put(w, m->w_preprocess ? ",\"inference\":" : "\"inference\":", m->w_preprocess ? 13 : 12);
        put_jstr(w, m->w_inference);
    }
    PUT_LIT(w, "}");
}

/* record.c's add_meta: the fields of the item's meta object that the record does not have already. */
static void put_meta(wr *w, const char *meta)
{
    if (!meta || !*meta)
        return;
    json_t *j = json_loads(meta, 0, NULL);
    const char *k;
    json_t *v;
    if (json_is_object(j))
        json_object_foreach(j, k, v) {
            if (has_field(w, k))
                continue;
            PUT_LIT(w, ",");
            put_string(w, k, strlen(k));   /* jansson's keys are valid UTF-8 without NUL */
            PUT_LIT(w, ":");
            put_json(w, v);
        }
    json_decref(j);
}

int pf_record_line(const pf_msg *m, pf_line_buf *b)
{
    size_t n0 = b->n;
    wr w = {.b = b};
    put_path(&w, m->path);
    field(&w, "key");
    put_jstr(&w, m->key);
    if (m->content_key) {
        field(&w, "content_key");
        put_jstr(&w, m->content_key);
    }
    field(&w, "task");
    put_jstr(&w, m->task.prompt);
    if (m->type == PF_MSG_RESULT) {
        put_result(&w, m);
    } else {
        field(&w, "error");
        PUT_LIT(&w, "{\"stage\":");
        put_jstr(&w, m->stage);
        PUT_LIT(&w, ",\"message\":");
        put_jstr(&w, m->message);
        PUT_LIT(&w, "}");
    }
    if (m->width > 0 && m->height > 0) {
        field(&w, "image");
        PUT_LIT(&w, "{\"width\":");
        put_int(&w, m->width);
        PUT_LIT(&w, ",\"height\":");
        put_int(&w, m->height);
        PUT_LIT(&w, "}");
    }
    field(&w, "attempt");
    put_int(&w, (int64_t)m->attempt + 1);
    put_timings(&w, &m->timings);
    put_workers(&w, m);
    put_meta(&w, m->meta);
    PUT_LIT(&w, "}\n");
    json_decref(w.objs);
    if (w.oom) {
        b->n = n0;
        return -1;
    }
    return 0;
}
