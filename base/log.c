#include "base/log.h"

#include <pthread.h>
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

/* Format one line (header + message + suffix) and write it with one fputs, so that lines from different
 * threads never interleave. A message too long for the line is cut and marked; the newline is always
 * there (a line without one glues the next line to it in every log collector). */
static void emit(pf_log_level level, const char *component, const char *suffix, const char *fmt, va_list ap)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char line[PF_LOG_LINE_MAX];
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ paliflow[%d] %s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)(tv.tv_usec / 1000), (int)getpid(), g_names[level], component ? component : "-");
    if (n < 0 || (size_t)n >= sizeof line)
        n = 0;
    size_t slen = suffix ? strlen(suffix) : 0;
    /* room for the suffix, the cut mark and "\n\0" is kept free while the message is formatted */
    size_t reserve = slen + sizeof PF_LOG_CUT_MARK + 1;
    size_t room = sizeof line - (size_t)n > reserve ? sizeof line - (size_t)n - reserve : 1;
    int m = vsnprintf(line + n, room, fmt, ap);
    size_t len = strlen(line);
    /* One message, one line: a control byte in it (a file named "a\nWARN ...", a worker's message) would start
     * a forged line in every log collector or move the terminal's cursor. Shown as '?', as ls -q does; the
     * records keep the exact names. A tab stays. */
    for (size_t i = (size_t)n; i < len; i++)
        if (((unsigned char)line[i] < 0x20 && line[i] != '\t') || line[i] == 0x7f)
            line[i] = '?';
    if (m >= 0 && (size_t)m >= room) {
        memcpy(line + len, PF_LOG_CUT_MARK, sizeof PF_LOG_CUT_MARK - 1);
        len += sizeof PF_LOG_CUT_MARK - 1;
    }
    if (slen && len + slen + 2 <= sizeof line) {
        memcpy(line + len, suffix, slen);
        len += slen;
    }
    line[len] = '\n';
    line[len + 1] = '\0';
    void (*writer)(const char *) = atomic_load(&g_writer);
    if (writer)
        writer(line);
    else
        fputs(line, stderr);
}

void pf_log_always(pf_log_level level, const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(level, component, NULL, fmt, ap);
    va_end(ap);
}

void pf_log(pf_log_level level, const char *component, const char *fmt, ...)
{
    if ((int)level > atomic_load(&g_level))
        return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, component, NULL, fmt, ap);
    va_end(ap);
}

static pthread_mutex_t g_limit_mu = PTHREAD_MUTEX_INITIALIZER;

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t key_hash(const char *key)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a; 0 is kept for "free" */
    for (const unsigned char *p = (const unsigned char *)(key ? key : ""); *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h ? h : 1;
}

/* Refill B (RATE tokens a second, at most CAP) up to NOW. */
static void refill(pf_log_limit_slot *b, double now, double rate, double cap)
{
    if (b->last == 0)
        b->tokens = cap;
    else
        b->tokens += (now - b->last) * rate;
    if (b->tokens > cap)
        b->tokens = cap;
    b->last = now;
}

/* The summary a line that gets through carries: what S (the key's slot) and the site suppressed since they last
 * said so, " [N similar messages suppressed in the last S s; M from other senders suppressed]", or "". Resets both
 * counts. Called with g_limit_mu held. */
static void take_summary(pf_log_limit *lim, pf_log_limit_slot *s, double now, char *suffix, size_t size)
{
    int k = 0;
    suffix[0] = '\0';
    if (s && s->suppressed)
        k = snprintf(suffix, size, " [%lld similar messages suppressed in the last %.0f s", s->suppressed,
                     now - s->since < 1 ? 1 : now - s->since);
    if (lim->site.suppressed && k >= 0 && (size_t)k < size)
        k += snprintf(suffix + k, size - (size_t)k, "%s%lld from other senders suppressed", k ? "; " : " [",
                      lim->site.suppressed);
    if (k > 0 && (size_t)k < size - 1)
        snprintf(suffix + k, size - (size_t)k, "]");
    if (s)
        s->suppressed = 0;
    lim->site.suppressed = 0;
}

