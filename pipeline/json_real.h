/* json_real.h - a double as jansson 2.14 dumps it (json_dumps of json_real(v)), without snprintf.
 *
 * Why: the sink writes every record's timings (and a detect record's box corners) as JSON reals, and the
 * output's bytes must not change when it stops building the record with jansson (record_line.h). jansson
 * prints "%.17g" (correctly rounded, ties to even) in the C locale's spelling, then appends ".0" to a number
 * with neither '.' nor 'e' and drops the '+' and leading zeros of the exponent: 0.1 is
 * "0.10000000000000001", 1 is "1.0", 1e-8 is "1e-8", -0 is "-0.0". glibc's snprintf takes ~0.5 µs for
 * that; the exact integer arithmetic here takes a few tens of ns for the values records hold (1e-15 to
 * 2^127), and falls back to snprintf outside that range.
 */
#ifndef PF_PIPELINE_JSON_REAL_H
#define PF_PIPELINE_JSON_REAL_H

#include <stddef.h>

#define PF_JSON_REAL_MAX 32   /* the longest spelling ("-2.2250738585072014e-308") and its NUL fit */

/* V (finite) spelled as jansson dumps it into OUT (NUL-terminated): its length. */
size_t pf_json_real(double v, char out[PF_JSON_REAL_MAX]);

/* The same through snprintf("%.17g") and jansson's clean-up: the reference the fast path is tested against
 * (tests/pipeline/test_record_line.c), and the fallback for values outside its range. */
size_t pf_json_real_slow(double v, char out[PF_JSON_REAL_MAX]);

#endif
