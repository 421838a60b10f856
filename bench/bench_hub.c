/* bench_hub - the hub (producer -> workers -> sink -> JSONL) against a raw ZeroMQ relay of the same messages.
 *
 * Why: the hub's own cost (job store, bookkeeping, record encoding, the sink's fdatasync) is what limits a
 * fleet of fast workers; comparing it with a bare relay that moves the same bytes in the same pattern over the
 * same transport on the same machine, in the same run, tells how much of the machine the hub itself takes,
 * independent of how loaded the machine is at the time.
 *
 * Both runs: N items of --file-bytes; a preprocess worker turns each into an S*S*3 tensor (S = --image-size)
 * sent back to the hub, which forwards it to an inference worker, whose small record goes to the sink, which
 * acknowledges it to the hub. The hub run uses the real processes (paliflow producer/sink, test_worker with
 * near-zero-compute test stages); the relay run forks ROUTER/DEALER/PUSH/PULL loops doing nothing else.
 * Reported: items/s, producer (relay) and sink CPU per item, bytes written to storage per item
 * (/proc/PID/io write_bytes) and write syscalls per item, the hub/relay throughput ratio, and a second table
 * of CPU per item of every process (producer, sink, preprocess workers summed, inference worker) and the
 * workers' context switches per item (every thread's, /proc/PID/task/TID/status).
 *
 * Usage: bench_hub [--items N] [--image-size S] [--file-bytes B] [--pre K] [--paliflow PATH]
 *                  [--worker PATH] [--dir D] [--no-relay] [--no-hub] [--keep]
 * No timing assertion anywhere: the ctest smoke run (label bench) only checks that both runs complete. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#ifndef PF_BENCH_PALIFLOW
#define PF_BENCH_PALIFLOW "paliflow"
#endif
#ifndef PF_BENCH_WORKER
#define PF_BENCH_WORKER "test_worker"
#endif

typedef struct cfg {
    long items;
    int image_size;
    long file_bytes;
    int pre;
    const char *paliflow, *worker;
    char dir[512];
    int relay, hub, keep;
} cfg;

/* What one process cost: CPU seconds, bytes written to storage, write syscalls. */
typedef struct cost {
    double cpu_s;
    long long write_bytes, syscw;
    long long ctxsw;   /* context switches of all its threads (voluntary + not), -1 unknown */
} cost;

typedef struct result {
    double seconds;
    cost hub, sink;
    cost pre, inf;   /* the workers: all preprocess workers summed, the inference worker */
    int ok;
} result;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Context switches of every thread of PID (/proc/PID/task/TID/status: a process's own status counts its
 * main thread only), -1 when unreadable. A wake-up between threads is what a handoff costs. */
static long long thread_switches(pid_t pid)
{
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long long sum = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char sp[160], line[256];
        snprintf(sp, sizeof sp, "/proc/%d/task/%.32s/status", (int)pid, e->d_name);
        FILE *f = fopen(sp, "r");
        if (!f)
            continue;   /* the thread ended meanwhile */
        long long v;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "voluntary_ctxt_switches: %lld", &v) == 1 ||
                sscanf(line, "nonvoluntary_ctxt_switches: %lld", &v) == 1)
                sum += v;
        fclose(f);
    }
    closedir(d);
    return sum;
}

/* /proc/PID/stat utime+stime (0 when readable) and /proc/PID/io write_bytes, syscw (-1 when unreadable). */
static int proc_cost(pid_t pid, cost *c)
{
    char path[64], buf[4096];
    memset(c, 0, sizeof *c);
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');   /* the command name may hold spaces: fields start after ')' */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    c->cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    /* A process that already exited (a worker done with its items) keeps its stat, but its io is closed to
     * anyone without CAP_SYS_PTRACE: the figures are then unknown (-1), not a failed run. */
    snprintf(path, sizeof path, "/proc/%d/io", (int)pid);
    c->write_bytes = c->syscw = -1;
    if ((f = fopen(path, "r"))) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            sscanf(line, "write_bytes: %lld", &c->write_bytes);
            sscanf(line, "syscw: %lld", &c->syscw);
        }
        fclose(f);
    }
    c->ctxsw = thread_switches(pid);
    return 0;
}

