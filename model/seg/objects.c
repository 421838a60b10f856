/* objects.c - see objects.h. */
#include "model/seg/objects.h"

#include <string.h>

#include "model/seg/answer.h"
#include "model/seg/mask.h"

int pf_seg_prompt_is_segment(const char *prompt)
{
    /* Same rule as pf_task_is_detect: the task word, then the end or a space. */
    return prompt && !strncmp(prompt, "segment", 7) && (prompt[7] == '\0' || prompt[7] == ' ');
}

static json_t *rle_json(const pf_rle *r)
{
    json_t *counts = json_array();
    for (size_t i = 0; counts && i < r->n; i++)
        if (json_array_append_new(counts, json_integer((json_int_t)r->counts[i]))) {
            json_decref(counts);
            return NULL;
        }
    return counts ? json_pack("{s:[i,i], s:o}", "size", r->height, r->width, "counts", counts) : NULL;
}

json_t *pf_seg_objects_json(const char *text, size_t len, int width, int height, const pf_seg_decoder *dec,
                            int *masks_missing, pf_err *err)
{
    if (masks_missing)
        *masks_missing = 0;
    if (width < 1 || height < 1 || width > 65536 || height > 65536) {
        pf_errf(err, "objects: image size %dx%d out of range (1..65536)", width, height);
        return NULL;
    }
    pf_seg_object *o = NULL;
    size_t n = 0;
    if (pf_seg_answer_parse(text ? text : "", text ? len : 0, &o, &n, err))
        return NULL;
    json_t *arr = json_array();
    if (!arr)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        if (!o[i].box_valid)
            continue;
        const int *l = o[i].loc;
        json_t *label = json_string(o[i].label);
        if (!label)   /* not UTF-8: the raw text keeps it; the label gets the replacement character */
            label = json_string("\xef\xbf\xbd");
        json_t *j = json_pack("{s:o, s:[i,i,i,i], s:f, s:f, s:f, s:f}", "label", label, "loc", l[0], l[1], l[2], l[3],
                              "x0", l[1] / 1023.0 * width, "y0", l[0] / 1023.0 * height, "x1", l[3] / 1023.0 * width,
                              "y1", l[2] / 1023.0 * height);
        if (!j || json_array_append_new(arr, j))
            goto oom;
        if (!o[i].has_codes)
            continue;
        if (!dec) {
            json_object_set_new(j, "mask", json_null());
            if (masks_missing)
                *masks_missing = 1;
            continue;
        }
        pf_rle r;
        if (pf_seg_object_mask(dec, &o[i], width, height, &r, NULL, err)) {
            pf_err_prefix(err, "object %zu ('%s')", i, o[i].label);
            json_decref(arr);
            pf_seg_objects_free(o, n);
            return NULL;
        }
        json_t *m = rle_json(&r);
        pf_rle_free(&r);
        if (!m || json_object_set_new(j, "mask", m))
            goto oom;
    }
    pf_seg_objects_free(o, n);
    return arr;
oom:
    json_decref(arr);
    pf_seg_objects_free(o, n);
    pf_errf(err, "objects: out of memory");
    return NULL;
}

void pf_seg_record_objects(json_t *rec, const char *text, size_t len, int width, int height,
                           const pf_seg_decoder *dec, const char *made, size_t made_len)
{
    pf_err e = {{0}};
    json_t *objs = NULL;
    if (made) {
        json_error_t je;
        objs = json_loadb(made, made_len, 0, &je);
        if (!json_is_array(objs)) {
            json_decref(objs);
            objs = NULL;
            pf_errf(&e, "objects from the worker are not a JSON array (%s); masks left out", je.text);
        }
    }
    int missing = 0;
    if (!objs) {
        pf_err e2 = {{0}};
        objs = pf_seg_objects_json(text, len, width, height, made ? NULL : dec, &missing, &e2);
        if (!objs && !e.msg[0])
            e = e2;
    }
    json_object_set_new(rec, "objects", objs ? objs : json_array());
    if (e.msg[0])
        json_object_set_new(rec, "note", json_string(e.msg));
    else if (missing)
        json_object_set_new(rec, "note", json_string(PF_SEG_NO_DECODER_NOTE));
}
