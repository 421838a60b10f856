#include "base/metrics.h"

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base/file.h"

enum { K_COUNTER, K_GAUGE, K_HISTOGRAM };

struct pf_metric {
    struct pf_metric *next;
    char *name, *labels, *help;
    int kind;
    double value;             /* counter, gauge */
    double *bounds;           /* histogram */
    unsigned long long *counts;   /* n_bounds + 1 (the last is +Inf) */
    size_t n_bounds;
    double sum;
    unsigned long long count;
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pf_metric *g_head, *g_tail;
static double g_start_unix;

const double pf_buckets_seconds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
                                     300, 600};
const size_t pf_buckets_seconds_n = sizeof pf_buckets_seconds / sizeof pf_buckets_seconds[0];
const double pf_buckets_batch[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
const size_t pf_buckets_batch_n = sizeof pf_buckets_batch / sizeof pf_buckets_batch[0];

static double unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void free_metric(pf_metric *m)
{
    if (!m)
        return;
    free(m->name);
    free(m->labels);
    free(m->help);
    free(m->bounds);
    free(m->counts);
    free(m);
}

static pf_metric *find_or_add(const char *name, const char *labels, const char *help, int kind, const double *bounds,
                              size_t n)
{
    if (!labels)
        labels = "";
    pthread_mutex_lock(&g_mu);
    if (!g_start_unix)
        g_start_unix = unix_now();
    pf_metric *m;
    for (m = g_head; m; m = m->next) {
        if (strcmp(m->name, name) != 0)
            continue;
        if (m->kind != kind) {   /* one name, one kind */
            pthread_mutex_unlock(&g_mu);
            return NULL;
        }
        if (strcmp(m->labels, labels) == 0) {
            pthread_mutex_unlock(&g_mu);
            return m;
        }
    }
    m = calloc(1, sizeof *m);
    if (m) {
        m->kind = kind;
        m->name = strdup(name);
        m->labels = strdup(labels);
        m->help = strdup(help ? help : "");
        if (kind == K_HISTOGRAM) {
            m->n_bounds = n;
            m->bounds = malloc((n ? n : 1) * sizeof *m->bounds);
            m->counts = calloc(n + 1, sizeof *m->counts);
            if (m->bounds)
                memcpy(m->bounds, bounds, n * sizeof *bounds);
        }
        if (!m->name || !m->labels || !m->help || (kind == K_HISTOGRAM && (!m->bounds || !m->counts))) {
            free_metric(m);
            m = NULL;
        } else {
            if (g_tail)
                g_tail->next = m;
            else
                g_head = m;
            g_tail = m;
        }
    }
    pthread_mutex_unlock(&g_mu);
    return m;
}

pf_metric *pf_counter(const char *name, const char *labels, const char *help)
{
    return find_or_add(name, labels, help, K_COUNTER, NULL, 0);
}

pf_metric *pf_gauge(const char *name, const char *labels, const char *help)
{
    return find_or_add(name, labels, help, K_GAUGE, NULL, 0);
}

pf_metric *pf_histogram(const char *name, const char *labels, const char *help, const double *bounds, size_t n)
{
    return find_or_add(name, labels, help, K_HISTOGRAM, bounds, n);
}

void pf_metric_add(pf_metric *m, double v)
{
    if (!m || m->kind == K_HISTOGRAM || (m->kind == K_COUNTER && !(v >= 0)))
        return;
    pthread_mutex_lock(&g_mu);
    m->value += v;
    pthread_mutex_unlock(&g_mu);
}

void pf_metric_set(pf_metric *m, double v)
{
    if (!m || m->kind != K_GAUGE)
        return;
    pthread_mutex_lock(&g_mu);
    m->value = v;
    pthread_mutex_unlock(&g_mu);
}

void pf_metric_observe(pf_metric *m, double v)
{
    if (!m || m->kind != K_HISTOGRAM || v != v)
        return;
    pthread_mutex_lock(&g_mu);
    size_t i = 0;
    while (i < m->n_bounds && v > m->bounds[i])
        i++;
    m->counts[i]++;
    m->sum += v;
    m->count++;
    pthread_mutex_unlock(&g_mu);
}

double pf_metric_value(pf_metric *m)
{
    if (!m)
        return 0;
    pthread_mutex_lock(&g_mu);
    double v = m->kind == K_HISTOGRAM ? (double)m->count : m->value;
    pthread_mutex_unlock(&g_mu);
    return v;
}

/* ---------- rendering ---------- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        size_t nc = b->cap * 2 + (size_t)k + 1;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
}

/* Prometheus floats: +Inf/-Inf/NaN spelled its way, integers without an exponent. */
static const char *fmt_num(double v, char *buf, size_t cap)
{
    if (v != v)
        return "NaN";
    if (v > 1.7e308)
        return "+Inf";
    if (v < -1.7e308)
        return "-Inf";
    if (v == (double)(long long)v && v > -9e15 && v < 9e15)
        snprintf(buf, cap, "%lld", (long long)v);
    else
        snprintf(buf, cap, "%.17g", v);
    return buf;
}

/* HELP text escaping: backslash and newline. */
static void sb_help(sbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            sb_printf(b, "\\\\");
        else if (*s == '\n')
            sb_printf(b, "\\n");
        else
            sb_printf(b, "%c", *s);
    }
}

