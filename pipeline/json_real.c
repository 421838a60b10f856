/* json_real.c - see json_real.h. */
#include "pipeline/json_real.h"

#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef unsigned __int128 u128;

/* jansson's jsonp_dtostr after its snprintf: the locale's decimal point back to '.', ".0" appended when the
 * number would read back as an integer, the exponent without its '+' and leading zeros. */
static size_t jansson_cleanup(char *buf, size_t len)
{
    const char *point = localeconv()->decimal_point;
    char *pos = *point != '.' ? strchr(buf, *point) : NULL;
    if (pos)
        *pos = '.';
    if (!strchr(buf, '.') && !strchr(buf, 'e')) {
        memcpy(buf + len, ".0", 3);
        len += 2;
    }
    char *start = strchr(buf, 'e');
    if (start) {
        start++;
        char *end = start + 1;
        if (*start == '-')
            start++;
        while (*end == '0')
            end++;
        if (end != start) {
            memmove(start, end, len - (size_t)(end - buf) + 1);   /* with the NUL */
            len -= (size_t)(end - start);
        }
    }
    return len;
}

size_t pf_json_real_slow(double v, char out[PF_JSON_REAL_MAX])
{
    int n = snprintf(out, PF_JSON_REAL_MAX - 3, "%.17g", v);   /* room for the ".0" */
    if (n < 0 || n >= PF_JSON_REAL_MAX - 3) {   /* cannot happen for a double; a number either way */
        memcpy(out, "0.0", 4);
        return 3;
    }
    return jansson_cleanup(out, (size_t)n);
}

/* 5^0 .. 5^27: the largest powers of five below 2^64 */
static const uint64_t pow5[28] = {
    1ull, 5ull, 25ull, 125ull, 625ull, 3125ull, 15625ull, 78125ull, 390625ull, 1953125ull, 9765625ull,
    48828125ull, 244140625ull, 1220703125ull, 6103515625ull, 30517578125ull, 152587890625ull, 762939453125ull,
    3814697265625ull, 19073486328125ull, 95367431640625ull, 476837158203125ull, 2384185791015625ull,
    11920928955078125ull, 59604644775390625ull, 298023223876953125ull, 1490116119384765625ull,
    7450580596923828125ull};

/* M * 2^E * 10^P exactly in 128 bits: *FL its integer part, *Q rounded to an integer, ties to even (what
 * glibc's printf does in the default rounding mode). -1 when that does not fit (the caller falls back to
 * snprintf). */
static int scaled(uint64_t m, int e, int p, uint64_t *fl, uint64_t *q)
{
    u128 r, f;
    if (p >= 0) {
        if (p > 31)
            return -1;
        u128 n = (u128)m * pow5[p < 27 ? p : 27];   /* < 2^53 * 2^63 */
        if (p > 27)
            n *= pow5[p - 27];                      /* 5^31 < 2^72: n < 2^125 */
        int sh = e + p;                             /* 10^p = 5^p * 2^p */
        if (sh >= 0) {
            if (sh > 60 || (n >> (64 - sh)) != 0)
                return -1;
            r = f = n << sh;
        } else {
            int s = -sh;
            if (s > 126)
                return -1;
            r = f = n >> s;
            u128 rem = n & (((u128)1 << s) - 1), half = (u128)1 << (s - 1);
            if (rem > half || (rem == half && (r & 1)))
                r++;
        }
    } else {
        int j = -p;   /* divide by 10^j = 5^j * 2^j */
        if (j > 27 || e < 0 || e > 74)
            return -1;
        u128 num = (u128)m << e, den = (u128)pow5[j] << j;
        r = f = num / den;
        u128 rem = num % den;
        if (2 * rem > den || (2 * rem == den && (r & 1)))
            r++;
    }
    if (r >> 63)
        return -1;
    *q = (uint64_t)r;
    *fl = (uint64_t)f;
    return 0;
}

#define P16 10000000000000000ull    /* 17 significant digits: 10^16 <= q < 10^17 */
#define P17 100000000000000000ull