static pid_t spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        FILE *l = freopen(log, "w", stderr);
        if (l)
            dup2(fileno(stderr), STDOUT_FILENO);
        execv(argv[0], argv);
        fprintf(stderr, "bench_hub: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

static void stop_pid(pid_t pid, int sig)
{
    if (pid > 0) {
        kill(pid, sig);
        waitpid(pid, NULL, 0);
    }
}

/* N input files of B bytes each, every one different (the hub dedupes identical records per item only). */
static int make_inputs(const cfg *c)
{
    char in[600];
    snprintf(in, sizeof in, "%s/in", c->dir);
    if (mkdir(in, 0755) && errno != EEXIST) {
        fprintf(stderr, "bench_hub: mkdir %s: %s\n", in, strerror(errno));
        return -1;
    }
    unsigned char *b = malloc((size_t)c->file_bytes);
    if (!b)
        return -1;
    for (long i = 0; i < c->file_bytes; i++)
        b[i] = (unsigned char)('a' + i % 26);
    for (long i = 0; i < c->items; i++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%04ld/%08ld.jpg", in, i / 1000, i);
        if (i % 1000 == 0) {
            char d[700];
            snprintf(d, sizeof d, "%s/%04ld", in, i / 1000);
            mkdir(d, 0755);
        }
        memcpy(b, &i, sizeof i < (size_t)c->file_bytes ? sizeof i : (size_t)c->file_bytes);
        FILE *f = fopen(p, "wb");
        if (!f || fwrite(b, 1, (size_t)c->file_bytes, f) != (size_t)c->file_bytes) {
            fprintf(stderr, "bench_hub: cannot write %s\n", p);
            if (f)
                fclose(f);
            free(b);
            return -1;
        }
        fclose(f);
    }
    free(b);
    return 0;
}

/* The producer logs "job complete" (--stay keeps it up so that its counters can be read). */
static int log_says_complete(const char *log)
{
    FILE *f = fopen(log, "r");
    if (!f)
        return 0;
    char line[1024];
    int yes = 0;
    while (!yes && fgets(line, sizeof line, f))
        yes = strstr(line, "job complete") != NULL;
    fclose(f);
    return yes;
}

/* Both runs give every worker the same credit (items it may hold), so that both pipelines are as deep: a
 * worker's default credit (2 per preprocess thread) would measure latency, not the hub's cost. */
#define CREDIT 8
#define CREDIT_S "8"
#define MAX_READY 64

/* The workers' CPU, read while they still live (both runs kill them after the producer finished): W[0..NW-2]
 * are the preprocess workers (summed), W[NW-1] the inference worker. Their CPU per item shows where the hub's
 * cost beyond the relay's sits: in the producer and sink, or in the worker runtime. */
static int workers_cost(const pid_t *w, int nw, result *r)
{
    cost c;
    memset(&r->pre, 0, sizeof r->pre);
    for (int i = 0; i < nw - 1; i++) {
        if (proc_cost(w[i], &c))
            return -1;
        r->pre.cpu_s += c.cpu_s;
        r->pre.ctxsw = r->pre.ctxsw < 0 || c.ctxsw < 0 ? -1 : r->pre.ctxsw + c.ctxsw;
    }
    return nw > 0 ? proc_cost(w[nw - 1], &r->inf) : -1;
}

static int run_hub(const cfg *c, result *r)
{
    memset(r, 0, sizeof *r);
    char prod_ep[600], sink_ep[600], db[600], out[600], in[600], plog[600], slog[600], wlog[600], isz[16];
    snprintf(prod_ep, sizeof prod_ep, "ipc://%s/prod.sock", c->dir);
    snprintf(sink_ep, sizeof sink_ep, "ipc://%s/sink.sock", c->dir);
    snprintf(db, sizeof db, "%s/job.sqlite", c->dir);
    snprintf(out, sizeof out, "%s/out.jsonl", c->dir);
    snprintf(in, sizeof in, "%s/in", c->dir);
    snprintf(plog, sizeof plog, "%s/producer.log", c->dir);
    snprintf(slog, sizeof slog, "%s/sink.log", c->dir);
    snprintf(isz, sizeof isz, "%d", c->image_size);
    char *sargv[] = {(char *)c->paliflow, "sink", "--bind", sink_ep, "--producer", prod_ep, "--out", out,
                     "--log-level", "warn", NULL};
    pid_t sink = spawn(sargv, slog);
    char *pargv[] = {(char *)c->paliflow, "producer", "--bind", prod_ep, "--db", db, "--task", "caption en",
                     "--image-size", isz, "--progress", "off", "--stay", "--log-level", "info", in, NULL};
    double t0 = now_s();
    pid_t prod = spawn(pargv, plog);
    pid_t w[17] = {0};
    int nw = 0;
    for (int i = 0; i < c->pre && nw < 16; i++) {
        char *a[] = {(char *)c->worker, "preprocess", "--producer", prod_ep, "--sink", sink_ep, "--threads", "1",
                     "--credit", CREDIT_S, "--steps", "1", "--exit-when-done", NULL};
        snprintf(wlog, sizeof wlog, "%s/pre%d.log", c->dir, i);
        w[nw++] = spawn(a, wlog);
    }
    char *ia[] = {(char *)c->worker, "inference", "--producer", prod_ep, "--sink", sink_ep, "--max-batch", "8",
                  "--credit", CREDIT_S, "--steps", "1", "--exit-when-done", NULL};
    snprintf(wlog, sizeof wlog, "%s/inf.log", c->dir);
    w[nw++] = spawn(ia, wlog);
    /* generous: a loaded 2-core machine runs a few hundred items/s at worst */
    double limit = 120 + (double)c->items / 100;
    int status;
    while (!(r->ok = log_says_complete(plog)) && now_s() - t0 < limit) {
        if (waitpid(prod, &status, WNOHANG) == prod) {
            prod = -1;
            break;
        }
        usleep(5000);
    }
    r->seconds = now_s() - t0;
    if (r->ok && (proc_cost(prod, &r->hub) || proc_cost(sink, &r->sink) || workers_cost(w, nw, r)))
        r->ok = 0;
    stop_pid(prod, SIGTERM);
    stop_pid(sink, SIGTERM);
    for (int i = 0; i < nw; i++)
        stop_pid(w[i], SIGKILL);
    if (!r->ok)
        fprintf(stderr, "bench_hub: the hub run did not complete (logs in %s)\n", c->dir);
    return r->ok ? 0 : -1;
}

/* ---- the raw relay: the same messages, nothing else ---- */

static void *sock_or_die(void *ctx, int type, const char *ep, int bind)
{
    void *s = zmq_socket(ctx, type);
    int hwm = 0, linger = 0, rcvtimeo = 30000;   /* a stuck relay fails instead of hanging the bench */
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &rcvtimeo, sizeof rcvtimeo);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if ((bind ? zmq_bind(s, ep) : zmq_connect(s, ep)) != 0) {
        fprintf(stderr, "bench_hub relay: %s %s: %s\n", bind ? "bind" : "connect", ep, zmq_strerror(errno));
        _exit(1);
    }
    return s;
}

