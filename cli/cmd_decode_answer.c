/* paliflow decode-answer: PaliGemma answer texts (stdin) -> their objects (stdout, one JSON line each), for
 * users who already have answers: from another runtime, or records made without --seg-decoder. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/grow.h"
#include "base/log.h"
#include "base/optable.h"
#include "cli/commands.h"
#include "model/seg/decoder.h"
#include "model/seg/objects.h"

#define MAX_LINE (16u << 20)   /* one answer (or one record) per line; anything longer is refused */

typedef struct decode_cli {
    const char *seg_path;
    int width, height;
} decode_cli;

static void decode_init(void *obj)
{
    *(decode_cli *)obj = (decode_cli){0};
}

#define T decode_cli
static const pf_opt g_rows[] = {
    PF_OPT_ROW_STR("seg-decoder", T, seg_path, PF_OPT_NONEMPTY, "FILE",
                   "big_vision's vae-oid.npz (without it masks are null, with a \"note\")"),
    PF_OPT_ROW_INT("width", T, width, 1, 65536, PF_OPT_NO_DEFAULT, "W",
                   "the original image width, for lines that do not carry one (with --height)"),
    PF_OPT_ROW_INT("height", T, height, 1, 65536, PF_OPT_NO_DEFAULT, "H", "the original image height"),
    PF_OPT_END,
};
#undef T

static const pf_optcmd g_cmd = {
    .name = "decode-answer",
    .synopsis = "usage: paliflow decode-answer [--seg-decoder FILE] [--width W --height H] < ANSWERS\n"
                "\n"
                "Read PaliGemma answers from stdin, one per line, and print one JSON line per answer:\n"
                "  {\"objects\": [{\"label\", \"loc\": [y0,x0,y1,x1], \"x0\", \"y0\", \"x1\", \"y1\", \"mask\"}, ...]}\n"
                "Objects come from detect answers (<loc>x4 label) and segment answers (<loc>x4 <seg>x16 label),\n"
                "several separated by ' ; '. Boxes are in pixels of the original W x H image (loc/1023 * size);\n"
                "a segment object's mask is COCO uncompressed RLE {\"size\": [h, w], \"counts\": [...]}\n"
                "(column-major, first run = zeros), decoded exactly as big_vision's evaluator does.\n"
                "A line may also be JSON: a string (the answer, which may then hold newlines), or an object with\n"
                "\"text\" and the size as \"width\"/\"height\" or \"image\": {\"width\", \"height\"} (so the records of\n"
                "`paliflow run` can be piped in as they are).\n"
                "\n",
    .epilog = "A line that cannot be decoded prints {\"error\": reason}.\n"
            "Exit status: 0 every line decoded, 1 some lines failed, 2 usage or setup error.\n",
    .opts = g_rows,
    .size = sizeof(decode_cli),
    .init = decode_init,
};

/* One line of at most MAX_LINE bytes into *buf (grown as needed). 1 a line, 0 end of input, -1 too long
 * (the rest of that line is skipped). */
static int read_line(FILE *in, char **buf, size_t *cap, size_t *len)
{
    *len = 0;
    int c, any = 0, too_long = 0;
    while ((c = getc(in)) != EOF) {
        any = 1;
        if (c == '\n')
            break;
        if (too_long)
            continue;
        if (PF_GROW(*buf, *cap, *len, 2, 4096))
            return -2;
        (*buf)[(*len)++] = (char)c;
        if (*len > MAX_LINE)
            too_long = 1;
    }
    if (!any)
        return 0;
    if (*len && (*buf)[*len - 1] == '\r')
        (*len)--;
    if (*buf)
        (*buf)[*len] = '\0';
    return too_long ? -1 : 1;
}

