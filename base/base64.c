/* base64.c - see base64.h. */
#include "base/base64.h"

#include <stdlib.h>
#include <string.h>

static const char g_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *pf_b64_encode(const void *data, size_t len)
{
    if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
        return NULL;
    const uint8_t *p = data;
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    size_t k = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[k++] = g_alpha[v >> 18];
        out[k++] = g_alpha[(v >> 12) & 63];
        out[k++] = g_alpha[(v >> 6) & 63];
        out[k++] = g_alpha[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0);
        out[k++] = g_alpha[v >> 18];
        out[k++] = g_alpha[(v >> 12) & 63];
        out[k++] = i + 1 < len ? g_alpha[(v >> 6) & 63] : '=';
        out[k++] = '=';
    }
    out[k] = '\0';
    return out;
}

static int val(char c)
{
    const char *q = c ? strchr(g_alpha, c) : NULL;
    return q ? (int)(q - g_alpha) : -1;
}

int pf_b64_decode(const char *text, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    size_t n = strlen(text);
    if (n % 4)
        return -1;
    size_t pad = n && text[n - 1] == '=' ? (text[n - 2] == '=' ? 2 : 1) : 0;
    uint8_t *buf = malloc(n / 4 * 3 + 1);
    if (!buf)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i += 4) {
        int last = i + 4 == n;
        int a = val(text[i]), b = val(text[i + 1]);
        int c = last && pad == 2 ? 0 : val(text[i + 2]);
        int d = last && pad >= 1 ? 0 : val(text[i + 3]);
        if (a < 0 || b < 0 || c < 0 || d < 0)
            goto bad;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        /* canonical: the bits a padded group does not use must be zero */
        if (last && ((pad == 2 && (v & 0xffff)) || (pad == 1 && (v & 0xff))))
            goto bad;
        buf[k++] = (uint8_t)(v >> 16);
        if (!(last && pad == 2))
            buf[k++] = (uint8_t)(v >> 8);
        if (!(last && pad >= 1))
            buf[k++] = (uint8_t)v;
    }
    buf[k] = '\0';
    *out = buf;
    *len = k;
    return 0;
bad:
    free(buf);
    return -1;
}