/* A worker: says hello with its role, then answers every item with REPLY_BYTES (pre: to the relay) or a
 * small record to the sink and a credit message to the relay (inf). */
static void relay_worker(const char *rep, const char *sink_ep, int inf, size_t reply_bytes)
{
    void *ctx = zmq_ctx_new();
    void *d = sock_or_die(ctx, ZMQ_DEALER, rep, 0);
    void *push = inf ? sock_or_die(ctx, ZMQ_PUSH, sink_ep, 0) : NULL;
    char role = inf ? 'I' : 'P';
    zmq_send(d, &role, 1, 0);
    uint8_t *reply = calloc(1, reply_bytes + 1);
    char rec[300];
    memset(rec, 'r', sizeof rec);
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (zmq_msg_recv(&m, d, 0) >= 0) {
        if (zmq_msg_size(&m) == 1 && *(char *)zmq_msg_data(&m) == 'Q')
            break;
        if (inf) {
            memcpy(rec, zmq_msg_data(&m), 8);   /* the item number, for the ack */
            zmq_send(push, rec, sizeof rec, 0);
            zmq_send(d, "C", 1, 0);
        } else {
            memcpy(reply, zmq_msg_data(&m), 8);
            zmq_send(d, reply, reply_bytes, 0);
        }
    }
    zmq_msg_close(&m);
    free(reply);
    _exit(0);
}