static void series_name(sbuf *b, const char *name, const char *suffix, const char *labels, const char *extra)
{
    int has_l = labels && *labels, has_e = extra && *extra;
    sb_printf(b, "%s%s", name, suffix);
    if (has_l || has_e)
        sb_printf(b, "{%s%s%s}", has_l ? labels : "", has_l && has_e ? "," : "", has_e ? extra : "");
}

static void render_metric(sbuf *b, const pf_metric *m)
{
    char num[64];
    if (m->kind != K_HISTOGRAM) {
        series_name(b, m->name, "", m->labels, NULL);
        sb_printf(b, " %s\n", fmt_num(m->value, num, sizeof num));
        return;
    }
    unsigned long long cum = 0;
    for (size_t i = 0; i <= m->n_bounds; i++) {
        cum += m->counts[i];
        char le[80], bound[64];
        snprintf(le, sizeof le, "le=\"%s\"", i < m->n_bounds ? fmt_num(m->bounds[i], bound, sizeof bound) : "+Inf");
        series_name(b, m->name, "_bucket", m->labels, le);
        sb_printf(b, " %llu\n", cum);
    }
    series_name(b, m->name, "_sum", m->labels, NULL);
    sb_printf(b, " %s\n", fmt_num(m->sum, num, sizeof num));
    series_name(b, m->name, "_count", m->labels, NULL);
    sb_printf(b, " %llu\n", m->count);
}

double pf_process_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    unsigned long long size = 0, rss = 0;
    int ok = fscanf(f, "%llu %llu", &size, &rss) == 2;
    fclose(f);
    return ok ? (double)rss * (double)sysconf(_SC_PAGESIZE) : 0;
}

static double process_vm_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    unsigned long long size = 0;
    int ok = fscanf(f, "%llu", &size) == 1;
    fclose(f);
    return ok ? (double)size * (double)sysconf(_SC_PAGESIZE) : 0;
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1;   /* the directory stream's own fd */
}

char *pf_metrics_render(size_t *len)
{
    sbuf b = {0};
    b.cap = 4096;
    b.p = malloc(b.cap);
    if (!b.p)
        return NULL;
    b.p[0] = '\0';
    char num[64];
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
                 ru.ru_stime.tv_usec * 1e-6;
    pthread_mutex_lock(&g_mu);
    if (!g_start_unix)
        g_start_unix = unix_now();
    double start = g_start_unix;
    /* Group the series of one name under one HELP/TYPE header, in first-registration order. */
    for (pf_metric *m = g_head; m; m = m->next) {
        int first = 1;
        for (pf_metric *o = g_head; o != m; o = o->next)
            if (strcmp(o->name, m->name) == 0) {
                first = 0;
                break;
            }
        if (!first)
            continue;
        sb_printf(&b, "# HELP %s ", m->name);
        sb_help(&b, m->help);
        sb_printf(&b, "\n# TYPE %s %s\n", m->name,
                  m->kind == K_COUNTER ? "counter" : m->kind == K_GAUGE ? "gauge" : "histogram");
        for (pf_metric *o = m; o; o = o->next)
            if (strcmp(o->name, m->name) == 0)
                render_metric(&b, o);
    }
    pthread_mutex_unlock(&g_mu);
    sb_printf(&b, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                  "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %s\n",
              fmt_num(pf_process_rss_bytes(), num, sizeof num));
    sb_printf(&b, "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                  "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %s\n",
              fmt_num(process_vm_bytes(), num, sizeof num));
    sb_printf(&b, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
                  "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %s\n",
              fmt_num(cpu, num, sizeof num));
    sb_printf(&b, "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
                  "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %s\n",
              fmt_num(start, num, sizeof num));
    int fds = open_fds();
    if (fds >= 0)
        sb_printf(&b, "# HELP process_open_fds Number of open file descriptors.\n"
                      "# TYPE process_open_fds gauge\nprocess_open_fds %d\n",
                  fds);
    char why[256];
    sb_printf(&b, "# HELP paliflow_live 1 while every main loop of this process is ticking.\n"
                  "# TYPE paliflow_live gauge\npaliflow_live %d\n",
              pf_health_live(why, sizeof why));
    sb_printf(&b, "# HELP paliflow_ready 1 when every role in this process is ready (connected/bound).\n"
                  "# TYPE paliflow_ready gauge\npaliflow_ready %d\n",
              pf_health_is_ready(why, sizeof why));
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len)
        *len = b.n;
    return b.p;
}

