/* log.h - leveled logging to stderr, safe from any thread.
 *
 * Lines look like "2026-11-27T16:45:13.123Z paliflow[1234] WARN producer: message".
 * The level comes from --log-level or PALIFLOW_LOG (error|warn|info|debug); default info.
 */
#ifndef PF_BASE_LOG_H
#define PF_BASE_LOG_H

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
