/* archive_name.c - what names mean inside and around shards: which files are shards, "SHARD#MEMBER"
 * references, WebDataset keys, image extensions, and which member names are refused. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "pipeline/archive/archive_internal.h"

static int ends_with_ci(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && strncasecmp(s + n - k, suffix, k) == 0;
}

/* The name before N bytes of S (the part after the last '/') is a shard name. */
static int is_shard_prefix(const char *s, size_t n)
{
    static const char *const ext[] = {".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz",
                                      ".txz", ".tar.zst", ".tzst", ".zip"};
    size_t base = n;
    while (base > 0 && s[base - 1] != '/')
        base--;
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (n - base > strlen(ext[i]) && ends_with_ci(s, n, ext[i]))   /* ".tar" alone is a hidden file */
            return 1;
    return 0;
}

int pf_archive_is_shard_name(const char *path)
{
    return path && is_shard_prefix(path, strlen(path));
}

int pf_archive_split_ref(const char *ref, size_t *shard_len)
{
    for (const char *h = strchr(ref, '#'); h; h = strchr(h + 1, '#'))
        if (h[1] && is_shard_prefix(ref, (size_t)(h - ref))) {
            *shard_len = (size_t)(h - ref);
            return 1;
        }
    return 0;
}

/* Length of the UTF-8 sequence at S (at most N bytes), 0 when it is not well-formed (overlong forms,
 * surrogates and code points past U+10FFFF included: jansson refuses those in JSON strings too). */
size_t pf_arc_utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (k == 0 || k > n)
        return 0;
    unsigned cp = k == 1 ? c : k == 2 ? c & 0x1F : k == 3 ? c & 0x0F : c & 0x07;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    static const unsigned min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return k;
}

int pf_archive_check_name(const char *name, char *why, size_t why_cap)
{
    size_t n = strlen(name);
    const char *r = NULL;
    if (n == 0)
        r = "empty member name";
    else if (n > PF_ARCHIVE_MAX_NAME)
        r = "member name longer than 4096 bytes";
    else if (name[0] == '/')
        r = "absolute member name (would write outside the shard's folder)";
    else if (strchr(name, '\\'))
        r = "backslash in the member name (a Windows path: may climb out of the shard's folder)";
    else if (n >= 2 && name[1] == ':')
        r = "drive letter in the member name (a Windows absolute path)";
    for (size_t i = 0; !r && i < n;) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f) {
            r = "control character in the member name";
            break;
        }
        size_t k = pf_arc_utf8_len((const unsigned char *)name + i, n - i);
        if (!k)
            r = "member name is not UTF-8";
        i += k ? k : 1;
    }
    /* ".." as a whole component climbs out of wherever the member would be written */
    for (const char *s = name; !r && *s;) {
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 2 && s[0] == '.' && s[1] == '.')
            r = "'..' in the member name (path traversal)";
        s += len + (e ? 1 : 0);
    }
    if (!r)
        return 0;
    snprintf(why, why_cap, "%s", r);
    return -1;
}

const char *pf_archive_wds_key(const char *name, size_t *key_len)
{
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    if (base[0] == '.' || base[0] == '\0')   /* WebDataset's [^.]+ needs one character before the dot */
        return NULL;
    const char *dot = strchr(base, '.');
    if (!dot)
        return NULL;
    *key_len = (size_t)(dot - name);
    return dot + 1;
}

int pf_archive_is_image_name(const char *name)
{
    static const char *const ext[] = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm",
                                      "pgm", "pbm", "pnm", "heic", "heif", "avif", "jxl"};
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base)
        return 0;
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (!strcasecmp(dot + 1, ext[i]))
            return 1;
    return 0;
}