/* The sink: receives records, acknowledges them to the relay in batches (as the real sink does). */
static void relay_sink(const char *rep, const char *sink_ep, long items)
{
    void *ctx = zmq_ctx_new();
    void *pull = sock_or_die(ctx, ZMQ_PULL, sink_ep, 1);
    void *d = sock_or_die(ctx, ZMQ_DEALER, rep, 0);
    zmq_send(d, "S", 1, 0);
    char buf[512], ack[8 * 64];
    int n = 0;
    for (long got = 0; got < items; got++) {
        if (zmq_recv(pull, buf, sizeof buf, 0) < 0) {
            fprintf(stderr, "bench_hub relay sink: nothing received for 30 s after %ld records\n", got);
            _exit(1);
        }
        memcpy(ack + 8 * n++, buf, 8);
        if (n == 64 || got + 1 == items) {
            zmq_send(d, ack, (size_t)n * 8, 0);
            n = 0;
        }
    }
    /* the last acks must leave before the process does (the sockets were made with linger 0) */
    int linger = 5000;
    zmq_setsockopt(d, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(d);
    zmq_close(pull);
    zmq_ctx_term(ctx);
    _exit(0);
}

/* The relay: hands items to preprocess workers against credit, forwards their replies to the inference
 * worker against credit, counts the sink's acks; exits when all are acknowledged. */
static void relay_hub(const char *rep, long items, size_t item_bytes, int n_pre)
{
    void *ctx = zmq_ctx_new();
    void *r = sock_or_die(ctx, ZMQ_ROUTER, rep, 1);
    uint8_t id_pre[16][256], id_inf[256];
    size_t len_pre[16], len_inf = 0;
    int credit_pre[16] = {0}, credit_inf = 0, np = 0, have_inf = 0;
    uint8_t *item = calloc(1, item_bytes + 8);
    /* tensors waiting for inference credit: at most MAX_READY (the producer's --max-ready default) plus what
     * the preprocess workers hold when the limit is reached */
    zmq_msg_t *wait = calloc((size_t)(MAX_READY + 16 * CREDIT + 1), sizeof *wait);
    size_t wn = 0;
    long next = 0, acked = 0;
    while (acked < items) {
        zmq_msg_t idm, body;
        zmq_msg_init(&idm);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&idm, r, 0) < 0 || zmq_msg_recv(&body, r, 0) < 0) {
            fprintf(stderr, "bench_hub relay: nothing received for 30 s (%ld sent, %ld acknowledged, %zu waiting, "
                    "%d preprocess workers, inference worker %s, inference credit %d)\n", next, acked, wn, np,
                    have_inf ? "known" : "unknown", credit_inf);
            _exit(1);
        }
        const uint8_t *idp = zmq_msg_data(&idm);
        size_t idl = zmq_msg_size(&idm), bl = zmq_msg_size(&body);
        const char *b = zmq_msg_data(&body);
        int from_pre = -1;
        for (int i = 0; i < np; i++)
            if (len_pre[i] == idl && !memcmp(id_pre[i], idp, idl))
                from_pre = i;
        if (bl == 1 && b[0] == 'P' && np < 16 && idl <= 256) {
            memcpy(id_pre[np], idp, idl);
            len_pre[np] = idl;
            credit_pre[np++] = CREDIT;
        } else if (bl == 1 && b[0] == 'I' && idl <= 256) {
            memcpy(id_inf, idp, idl);
            len_inf = idl;
            have_inf = 1;
            credit_inf = CREDIT;
        } else if (bl == 1 && b[0] == 'C') {
            credit_inf++;
        } else if (bl == 1 && b[0] == 'S') {
            /* the sink's hello */
        } else if (from_pre >= 0) {
            credit_pre[from_pre]++;
            zmq_msg_init(&wait[wn]);
            zmq_msg_move(&wait[wn++], &body);
        } else {
            acked += (long)(bl / 8);
        }
        zmq_msg_close(&idm);
        zmq_msg_close(&body);
        /* dispatch */
        for (int i = 0; i < np; i++)
            while (credit_pre[i] > 0 && next < items && wn < MAX_READY) {
                memcpy(item, &next, 8);
                zmq_send(r, id_pre[i], len_pre[i], ZMQ_SNDMORE);
                zmq_send(r, item, item_bytes, 0);
                credit_pre[i]--;
                next++;
            }
        while (have_inf && credit_inf > 0 && wn > 0) {
            zmq_send(r, id_inf, len_inf, ZMQ_SNDMORE);
            zmq_msg_send(&wait[0], r, 0);
            memmove(&wait[0], &wait[1], (wn - 1) * sizeof *wait);
            wn--;
            credit_inf--;
        }
    }
    for (int i = 0; i < np; i++) {
        zmq_send(r, id_pre[i], len_pre[i], ZMQ_SNDMORE);
        zmq_send(r, "Q", 1, 0);
    }
    if (have_inf) {
        zmq_send(r, id_inf, len_inf, ZMQ_SNDMORE);
        zmq_send(r, "Q", 1, 0);
    }
    usleep(100000);
    _exit(0);
}

static pid_t fork_role(void (*fn)(void))
{
    pid_t pid = fork();
    if (pid == 0)
        fn();
    return pid;
}