/* ---------- health ---------- */

#define MAX_COMPONENTS 16

typedef struct component {
    char name[48];
    double max_silence, last_tick;
    int ready, used;
} component;

static component g_comp[MAX_COMPONENTS];

static component *comp_find(const char *name, int create)
{
    component *free_slot = NULL;
    for (int i = 0; i < MAX_COMPONENTS; i++) {
        if (g_comp[i].used && strcmp(g_comp[i].name, name) == 0)
            return &g_comp[i];
        if (!g_comp[i].used && !free_slot)
            free_slot = &g_comp[i];
    }
    if (!create || !free_slot)
        return NULL;
    memset(free_slot, 0, sizeof *free_slot);
    free_slot->used = 1;
    snprintf(free_slot->name, sizeof free_slot->name, "%s", name);
    return free_slot;
}

void pf_health_register(const char *component_name, double max_silence_s)
{
    pthread_mutex_lock(&g_mu);
    component *c = comp_find(component_name, 1);
    if (c) {
        c->max_silence = max_silence_s > 0 ? max_silence_s : 30;
        c->last_tick = pf_now();
        c->ready = 0;
    }
    pthread_mutex_unlock(&g_mu);
}

void pf_health_unregister(const char *component_name)
{
    pthread_mutex_lock(&g_mu);
    component *c = comp_find(component_name, 0);
    if (c)
        c->used = 0;
    pthread_mutex_unlock(&g_mu);
}

void pf_health_tick(const char *component_name)
{
    pthread_mutex_lock(&g_mu);
    component *c = comp_find(component_name, 0);
    if (c)
        c->last_tick = pf_now();
    pthread_mutex_unlock(&g_mu);
}

void pf_health_ready(const char *component_name, int ready)
{
    pthread_mutex_lock(&g_mu);
    component *c = comp_find(component_name, 0);
    if (c)
        c->ready = ready;
    pthread_mutex_unlock(&g_mu);
}

int pf_health_live(char *why, size_t cap)
{
    double now = pf_now();
    int live = 1;
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < MAX_COMPONENTS && live; i++)
        if (g_comp[i].used && now - g_comp[i].last_tick > g_comp[i].max_silence) {
            live = 0;
            if (why)
                snprintf(why, cap, "%s: main loop silent for %.1f s", g_comp[i].name, now - g_comp[i].last_tick);
        }
    pthread_mutex_unlock(&g_mu);
    if (live && why)
        snprintf(why, cap, "ok");
    return live;
}

int pf_health_is_ready(char *why, size_t cap)
{
    int ready = 1;
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < MAX_COMPONENTS && ready; i++)
        if (g_comp[i].used && !g_comp[i].ready) {
            ready = 0;
            if (why)
                snprintf(why, cap, "%s: not ready", g_comp[i].name);
        }
    pthread_mutex_unlock(&g_mu);
    if (ready && why)
        snprintf(why, cap, "ok");
    return ready;
}

/* ---------- rates ---------- */

void pf_rate_init(pf_rate *r, double window_s)
{
    memset(r, 0, sizeof *r);
    r->window_s = window_s > 0 ? window_s : 30;
}

double pf_rate_update(pf_rate *r, double now, double total)
{
    const int cap = (int)(sizeof r->t / sizeof r->t[0]);
    double step = r->window_s / (cap - 1);
    int last = (r->head + r->n - 1) % cap;
    if (r->n == 0 || now - r->t[last] >= step) {   /* one sample per step: the ring spans the window */
        int at = (r->head + r->n) % cap;
        if (r->n == cap) {
            r->head = (r->head + 1) % cap;
            at = last = (r->head + r->n - 1) % cap;
        } else {
            r->n++;
            last = at;
        }
        r->t[at] = now;
        r->v[at] = total;
    }
    /* oldest sample still inside the window */
    int k = 0;
    while (k < r->n - 1 && now - r->t[(r->head + k) % cap] > r->window_s)
        k++;
    int first = (r->head + k) % cap;
    double dt = now - r->t[first];
    return dt > 0 ? (total - r->v[first]) / dt : 0;
}
