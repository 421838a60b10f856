#include "pipeline/boxes.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* "<locDDDD>" with exactly four digits and a value the vocabulary has (0..1023). */
static int loc_at(const char *p, int *val)
{
    if (strncmp(p, "<loc", 4) != 0)
        return 0;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        if (!isdigit((unsigned char)p[4 + i]))
            return 0;
        v = v * 10 + (p[4 + i] - '0');
    }
    if (p[8] != '>' || v > 1023)
        return 0;
    *val = v;
    return 1;
}

static int seg_at(const char *p)
{
    if (strncmp(p, "<seg", 4) != 0)
        return 0;
    for (int i = 0; i < 3; i++)
        if (!isdigit((unsigned char)p[4 + i]))
            return 0;
    return p[7] == '>';
}

int pf_boxes_parse(const char *text, int width, int height, pf_box **out, size_t *n, pf_err *err)
{
    *out = NULL;
    *n = 0;
    size_t cap = 0;
    const char *p = text;
    while (p && *p) {
        const char *q = strstr(p, "<loc");
        if (!q)
            break;
        int loc[4], k = 0;
        while (k < 4 && loc_at(q + 9 * k, &loc[k]))
            k++;
        if (k < 4) {               /* truncated or malformed run: skip past what was read */
            p = q + (k ? 9 * k : 4);
            continue;
        }
        const char *r = q + 36;
        while (isspace((unsigned char)*r))
            r++;
        int segs = 0;
        while (segs < 16 && seg_at(r + 8 * segs))
            segs++;
        if (segs == 16) {
            r += 8 * 16;
            while (isspace((unsigned char)*r))
                r++;
        }
        const char *lab = r;
        while (*r && *r != ';' && *r != '<' && *r != '>')
            r++;
        const char *lab_end = r;
        while (lab_end > lab && isspace((unsigned char)lab_end[-1]))
            lab_end--;
        if (*r == ';') {
            r++;
            while (*r == ' ')
                r++;
        }
        p = r;
        if (loc[2] <= loc[0] || loc[3] <= loc[1])
            continue;
        if (*n == cap) {
            size_t nc = cap ? 2 * cap : 4;
            pf_box *nb = realloc(*out, nc * sizeof *nb);
            if (!nb)
                goto oom;
            *out = nb;
            cap = nc;
        }
        pf_box *b = &(*out)[*n];
        b->label = strndup(lab, (size_t)(lab_end - lab));
        if (!b->label)
            goto oom;
        memcpy(b->loc, loc, sizeof loc);
        b->y0 = loc[0] / 1023.0 * height;
        b->x0 = loc[1] / 1023.0 * width;
        b->y1 = loc[2] / 1023.0 * height;
        b->x1 = loc[3] / 1023.0 * width;
        (*n)++;
    }
    return 0;
oom:
    pf_boxes_free(*out, *n);
    *out = NULL;
    *n = 0;
    return pf_errf(err, "boxes: out of memory");
}

void pf_boxes_free(pf_box *boxes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(boxes[i].label);
    free(boxes);
}
