/* boxes.c - see boxes.h. The text grammar is model/seg/answer.h's (the one segment answers use too), so
 * detect boxes and segment objects split an answer the same way. */
#include "model/seg/boxes.h"

#include <stdlib.h>
#include <string.h>

#include "model/seg/answer.h"

int pf_boxes_parse(const char *text, int width, int height, pf_box **out, size_t *n, pf_err *err)
{
    *out = NULL;
    *n = 0;
    pf_seg_object *o = NULL;
    size_t no = 0;
    if (pf_seg_answer_parse(text ? text : "", text ? strlen(text) : 0, &o, &no, err))
        return -1;
    size_t nv = 0;
    for (size_t i = 0; i < no; i++)
        nv += o[i].box_valid != 0;
    pf_box *b = calloc(nv ? nv : 1, sizeof *b);
    if (!b) {
        pf_seg_objects_free(o, no);
        return pf_errf(err, "boxes: out of memory");
    }
    for (size_t i = 0; i < no; i++) {
        if (!o[i].box_valid)
            continue;
        pf_box *x = &b[(*n)++];
        x->label = o[i].label;   /* moved */
        o[i].label = NULL;
        memcpy(x->loc, o[i].loc, sizeof x->loc);
        x->y0 = x->loc[0] / 1023.0 * height;
        x->x0 = x->loc[1] / 1023.0 * width;
        x->y1 = x->loc[2] / 1023.0 * height;
        x->x1 = x->loc[3] / 1023.0 * width;
    }
    pf_seg_objects_free(o, no);
    *out = b;
    return 0;
}

void pf_boxes_free(pf_box *boxes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(boxes[i].label);
    free(boxes);
}
