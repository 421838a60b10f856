/* mpcheck.c - a bounded walk over raw msgpack bytes, run before msgpack-c sees them.
 *
 * msgpack-c's unpacker allocates `declared count * sizeof(msgpack_object)` for an array or map as soon as
 * it reads the header, so five hostile bytes (0xdd ff ff ff ff) ask for ~100 GB. This walker reads only
 * headers, never allocates, and checks every declared size against the bytes that remain (an element
 * takes at least one byte, a map pair two) and against the limits. Iterative (explicit stack), so depth
 * costs no C stack.
 */
#include "proto/proto.h"

#include <string.h>

_Static_assert(offsetof(pf_proto_limits, max_msg_bytes) == 0, "PF_PROTO_LIMITS_OPT_ROW stores the first member");

int pf_proto_limits_opt_hook(const pf_opt *opt, void *lim, const char *val, pf_err *err)
{
    (void)opt, (void)val, (void)err;
    pf_proto_limits *l = lim;
    l->max_bin = l->max_msg_bytes;
    return 0;
}

pf_proto_limits pf_proto_default_limits(void)
{
    pf_proto_limits l = {
        .max_msg_bytes = 64u << 20,
        .max_depth = 8,
        .max_container = 65536,
        .max_objects = 262144,
        .max_str = 1u << 20,
        .max_bin = 64u << 20,
    };
    return l;
}

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

#define PF_MP_MAX_DEPTH 64

int pf_mp_validate(const uint8_t *buf, size_t len, const pf_proto_limits *lim, pf_err *err)
{
    if (!buf && len)
        return pf_errf(err, "msgpack: no buffer");
    if (len == 0)
        return pf_errf(err, "msgpack: empty message");
    if (len > lim->max_msg_bytes)
        return pf_errf(err, "msgpack: message of %zu bytes exceeds the limit %zu", len, lim->max_msg_bytes);
    uint32_t max_depth = lim->max_depth < PF_MP_MAX_DEPTH ? lim->max_depth : PF_MP_MAX_DEPTH;
    uint64_t remaining[PF_MP_MAX_DEPTH + 1];   /* objects still expected at each open level */
    int depth = 0;
    remaining[0] = 1;
    size_t pos = 0;
    uint64_t objects = 0;
    while (depth >= 0) {
        if (remaining[depth] == 0) {
            depth--;
            continue;
        }
        remaining[depth]--;
        if (pos >= len)
            return pf_errf(err, "msgpack: truncated at byte %zu (an object is missing)", pos);
        if (++objects > lim->max_objects)
            return pf_errf(err, "msgpack: more than %u objects", lim->max_objects);
        uint8_t b = buf[pos++];
        size_t avail = len - pos;
        uint64_t n = 0;     /* payload bytes to skip, or container count */
        int hdr = 0;        /* length-field bytes */
        enum { SCALAR, STR, BIN, ARRAY, MAP } kind = SCALAR;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            n = 0;
        } else if (b >= 0xa0 && b <= 0xbf) {
            kind = STR;
            n = b & 0x1f;
        } else if (b >= 0x90 && b <= 0x9f) {
            kind = ARRAY;
            n = b & 0x0f;
        } else if (b >= 0x80 && b <= 0x8f) {
            kind = MAP;
            n = b & 0x0f;
        } else {
            switch (b) {
            case 0xcc: case 0xd0: n = 1; break;
            case 0xcd: case 0xd1: n = 2; break;
            case 0xca: case 0xce: case 0xd2: n = 4; break;
            case 0xcb: case 0xcf: case 0xd3: n = 8; break;
            case 0xd9: kind = STR; hdr = 1; break;
            case 0xda: kind = STR; hdr = 2; break;
            case 0xdb: kind = STR; hdr = 4; break;
            case 0xc4: kind = BIN; hdr = 1; break;
            case 0xc5: kind = BIN; hdr = 2; break;
            case 0xc6: kind = BIN; hdr = 4; break;
            case 0xdc: kind = ARRAY; hdr = 2; break;
            case 0xdd: kind = ARRAY; hdr = 4; break;
            case 0xde: kind = MAP; hdr = 2; break;
            case 0xdf: kind = MAP; hdr = 4; break;
            default:   /* 0xc1 (never used), ext and fixext: not part of our protocol */
                return pf_errf(err, "msgpack: byte %zu: type 0x%02x is not allowed", pos - 1, b);
            }
        }
        if (hdr) {
            if (avail < (size_t)hdr)
                return pf_errf(err, "msgpack: byte %zu: truncated length field", pos - 1);
            n = be(buf + pos, hdr);
            pos += (size_t)hdr;
            avail -= (size_t)hdr;
        }
        switch (kind) {
        case SCALAR:
            if (avail < n)
                return pf_errf(err, "msgpack: byte %zu: truncated number", pos - 1);
            pos += n;
            break;
        case STR:
        case BIN:
            if (kind == STR && n > lim->max_str)
                return pf_errf(err, "msgpack: str of %llu bytes exceeds the limit %u", (unsigned long long)n,
                               lim->max_str);
            if (kind == BIN && n > lim->max_bin)
                return pf_errf(err, "msgpack: bin of %llu bytes exceeds the limit %zu", (unsigned long long)n,
                               lim->max_bin);
            if (n > avail)
                return pf_errf(err, "msgpack: %s declares %llu bytes but only %zu remain", kind == STR ? "str" : "bin",
                               (unsigned long long)n, avail);
            pos += n;
            break;
        case ARRAY:
        case MAP: {
            if (n > lim->max_container)
                return pf_errf(err, "msgpack: %s of %llu entries exceeds the limit %u", kind == MAP ? "map" : "array",
                               (unsigned long long)n, lim->max_container);
            uint64_t elems = kind == MAP ? 2 * n : n;
            if (elems > avail)   /* every element takes at least one byte */
                return pf_errf(err, "msgpack: %s declares %llu entries but only %zu bytes remain",
                               kind == MAP ? "map" : "array", (unsigned long long)n, avail);
            if ((uint32_t)depth + 1 > max_depth)
                return pf_errf(err, "msgpack: nesting deeper than %u", max_depth);
            remaining[++depth] = elems;
            break;
        }
        }
    }
    if (pos != len)
        return pf_errf(err, "msgpack: %zu trailing bytes after the message", len - pos);
    return 0;
}
