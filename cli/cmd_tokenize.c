/* paliflow tokenize: encode / decode / build processor inputs for JSON lines on stdin (issue 3).
 * One output line per input line, in order; a line that cannot be processed gives {"error": ...}. */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/file.h"
#include "base/log.h"
#include "base/optable.h"
#include "cli/commands.h"
#include "model/tokenizer/processor.h"
#include "model/tokenizer/tokenizer.h"

typedef struct tokenize_cli {
    const char *path;
    int decode, skip, proc;
} tokenize_cli;

static void tokenize_init(void *obj)
{
    *(tokenize_cli *)obj = (tokenize_cli){0};
}

#define T tokenize_cli
static const pf_opt g_rows[] = {
    {"tokenizer", 't', PF_OPT_STR, offsetof(T, path), .flags = PF_OPT_NONEMPTY | PF_OPT_REQUIRED, .arg = "FILE",
     .help = "tokenizer.json (Hugging Face format)"},
    PF_OPT_ROW_FLAG("decode", T, decode, 0, "{\"ids\": [...]} -> {\"text\": \"...\"} (unknown ids are dropped)"),
    PF_OPT_ROW_FLAG("skip-special", T, skip, 0,
                    "with --decode: drop special tokens (skip_special_tokens=True); a line's own \"skip_special\": "
                    "true/false overrides the flag"),
    PF_OPT_ROW_FLAG("processor", T, proc, 0, "PaliGemmaProcessor text inputs (above)"),
    PF_OPT_END,
};
#undef T

static const pf_optcmd g_cmd = {
    .name = "tokenize",
    .synopsis = "usage: paliflow tokenize --tokenizer FILE [--decode [--skip-special] | --processor]\n"
                "\n"
                "Read JSON lines on stdin and write one JSON line per input line on stdout, in order.\n"
                "  (default)      {\"text\": \"...\"}  ->  {\"ids\": [...]}   (no special tokens added)\n"
                "  --decode       {\"ids\": [...]}   ->  {\"text\": \"...\"}\n"
                "  --processor    {\"prompt\", \"suffix\" (string or null), \"image_seq_len\", \"num_images\"}\n"
                "                   -> {\"input_ids\", \"token_type_ids\", \"labels\"} (null without suffix)\n"
                "                 {\"prompts\", \"suffixes\" (list or null), \"image_seq_len\",\n"
                "                  \"num_images\": [...], \"padding\": \"longest\", \"padding_side\": \"left\"}\n"
                "                   -> {\"input_ids\", \"attention_mask\", \"token_type_ids\", \"labels\"} (2-D)\n"
                "\n"
                "options:\n",
    .epilog = "\n"
              "A line that cannot be processed gives {\"error\": \"line N: ...\"} and processing goes on;\n"
              "the exit status is then 1. Exit status 2: usage error or the tokenizer cannot be loaded.\n",
    .opts = g_rows,
    .size = sizeof(tokenize_cli),
    .init = tokenize_init,
};

/* ---- output helpers ---- */