static const cfg *g_c;
static char g_rep[600], g_sink_ep[600];
static void role_hub(void) { relay_hub(g_rep, g_c->items, (size_t)g_c->file_bytes, g_c->pre); }
static void role_sink(void) { relay_sink(g_rep, g_sink_ep, g_c->items); }
static void role_pre(void)
{
    relay_worker(g_rep, g_sink_ep, 0, (size_t)g_c->image_size * (size_t)g_c->image_size * 3);
}
static void role_inf(void) { relay_worker(g_rep, g_sink_ep, 1, 0); }

static double ru_cpu(const struct rusage *ru)
{
    return (double)ru->ru_utime.tv_sec + ru->ru_utime.tv_usec * 1e-6 + (double)ru->ru_stime.tv_sec +
           ru->ru_stime.tv_usec * 1e-6;
}

static int run_relay(const cfg *c, result *r)
{
    memset(r, 0, sizeof *r);
    g_c = c;
    snprintf(g_rep, sizeof g_rep, "ipc://%s/relay.sock", c->dir);
    snprintf(g_sink_ep, sizeof g_sink_ep, "ipc://%s/rsink.sock", c->dir);
    double t0 = now_s();
    pid_t hub = fork_role(role_hub);
    pid_t sink = fork_role(role_sink);
    pid_t w[17];
    int nw = 0;
    for (int i = 0; i < c->pre && nw < 16; i++)
        w[nw++] = fork_role(role_pre);
    w[nw++] = fork_role(role_inf);
    int st_hub = -1, st_sink = -1;
    struct rusage ru;
    /* the relay's own per-process counters: wait4 gives CPU; write_bytes are 0 by construction */
    if (wait4(hub, &st_hub, 0, &ru) == hub)
        r->hub.cpu_s = ru_cpu(&ru);
    r->seconds = now_s() - t0;
    if (wait4(sink, &st_sink, 0, &ru) == sink)
        r->sink.cpu_s = ru_cpu(&ru);
    int w_ok = workers_cost(w, nw, r) == 0;
    for (int i = 0; i < nw; i++)
        stop_pid(w[i], SIGKILL);
    r->ok = w_ok && WIFEXITED(st_hub) && WEXITSTATUS(st_hub) == 0 && WIFEXITED(st_sink) &&
            WEXITSTATUS(st_sink) == 0;
    if (!r->ok)
        fprintf(stderr, "bench_hub: the relay run failed\n");
    return r->ok ? 0 : -1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_hub [OPTIONS]\n\n"
               "The hub (paliflow producer + sink, test_worker near-zero-compute workers) against a raw ZeroMQ\n"
               "relay of the same messages over ipc://, in the same run: items/s, CPU and storage bytes written\n"
               "per item of the producer (relay) and of the sink; then CPU per item of every process, workers\n"
               "included, and the workers' context switches per item.\n\n"
               "  --items N         items (default 20000)\n"
               "  --image-size S    preprocessed tensor side: S*S*3 bytes per item (default 224)\n"
               "  --file-bytes B    input file size (default 20000)\n"
               "  --pre K           preprocess workers (default 1)\n"
               "  --paliflow PATH   the paliflow binary (default: the build's)\n"
               "  --worker PATH     the test_worker binary (default: the build's)\n"
               "  --dir D           work folder (default: a new /tmp/bench_hub.XXXXXX, removed after)\n"
               "  --no-relay        skip the relay run\n"
               "  --no-hub          skip the hub run\n"
               "  --keep            keep the work folder (logs, job store, output)\n"
               "  --help            this text\n");
}

/* A counter per item, -1 when it is unknown. */
static double per_item(long long v, double n) { return v >= 0 ? (double)v / n : -1.0; }

static void print_row(const char *name, const result *r, long items)
{
    double n = (double)items;
    printf("%-6s %9.0f %8.2f %12.1f %12.1f %14.1f %12.1f %10.2f\n", name, n / r->seconds, r->seconds,
           1e6 * r->hub.cpu_s / n, 1e6 * r->sink.cpu_s / n, per_item(r->hub.write_bytes, n),
           per_item(r->sink.write_bytes, n), per_item(r->hub.syscw, n));
}

/* The second table: CPU per item of every process, workers included (us), and the workers' context switches
 * per item (all their threads). */
