#include "base/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static _Atomic int g_level = PF_LOG_INFO;
static void (*_Atomic g_writer)(const char *line);
static const char *const g_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void pf_log_set_level(pf_log_level level) { atomic_store(&g_level, (int)level); }
pf_log_level pf_log_get_level(void) { return (pf_log_level)atomic_load(&g_level); }

int pf_log_parse_level(const char *name, pf_log_level *out)
{
    static const char *const lower[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(name, lower[i]) == 0) {
            *out = (pf_log_level)i;
            return 0;
        }
    }
    return -1;
}

int pf_log_level_option(const char *cmd, const char *val)
{
    pf_log_level l;
    if (pf_log_parse_level(val, &l)) {
        fprintf(stderr, "paliflow %s: --log-level: want error|warn|info|debug, got '%s'\n", cmd, val);
        return -1;
    }
    pf_log_set_level(l);
    return 0;
}

void pf_log_init_from_env(void)
{
    const char *env = getenv("PALIFLOW_LOG");
    pf_log_level level;
    if (env && pf_log_parse_level(env, &level) == 0)
        pf_log_set_level(level);
}

void pf_log_set_writer(void (*writer)(const char *line)) { atomic_store(&g_writer, writer); }

static void vlog(pf_log_level level, const char *component, const char *fmt, va_list ap)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char line[2048];
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ paliflow[%d] %s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)(tv.tv_usec / 1000), (int)getpid(), g_names[level], component ? component : "-");
    if (n < 0 || (size_t)n >= sizeof line)
        n = 0;
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    /* One fputs per line so lines from different threads never interleave. */
    size_t len = strlen(line);
    if (len + 1 < sizeof line) {
        line[len] = '\n';
        line[len + 1] = '\0';
    }
    void (*writer)(const char *) = atomic_load(&g_writer);
    if (writer)
        writer(line);
    else
        fputs(line, stderr);
}

void pf_log(pf_log_level level, const char *component, const char *fmt, ...)
{
    if ((int)level > atomic_load(&g_level))
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, component, fmt, ap);
    va_end(ap);
}

void pf_log_always(pf_log_level level, const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, component, fmt, ap);
    va_end(ap);
}
