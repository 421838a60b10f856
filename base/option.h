/* option.h - strict number parsing for option values and other untrusted text: the whole string, finite,
 * within [lo, hi] ("12x", "nan", "1e999" and out-of-range values are refused, never clamped). The option
 * tables (base/optable.h) parse every number through these. */
#ifndef PF_BASE_OPTION_H
#define PF_BASE_OPTION_H

/* 0 ok (*out set), -1 not a number in [lo, hi]. */
int pf_parse_int(const char *s, long long lo, long long hi, long long *out);
int pf_parse_double(const char *s, double lo, double hi, double *out);

#endif