static void print_cpu_row(const char *name, const result *r, long items)
{
    double n = (double)items;
    double all = r->hub.cpu_s + r->sink.cpu_s + r->pre.cpu_s + r->inf.cpu_s;
    printf("%-6s %9.1f %9.1f %9.1f %9.1f %9.1f %8.2f %8.2f\n", name, 1e6 * r->hub.cpu_s / n,
           1e6 * r->sink.cpu_s / n, 1e6 * r->pre.cpu_s / n, 1e6 * r->inf.cpu_s / n, 1e6 * all / n,
           r->pre.ctxsw >= 0 ? (double)r->pre.ctxsw / n : -1.0, r->inf.ctxsw >= 0 ? (double)r->inf.ctxsw / n : -1.0);
}

int main(int argc, char **argv)
{
    cfg c = {20000, 224, 20000, 1, PF_BENCH_PALIFLOW, PF_BENCH_WORKER, "", 1, 1, 0};
    static const struct option opts[] = {
        {"items", required_argument, 0, 'n'},    {"image-size", required_argument, 0, 's'},
        {"file-bytes", required_argument, 0, 'b'}, {"pre", required_argument, 0, 'p'},
        {"paliflow", required_argument, 0, 'P'}, {"worker", required_argument, 0, 'W'},
        {"dir", required_argument, 0, 'd'},      {"no-relay", no_argument, 0, 'R'},
        {"no-hub", no_argument, 0, 'H'},         {"keep", no_argument, 0, 'k'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'n': c.items = atol(optarg); break;
        case 's': c.image_size = atoi(optarg); break;
        case 'b': c.file_bytes = atol(optarg); break;
        case 'p': c.pre = atoi(optarg); break;
        case 'P': c.paliflow = optarg; break;
        case 'W': c.worker = optarg; break;
        case 'd': snprintf(c.dir, sizeof c.dir, "%s", optarg); break;
        case 'R': c.relay = 0; break;
        case 'H': c.hub = 0; break;
        case 'k': c.keep = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (c.items < 1 || c.items > 100000000 || c.image_size < 1 || c.image_size > 2048 || c.file_bytes < 8 ||
        c.file_bytes > (64L << 20) || c.pre < 1 || c.pre > 15) {
        fprintf(stderr, "bench_hub: --items 1..1e8, --image-size 1..2048, --file-bytes 8..64M, --pre 1..15\n");
        return 2;
    }
    int own_dir = !c.dir[0];
    if (own_dir) {
        snprintf(c.dir, sizeof c.dir, "/tmp/bench_hub.XXXXXX");
        if (!mkdtemp(c.dir)) {
            fprintf(stderr, "bench_hub: mkdtemp: %s\n", strerror(errno));
            return 1;
        }
    } else if (mkdir(c.dir, 0755) && errno != EEXIST) {
        fprintf(stderr, "bench_hub: mkdir %s: %s\n", c.dir, strerror(errno));
        return 1;
    }
    result hub = {0}, relay = {0};
    int rc = 0;
    if (c.hub && make_inputs(&c))
        rc = 1;
    if (!rc && c.relay && run_relay(&c, &relay))
        rc = 1;
    if (!rc && c.hub && run_hub(&c, &hub))
        rc = 1;
    printf("bench_hub: %ld items, %ld-byte files, %d px tensors (%d bytes), %d preprocess worker(s), ipc://\n",
           c.items, c.file_bytes, c.image_size, 3 * c.image_size * c.image_size, c.pre);
    printf("%-6s %9s %8s %12s %12s %14s %12s %10s\n", "run", "items/s", "seconds", "hub_cpu_us", "sink_cpu_us",
           "hub_wbytes/it", "sink_wb/it", "hub_syscw");
    if (relay.ok)
        print_row("relay", &relay, c.items);
    if (hub.ok)
        print_row("hub", &hub, c.items);
    printf("%-6s %9s %9s %9s %9s %9s %8s %8s\n", "cpu/it", "hub_us", "sink_us", "pre_us", "inf_us", "all_us",
           "pre_cs", "inf_cs");
    if (relay.ok)
        print_cpu_row("relay", &relay, c.items);
    if (hub.ok)
        print_cpu_row("hub", &hub, c.items);
    if (relay.ok && hub.ok)
        printf("hub/relay throughput: %.1f%%\n", 100.0 * relay.seconds / hub.seconds);
    if (own_dir && !c.keep) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", c.dir);
        if (system(cmd) != 0)
            fprintf(stderr, "bench_hub: could not remove %s\n", c.dir);
    } else {
        printf("work folder: %s\n", c.dir);
    }
    return rc;
}