/* The 17 digits of Q (10^16 <= Q < 10^17) and exponent X, as "%.17g" prints them, cleaned up as jansson does. */
static size_t spell(char *o, uint64_t q, int x)
{
    static const char pairs[201] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                   "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                   "8081828384858687888990919293949596979899";
    char d[17];
    for (int i = 15; i >= 1; i -= 2) {   /* two digits a division */
        memcpy(d + i, pairs + 2 * (q % 100), 2);
        q /= 100;
    }
    d[0] = (char)('0' + q);
    int nd = 17;   /* significant digits left after %g drops the trailing zeros */
    while (nd > 1 && d[nd - 1] == '0')
        nd--;
    char *s = o;
    if (x < -4 || x >= 17) {   /* d.ddd e[-]x: %g's exponent style, '+' and leading zeros dropped by jansson */
        *s++ = d[0];
        if (nd > 1) {
            *s++ = '.';
            memcpy(s, d + 1, (size_t)nd - 1);
            s += nd - 1;
        }
        *s++ = 'e';
        if (x < 0)
            *s++ = '-';
        unsigned ax = (unsigned)(x < 0 ? -x : x);
        char t[4];
        int nt = 0;
        do {
            t[nt++] = (char)('0' + ax % 10);
            ax /= 10;
        } while (ax);
        while (nt)
            *s++ = t[--nt];
    } else if (x >= 0) {   /* ddd.ddd, or ddd.0 (jansson's ".0" where %g printed an integer) */
        memcpy(s, d, (size_t)x + 1);
        s += x + 1;
        *s++ = '.';
        if (nd > x + 1) {
            memcpy(s, d + x + 1, (size_t)(nd - x - 1));
            s += nd - x - 1;
        } else {
            *s++ = '0';
        }
    } else {   /* 0.000ddd */
        *s++ = '0';
        *s++ = '.';
        for (int i = 0; i < -x - 1; i++)
            *s++ = '0';
        memcpy(s, d, (size_t)nd);
        s += nd;
    }
    *s = '\0';
    return (size_t)(s - o);
}

size_t pf_json_real(double v, char out[PF_JSON_REAL_MAX])
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    int bexp = (int)(bits >> 52 & 0x7ff);
    uint64_t frac = bits & ((1ull << 52) - 1);
    if (bexp == 0x7ff || bexp == 0)   /* not finite (never asked), zero, subnormal */
        return pf_json_real_slow(v, out);
    uint64_t m = frac | 1ull << 52;   /* v = +-m * 2^e */
    int e = bexp - 1075;
    double a = fabs(v);
    if (!(a >= 1e-15 && a < 1e38))
        return pf_json_real_slow(v, out);
    /* X: the exponent of the first digit, 10^X <= a < 10^(X+1), i.e. the integer part of a * 10^(16-X) has 17
     * digits. With 2^e2 <= a < 2^(e2+1), X is floor(e2 * log10(2)) or one more; the product's error (below
     * 1e-6 here) is far smaller than the distance of e2 * log10(2) to an integer (4e-4 at least for
     * |e2| < 1100), so the estimate is exact, and the loop moves it up when needed. */
    int e2 = bexp - 1023;
    int x = (int)(((int64_t)e2 * 1292913986) >> 32);   /* log10(2) * 2^32 rounded down; >> floors */
    for (int tries = 0; tries < 4; tries++) {
        uint64_t fl, q;
        if (scaled(m, e, 16 - x, &fl, &q))
            break;
        if (fl >= P17)
            x++;
        else if (fl < P16)
            x--;
        else {
            if (q == P17) {   /* 9.99..95 rounds up to the next power of ten: printf's exponent grows too */
                q = P16;
                x++;
            }
            char *o = out;
            if (bits >> 63)
                *o++ = '-';
            return (size_t)(o - out) + spell(o, q, x);
        }
    }
    return pf_json_real_slow(v, out);
}