/* A JSON line's text and size (fields that are absent keep the defaults). */
static int json_line(const char *line, size_t len, json_t **doc, const char **text, size_t *tlen, int *w, int *h,
                     pf_err *err)
{
    json_error_t je;
    *doc = json_loadb(line, len, JSON_DECODE_ANY, &je);
    if (!*doc)
        return pf_errf(err, "not JSON: %s (column %d)", je.text, je.column);
    if (json_is_string(*doc)) {
        *text = json_string_value(*doc);
        *tlen = json_string_length(*doc);
        return 0;
    }
    json_t *t = json_object_get(*doc, "text");
    if (!json_is_string(t))
        return pf_errf(err, "a JSON line must be a string or an object with a string \"text\"");
    *text = json_string_value(t);
    *tlen = json_string_length(t);
    json_t *img = json_object_get(*doc, "image"), *src = json_is_object(img) ? img : *doc;
    json_t *jw = json_object_get(src, "width"), *jh = json_object_get(src, "height");
    if (jw || jh) {
        if (!json_is_integer(jw) || !json_is_integer(jh) || json_integer_value(jw) < 1 ||
            json_integer_value(jw) > 65536 || json_integer_value(jh) < 1 || json_integer_value(jh) > 65536)
            return pf_errf(err, "\"width\" and \"height\" must both be integers in 1..65536");
        *w = (int)json_integer_value(jw);
        *h = (int)json_integer_value(jh);
    }
    return 0;
}

int cmd_decode_answer(int argc, char **argv)
{
    decode_cli o;
    decode_init(&o);
    int pr = pf_opt_parse(&g_cmd, &o, argc, argv, NULL, 0);
    if (pr)
        return pr == 1 ? 0 : 2;
    const char *seg_path = o.seg_path;
    int width = o.width, height = o.height;
    if ((width > 0) != (height > 0)) {
        fprintf(stderr, "paliflow decode-answer: give both --width and --height\n");
        return 2;
    }
    pf_seg_decoder *seg = NULL;
    pf_err err;
    if (seg_path && pf_seg_decoder_load(seg_path, &seg, &err)) {
        fprintf(stderr, "paliflow decode-answer: --seg-decoder: %s\n", err.msg);
        return 2;
    }
    char *line = NULL;
    size_t cap = 0, len;
    int r, rc = 0;
    long lineno = 0;
    while ((r = read_line(stdin, &line, &cap, &len)) != 0) {
        lineno++;
        json_t *out = json_object(), *doc = NULL;
        const char *text = line;
        size_t tlen = len;
        int w = width, h = height;
        pf_err e = {{0}};
        if (r == -2) {
            fprintf(stderr, "paliflow decode-answer: out of memory\n");
            rc = 2;
            json_decref(out);
            break;
        }
        if (r == -1)
            pf_errf(&e, "line %ld: longer than %u bytes", lineno, MAX_LINE);
        else if (len && (line[0] == '{' || line[0] == '"') &&
                 json_line(line, len, &doc, &text, &tlen, &w, &h, &e))
            pf_err_prefix(&e, "line %ld", lineno);
        else if (w < 1 || h < 1)
            pf_errf(&e, "line %ld: no image size: give --width and --height", lineno);
        if (!e.msg[0]) {
            json_t *objs = pf_seg_objects_json(text, tlen, w, h, seg, NULL, &e);
            if (objs) {
                json_object_set_new(out, "objects", objs);
                int missing = 0;
                for (size_t i = 0; i < json_array_size(objs); i++)
                    missing |= json_is_null(json_object_get(json_array_get(objs, i), "mask"));
                if (missing)
                    json_object_set_new(out, "note", json_string(PF_SEG_NO_DECODER_NOTE));
            } else {
                pf_err_prefix(&e, "line %ld", lineno);
            }
        }
        if (e.msg[0]) {
            json_object_clear(out);
            json_t *msg = json_string(e.msg);
            json_object_set_new(out, "error", msg ? msg : json_string("(reason not UTF-8)"));
            fprintf(stderr, "paliflow decode-answer: %s\n", e.msg);
            rc = 1;
        }
        char *s = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (s)
            puts(s);
        free(s);
        json_decref(out);
        json_decref(doc);
    }
    free(line);
    pf_seg_decoder_free(seg);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "paliflow decode-answer: writing stdout failed\n");
        return 2;
    }
    return rc;
}
