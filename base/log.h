/* log.h - leveled logging to stderr, safe from any thread.
 *
 * Lines look like "2026-11-27T16:45:13.123Z paliflow[1234] WARN producer: message".
 * The level comes from --log-level or PALIFLOW_LOG (error|warn|info|debug); default info.
 * Every line ends with a newline, however long the message (cut at PF_LOG_LINE_MAX bytes, marked), and holds
 * no other line break: control bytes in a message (a file name with a newline) are written as '?'.
 */
#ifndef PF_BASE_LOG_H
#define PF_BASE_LOG_H

#include <stdarg.h>
#include <stdint.h>

typedef enum { PF_LOG_ERROR = 0, PF_LOG_WARN = 1, PF_LOG_INFO = 2, PF_LOG_DEBUG = 3 } pf_log_level;

void pf_log_set_level(pf_log_level level);
pf_log_level pf_log_get_level(void);
/* Parse "error|warn|info|debug"; returns -1 if unknown. */
int pf_log_parse_level(const char *name, pf_log_level *out);
/* The --log-level option of command CMD: set the level, or print "paliflow CMD: --log-level: want
 * error|warn|info|debug, got 'VAL'" and return -1. */
int pf_log_level_option(const char *cmd, const char *val);
/* Read PALIFLOW_LOG if set. */
void pf_log_init_from_env(void);

void pf_log(pf_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- rate-limited logging ----
 * For messages an outsider can trigger at will (malformed frames, refused peers, bad requests): a token
 * bucket per call site and key (e.g. the peer's address), so that one flooding peer neither fills the disk
 * nor hides the messages about another. Each key may log PF_LOG_LIMIT_BURST lines at once, then one every
 * 1/PF_LOG_LIMIT_PER_S seconds; the call site as a whole PF_LOG_LIMIT_SITE_FACTOR times that (a flood from
 * many keys, e.g. reconnecting peers, stays bounded too). The rest are counted, and the next line that gets
 * through for that key ends with " [N similar messages suppressed in the last S s]" (plus the count of
 * keys pushed out of the site's PF_LOG_LIMIT_KEYS slots meanwhile, "; M from other senders").
 * Thread-safe. Use the macros: each expansion is its own call site (a static pf_log_limit):
 *     pf_warn_limited("producer", peer_addr, "bad message from %s: %s", peer_addr, why);
 * KEY may be NULL (one bucket for the call site). pf_log_limited returns 1 when the line was written, 0 when
 * it was counted. */
#define PF_LOG_LIMIT_BURST 10
#define PF_LOG_LIMIT_PER_S 1.0
#define PF_LOG_LIMIT_SITE_FACTOR 4
#define PF_LOG_LIMIT_KEYS 8

typedef struct pf_log_limit_slot {
    uint64_t key;        /* hash of the key (0: free) */
    double tokens, last; /* bucket level and when it was last refilled (monotonic seconds) */
    double since;        /* when the first suppressed line of the current run was counted */
    long long suppressed;
} pf_log_limit_slot;

typedef struct pf_log_limit {
    pf_log_limit_slot slot[PF_LOG_LIMIT_KEYS];
    pf_log_limit_slot site;  /* the call site's own bucket (its `suppressed`: counts of evicted keys) */
} pf_log_limit;

int pf_log_limited(pf_log_limit *lim, const char *key, pf_log_level level, const char *component, const char *fmt,
                   ...) __attribute__((format(printf, 5, 6)));

/* Say what LIM suppressed and has not said yet: one line "<component>: WHAT [N similar messages suppressed in
 * the last S s]" per key whose bucket has a token again (and one for keys pushed out of the slots). Without it
 * the count of a flood that stopped is never written: it only rides on the key's next line. Call it now and
 * then (a role's housekeeping tick). Returns the number of lines written. */
int pf_log_limit_flush(pf_log_limit *lim, pf_log_level level, const char *component, const char *what);

#define PF_LOG_LIMITED_(level, comp, key, ...)                                                                     \
    do {                                                                                                           \
        static pf_log_limit pf_lim_;                                                                               \
        pf_log_limited(&pf_lim_, key, level, comp, __VA_ARGS__);                                                   \
    } while (0)
#define pf_error_limited(comp, key, ...) PF_LOG_LIMITED_(PF_LOG_ERROR, comp, key, __VA_ARGS__)
#define pf_warn_limited(comp, key, ...) PF_LOG_LIMITED_(PF_LOG_WARN, comp, key, __VA_ARGS__)
#define pf_info_limited(comp, key, ...) PF_LOG_LIMITED_(PF_LOG_INFO, comp, key, __VA_ARGS__)

/* Longest line written (longer messages are cut, ending in PF_LOG_CUT_MARK; every line ends with '\n'). */
#define PF_LOG_LINE_MAX 2048
#define PF_LOG_CUT_MARK " [...cut]"

/* Where finished lines go instead of stderr: the progress bar's writer (pipeline/progress.c) erases the
 * bar, writes the line and draws the bar again, so log lines never print over it. NULL: plain stderr.
 * The writer must be safe from any thread and write LINE (newline included) exactly once. */
void pf_log_set_writer(void (*writer)(const char *line));
/* Like pf_log, but written whatever the level: output the user asked for (--progress lines). */
void pf_log_always(pf_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define pf_error(comp, ...) pf_log(PF_LOG_ERROR, comp, __VA_ARGS__)
#define pf_warn(comp, ...) pf_log(PF_LOG_WARN, comp, __VA_ARGS__)
#define pf_info(comp, ...) pf_log(PF_LOG_INFO, comp, __VA_ARGS__)
#define pf_debug(comp, ...) pf_log(PF_LOG_DEBUG, comp, __VA_ARGS__)

#endif