static json_t *ids_json(const int32_t *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_integer(v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *matrix_json(const int32_t *v, size_t rows, size_t cols)
{
    json_t *a = json_array();
    for (size_t r = 0; a && r < rows; r++)
        if (json_array_append_new(a, ids_json(v + r * cols, cols)) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* Write obj (stolen) as one line; returns 0, or -1 after printing nothing if it cannot be dumped.
 * JSON_ENSURE_ASCII: non-ASCII text goes out as \u escapes, so that no reader splitting lines on Unicode
 * line breaks (U+2028, U+0085, as Python's str.splitlines does) can see a line end inside a string. */
static int emit(json_t *obj)
{
    char *s = obj ? json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(obj);
    if (!s)
        return -1;
    fputs(s, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    free(s);
    return 0;
}

static void emit_error(size_t line_no, const char *msg)
{
    char buf[PF_ERR_MAX + 64];
    snprintf(buf, sizeof buf, "line %zu: %s", line_no, msg);
    /* the message may quote input bytes: json_string refuses invalid UTF-8, so fall back to a fixed text */
    json_t *s = json_string(buf);
    if (!s)
        s = json_string("invalid input line");
    json_t *o = json_object();
    json_object_set_new(o, "error", s);
    if (emit(o) != 0) {
        printf("{\"error\": \"line %zu\"}\n", line_no);
        fflush(stdout);
    }
}

/* ---- input helpers ---- */

static int get_text(json_t *obj, const char *key, bool null_ok, pf_proc_text *out, pf_err *err)
{
    json_t *v = json_object_get(obj, key);
    out->s = NULL;
    out->len = 0;
    if (!v || json_is_null(v)) {
        if (null_ok)
            return 0;
        return pf_errf(err, "\"%s\": expected a string", key);
    }
    if (!json_is_string(v))
        return pf_errf(err, "\"%s\": expected a string%s", key, null_ok ? " or null" : "");
    out->s = json_string_value(v);
    out->len = json_string_length(v);
    return 0;
}

static int get_int(json_t *v, const char *what, long long lo, long long hi, long long *out, pf_err *err)
{
    if (!json_is_integer(v))
        return pf_errf(err, "%s: expected an integer", what);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return pf_errf(err, "%s: %lld out of range [%lld, %lld]", what, x, lo, hi);
    *out = x;
    return 0;
}

/* ---- the three modes ---- */

static json_t *do_encode(const pf_tokenizer *tok, json_t *in, pf_err *err)
{
    pf_proc_text t;
    if (get_text(in, "text", false, &t, err) != 0)
        return NULL;
    pf_ids ids = {0};
    if (pf_tokenizer_encode(tok, t.s, t.len, &ids, err) != 0) {
        pf_ids_free(&ids);
        return NULL;
    }
    json_t *o = json_object();
    json_object_set_new(o, "ids", ids_json(ids.v, ids.n));
    pf_ids_free(&ids);
    return o;
}

static json_t *do_decode(const pf_tokenizer *tok, json_t *in, bool skip_special, pf_err *err)
{
    json_t *arr = json_object_get(in, "ids");
    if (!json_is_array(arr)) {
        pf_errf(err, "\"ids\": expected an array of integers");
        return NULL;
    }
    json_t *sk = json_object_get(in, "skip_special");
    if (sk && !json_is_null(sk)) {
        if (!json_is_boolean(sk)) {
            pf_errf(err, "\"skip_special\": expected true or false");
            return NULL;
        }
        skip_special = json_is_true(sk);
    }
    size_t n = json_array_size(arr);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) {
        pf_errf(err, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        long long x = 0;
        char what[48];
        snprintf(what, sizeof what, "ids[%zu]", i);
        if (get_int(json_array_get(arr, i), what, 0, 4294967295LL, &x, err) != 0) {
            free(ids);
            return NULL;
        }
        ids[i] = x > INT32_MAX ? -1 : (int32_t)x; /* ids beyond the vocabulary are dropped by decode */
    }
    char *text;
    size_t len;
    int rc = pf_tokenizer_decode(tok, ids, n, skip_special, &text, &len, err);
    free(ids);
    if (rc != 0)
        return NULL;
    json_t *s = json_stringn(text, len);
    free(text);
    if (!s) {
        pf_errf(err, "decoded text is not valid UTF-8");
        return NULL;
    }
    json_t *o = json_object();
    json_object_set_new(o, "text", s);
    return o;
}

static json_t *do_processor_single(const pf_tokenizer *tok, json_t *in, pf_err *err)
{
    pf_proc_text prompt, suffix;
    long long seq = 0, nimg = 1;
    if (get_text(in, "prompt", true, &prompt, err) != 0 || get_text(in, "suffix", true, &suffix, err) != 0 ||
        get_int(json_object_get(in, "image_seq_len"), "\"image_seq_len\"", 0, PF_PROC_MAX_IMAGE_TOKENS, &seq,
                err) != 0)
        return NULL;
    json_t *ni = json_object_get(in, "num_images");
    if (ni && !json_is_null(ni) &&
        get_int(ni, "\"num_images\"", 0, PF_PROC_MAX_IMAGE_TOKENS, &nimg, err) != 0)
        return NULL;
    if (!prompt.s)
        prompt = (pf_proc_text){"", 0};
    pf_proc_row row;
    if (pf_processor_build_n(tok, prompt, suffix, (int)seq, (int)nimg, &row, err) != 0)
        return NULL;
    json_t *o = json_object();
    json_object_set_new(o, "input_ids", ids_json(row.input_ids.v, row.input_ids.n));
    json_object_set_new(o, "token_type_ids",
                        row.has_suffix ? ids_json(row.token_type_ids.v, row.token_type_ids.n) : json_null());
    json_object_set_new(o, "labels", row.has_suffix ? ids_json(row.labels.v, row.labels.n) : json_null());
    pf_proc_row_free(&row);
    return o;
}

static json_t *do_processor_batch(const pf_tokenizer *tok, json_t *in, pf_err *err)
{
    json_t *prompts = json_object_get(in, "prompts"), *suffixes = json_object_get(in, "suffixes");
    json_t *nimg = json_object_get(in, "num_images"), *padding = json_object_get(in, "padding");
    json_t *side = json_object_get(in, "padding_side");
    if (!json_is_array(prompts)) {
        pf_errf(err, "\"prompts\": expected an array of strings");
        return NULL;
    }
    size_t n = json_array_size(prompts);
    if (suffixes && !json_is_null(suffixes) && (!json_is_array(suffixes) || json_array_size(suffixes) != n)) {
        pf_errf(err, "\"suffixes\": expected null or an array of %zu strings", n);
        return NULL;
    }
    if (suffixes && json_is_null(suffixes))
        suffixes = NULL;
    if (padding && !json_is_null(padding) && !json_is_true(padding) &&
        !(json_is_string(padding) && strcmp(json_string_value(padding), "longest") == 0)) {
        pf_errf(err, "\"padding\": only \"longest\" is supported");
        return NULL;
    }
    pf_proc_pad_side ps = PF_PROC_PAD_LEFT;
    if (side && !json_is_null(side)) {
        const char *s = json_is_string(side) ? json_string_value(side) : "";
        if (strcmp(s, "left") == 0)
            ps = PF_PROC_PAD_LEFT;
        else if (strcmp(s, "right") == 0)
            ps = PF_PROC_PAD_RIGHT;
        else {
            pf_errf(err, "\"padding_side\": expected \"left\" or \"right\"");
            return NULL;
        }
    }
    long long seq = 0;
    if (get_int(json_object_get(in, "image_seq_len"), "\"image_seq_len\"", 0, PF_PROC_MAX_IMAGE_TOKENS, &seq,
                err) != 0)
        return NULL;
    pf_proc_text *p = calloc(n ? n : 1, sizeof *p), *s = calloc(n ? n : 1, sizeof *s);
    int *ni = calloc(n ? n : 1, sizeof *ni);
    json_t *o = NULL;
    if (!p || !s || !ni) {
        pf_errf(err, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(prompts, i);
        if (json_is_null(v)) {
            p[i] = (pf_proc_text){"", 0};
        } else if (json_is_string(v)) {
            p[i] = (pf_proc_text){json_string_value(v), json_string_length(v)};
        } else {
            pf_errf(err, "\"prompts\"[%zu]: expected a string", i);
            goto out;
        }
        if (suffixes) {
            json_t *w = json_array_get(suffixes, i);
            if (!json_is_string(w)) {
                pf_errf(err, "\"suffixes\"[%zu]: expected a string", i);
                goto out;
            }
            s[i] = (pf_proc_text){json_string_value(w), json_string_length(w)};
        }
        long long k = 1;
        char what[48];
        snprintf(what, sizeof what, "\"num_images\"[%zu]", i);
        if (json_is_array(nimg)) {
            if (json_array_size(nimg) != n) {
                pf_errf(err, "\"num_images\": expected %zu entries", n);
                goto out;
            }
            if (get_int(json_array_get(nimg, i), what, 0, PF_PROC_MAX_IMAGE_TOKENS, &k, err) != 0)
                goto out;
        } else if (nimg && !json_is_null(nimg)) {
            if (get_int(nimg, "\"num_images\"", 0, PF_PROC_MAX_IMAGE_TOKENS, &k, err) != 0)
                goto out;
        }
        ni[i] = (int)k;
    }
    pf_proc_batch b;
    if (pf_processor_build_batch(tok, p, suffixes ? s : NULL, n, (int)seq, ni, ps, &b, err) != 0)
        goto out;
    o = json_object();
    json_object_set_new(o, "input_ids", matrix_json(b.input_ids, b.rows, b.cols));
    json_object_set_new(o, "attention_mask", matrix_json(b.attention_mask, b.rows, b.cols));
    json_object_set_new(o, "token_type_ids",
                        b.has_suffix ? matrix_json(b.token_type_ids, b.rows, b.cols) : json_null());
    json_object_set_new(o, "labels", b.has_suffix ? matrix_json(b.labels, b.rows, b.cols) : json_null());
    pf_proc_batch_free(&b);
out:
    free(p);
    free(s);
    free(ni);
    return o;
}

enum { MODE_ENCODE, MODE_DECODE, MODE_PROCESSOR };

int cmd_tokenize(int argc, char **argv)
{
    tokenize_cli opts;
    tokenize_init(&opts);
    int pr = pf_opt_parse(&g_cmd, &opts, argc, argv, NULL, 0);
    if (pr)
        return pr == 1 ? 0 : 2;
    const char *path = opts.path;
    bool decode = opts.decode, skip = opts.skip, proc = opts.proc;
    if (!path) {
        fprintf(stderr, "paliflow tokenize: --tokenizer FILE is required\n");
        return 2;
    }
    if (decode && proc) {
        fprintf(stderr, "paliflow tokenize: --decode and --processor exclude each other\n");
        return 2;
    }
    if (skip && !decode) {
        fprintf(stderr, "paliflow tokenize: --skip-special needs --decode\n");
        return 2;
    }
    int mode = decode ? MODE_DECODE : proc ? MODE_PROCESSOR : MODE_ENCODE;

    pf_err err;
    pf_tokenizer *tok;
    double t0 = pf_now();
    if (pf_tokenizer_load(path, &tok, &err) != 0) {
        fprintf(stderr, "paliflow tokenize: %s\n", err.msg);
        return 2;
    }
    pf_debug("tokenize", "loaded %s in %.1f ms (%zu ids)", path, (pf_now() - t0) * 1e3,
             pf_tokenizer_vocab_size(tok));

    char *line = NULL;
    size_t cap = 0, line_no = 0;
    ssize_t got;
    int status = 0;
    while ((got = getline(&line, &cap, stdin)) != -1) {
        line_no++;
        json_error_t jerr;
        json_t *in = json_loadb(line, (size_t)got, JSON_ALLOW_NUL, &jerr);
        json_t *o = NULL;
        if (!in) {
            pf_errf(&err, "invalid JSON: %s (column %d)", jerr.text, jerr.column);
        } else if (!json_is_object(in)) {
            pf_errf(&err, "expected a JSON object");
        } else if (mode == MODE_ENCODE) {
            o = do_encode(tok, in, &err);
        } else if (mode == MODE_DECODE) {
            o = do_decode(tok, in, skip, &err);
        } else if (json_object_get(in, "prompts")) {
            o = do_processor_batch(tok, in, &err);
        } else {
            o = do_processor_single(tok, in, &err);
        }
        json_decref(in);
        if (!o || emit(o) != 0) {
            if (o)
                pf_errf(&err, "cannot write the result as JSON");
            emit_error(line_no, err.msg);
            status = 1;
        }
    }
    free(line);
    pf_tokenizer_free(tok);
    if (ferror(stdin)) {
        fprintf(stderr, "paliflow tokenize: error reading stdin\n");
        return 2;
    }
    return status;
}
