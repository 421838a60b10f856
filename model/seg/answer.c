/* answer.c - see answer.h. */
#include "model/seg/answer.h"

#include <stdlib.h>
#include <string.h>

#include "base/grow.h"

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_space(char c)   /* Python's \s and str.strip() on ASCII */
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* "<TAG" + NDIG digits + ">" at P (END bounds the text); the value in *v. */
static int token_at(const char *p, const char *end, const char *tag, int ndig, int *v)
{
    size_t tl = strlen(tag), need = tl + (size_t)ndig + 1;
    if ((size_t)(end - p) < need || memcmp(p, tag, tl) != 0 || p[tl + (size_t)ndig] != '>')
        return 0;
    int x = 0;
    for (int i = 0; i < ndig; i++) {
        if (!is_digit(p[tl + (size_t)i]))
            return 0;
        x = x * 10 + (p[tl + (size_t)i] - '0');
    }
    *v = x;
    return 1;
}

#define LOC_LEN 9   /* "<loc0123>" */
#define SEG_LEN 8   /* "<seg012>" */

static int four_locs(const char *p, const char *end, int loc[4])
{
    for (int k = 0; k < 4; k++)
        if (!token_at(p + LOC_LEN * k, end, "<loc", 4, &loc[k]))
            return 0;
    return 1;
}

int pf_seg_answer_parse(const char *text, size_t len, pf_seg_object **out, size_t *n, pf_err *err)
{
    *out = NULL;
    *n = 0;
    size_t cap = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        int loc[4];
        /* (.*?): the first position from P where four locs start. */
        const char *q = p;
        while (q < end && !(*q == '<' && four_locs(q, end, loc)))
            q++;
        if (q >= end)
            break;
        const char *r = q + 4 * LOC_LEN;
        while (r < end && is_space(*r))
            r++;
        pf_seg_object o;
        memset(&o, 0, sizeof o);
        memcpy(o.loc, loc, sizeof loc);
        int k = 0;
        while (k < 16 && token_at(r + SEG_LEN * k, end, "<seg", 3, &o.codes[k]))
            k++;
        if (k == 16) {
            o.has_codes = 1;
            r += 16 * SEG_LEN;
            while (r < end && is_space(*r))
                r++;
        } else {
            memset(o.codes, 0, sizeof o.codes);
        }
        const char *lab = r;
        while (r < end && *r != ';' && *r != '<' && *r != '>')
            r++;
        const char *lab_end = r;
        while (lab < lab_end && is_space(*lab))
            lab++;
        while (lab_end > lab && is_space(lab_end[-1]))
            lab_end--;
        p = r;   /* the rest of the regex (' ?(?:; )?') only consumes what the next (.*?) would skip */
        o.box_valid = loc[0] <= 1023 && loc[1] <= 1023 && loc[2] <= 1023 && loc[3] <= 1023 && loc[2] > loc[0] &&
                      loc[3] > loc[1];
        o.tokens_valid = o.box_valid && o.has_codes;
        for (int i = 0; o.tokens_valid && i < 16; i++)
            o.tokens_valid = o.codes[i] <= 127;
        if (PF_GROW(*out, cap, *n, 1, 4))
            goto oom;
        /* Labels are bytes of the answer; a NUL inside one ends it (labels are C strings downstream). */
        o.label = strndup(lab, (size_t)(lab_end - lab));
        if (!o.label)
            goto oom;
        (*out)[(*n)++] = o;
    }
    return 0;
oom:
    pf_seg_objects_free(*out, *n);
    *out = NULL;
    *n = 0;
    return pf_errf(err, "answer: out of memory");
}

void pf_seg_objects_free(pf_seg_object *objs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(objs[i].label);
    free(objs);
}