int pf_log_limited(pf_log_limit *lim, const char *key, pf_log_level level, const char *component, const char *fmt,
                   ...)
{
    if ((int)level > atomic_load(&g_level))
        return 0;
    uint64_t h = key_hash(key);
    double now = mono_now();
    char suffix[160] = "";
    pthread_mutex_lock(&g_limit_mu);
    pf_log_limit_slot *s = NULL, *victim = &lim->slot[0];
    for (int i = 0; i < PF_LOG_LIMIT_KEYS && !s; i++) {
        pf_log_limit_slot *c = &lim->slot[i];
        if (c->key == h)
            s = c;
        else if (victim->key && (c->key == 0 || c->last < victim->last))
            victim = c; /* a free slot, else the least recently used */
    }
    if (!s) {
        s = victim;
        if (s->key && s->suppressed) { /* its count is not lost: reported with the site's next line */
            if (lim->site.suppressed == 0)
                lim->site.since = s->since;
            lim->site.suppressed += s->suppressed;
        }
        *s = (pf_log_limit_slot){.key = h};
    }
    refill(s, now, PF_LOG_LIMIT_PER_S, PF_LOG_LIMIT_BURST);
    refill(&lim->site, now, PF_LOG_LIMIT_PER_S * PF_LOG_LIMIT_SITE_FACTOR,
           (double)PF_LOG_LIMIT_BURST * PF_LOG_LIMIT_SITE_FACTOR);
    int pass = s->tokens >= 1.0 && lim->site.tokens >= 1.0;
    if (pass) {
        s->tokens -= 1.0;
        lim->site.tokens -= 1.0;
        take_summary(lim, s, now, suffix, sizeof suffix);
    } else if (s->suppressed++ == 0) {
        s->since = now;
    }
    pthread_mutex_unlock(&g_limit_mu);
    if (!pass)
        return 0;
    va_list ap;
    va_start(ap, fmt);
    emit(level, component, suffix[0] ? suffix : NULL, fmt, ap);
    va_end(ap);
    return 1;
}

int pf_log_limit_flush(pf_log_limit *lim, pf_log_level level, const char *component, const char *what)
{
    if ((int)level > atomic_load(&g_level))
        return 0;
    /* Summaries are taken under the lock and written after it (emit may call the progress bar's writer). */
    char lines[PF_LOG_LIMIT_KEYS + 1][160];
    int n = 0;
    double now = mono_now();
    pthread_mutex_lock(&g_limit_mu);
    refill(&lim->site, now, PF_LOG_LIMIT_PER_S * PF_LOG_LIMIT_SITE_FACTOR,
           (double)PF_LOG_LIMIT_BURST * PF_LOG_LIMIT_SITE_FACTOR);
    for (int i = 0; i < PF_LOG_LIMIT_KEYS && lim->site.tokens >= 1.0; i++) {
        pf_log_limit_slot *s = &lim->slot[i];
        if (!s->key || !s->suppressed)
            continue;
        refill(s, now, PF_LOG_LIMIT_PER_S, PF_LOG_LIMIT_BURST);
        if (s->tokens < 1.0)   /* the flood from this key goes on: its next line will say it */
            continue;
        s->tokens -= 1.0;
        lim->site.tokens -= 1.0;
        take_summary(lim, s, now, lines[n++], sizeof lines[0]);
    }
    if (lim->site.suppressed && lim->site.tokens >= 1.0) {   /* evicted keys' counts, when no key line took them */
        lim->site.tokens -= 1.0;
        take_summary(lim, NULL, now, lines[n++], sizeof lines[0]);
    }
    pthread_mutex_unlock(&g_limit_mu);
    for (int i = 0; i < n; i++)
        pf_log_always(level, component, "%s%s", what, lines[i]);
    return n;
}
