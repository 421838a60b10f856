/* producer_scan.c - the walk of the inputs in a thread of its own, feeding the producer's loop through a
 * bounded queue.
 *
 * Why a thread: the walk is system calls (getdents, a stat and a realpath per file: the item's identity), and
 * when the producer's loop did it in slices between socket polls, every slice was time the loop did not hand
 * out work: 134-172 items/s during a 1M-file scan against 2400-3400 after it (issue 18). Now the loop only
 * takes what the thread has found (path, canonical path, size) and inserts it into the job store, a bounded
 * chunk per turn, and never waits for the walk: an empty queue is "nothing new yet".
 *
 * Bounded: the thread waits when FEED_CAP entries are waiting, so a fast walk over a slow job store holds at
 * most that many paths in memory (a few MB), however many files the inputs hold. The job store stays the only
 * truth: an entry taken from the queue is in the job once inserted; a crash loses at most the queue, and the
 * walk of the next run finds those files again (inserts of known items are ignored). */
#define _GNU_SOURCE   /* gettid */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "pipeline/producer_internal.h"

#define FEED_CAP 4096

struct pf_prod_feed {
    pf_scan *scan;            /* owned by the thread until it ends (then read-only: counters) */
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t space;     /* the loop took entries: the thread may go on */
    pthread_cond_t ended;     /* the thread published its id (start), or is about to return (stop) */
    int exited;
    pid_t tid;                /* the walk's thread id (its priority is set per thread) */
    int yielding;             /* it runs at nice +10 now */
    pf_ring q;                /* pf_prod_scan_entry *, at most FEED_CAP */
    int stop;                 /* the loop is closing: the thread returns at its next entry */
    int state;                /* 0 walking, 1 the walk is complete, -1 failed (err) */
    pf_err err;
};

/* The canonical path of the folder whose files come now (the walk lists a folder's files together). */
typedef struct dir_cache {
    char *dir, *real;
    size_t real_len;
    int fd;   /* the folder, O_PATH: fstatat(fd, NAME) looks up one name instead of the whole path (-1: none) */
} dir_cache;

static void dir_cache_clear(dir_cache *c)
{
    free(c->dir);
    free(c->real);
    if (c->fd >= 0)
        close(c->fd);
    c->dir = c->real = NULL;
    c->fd = -1;
}

/* One block holding the entry, PATH and its identity IDENT (IL bytes): one malloc per file found, and one
 * free on the loop thread that inserts it. NULL: out of memory. */
static pf_prod_scan_entry *entry_block(const char *path, size_t pl, const char *ident, size_t il)
{
    pf_prod_scan_entry *en = malloc(sizeof *en + pl + 1 + il + 1);
    if (!en)
        return NULL;
    memcpy(en->path, path, pl + 1);
    en->ident = en->path + pl + 1;
    memcpy(en->ident, ident, il);
    en->ident[il] = '\0';
    return en;
}

/* The entry of PATH (its identity is pf_prod_canonical's), cheaper for the walk: realpath() costs an lstat per
 * path component, for every file. For a file NAME that is not a symlink, realpath(DIR/NAME) is
 * realpath(DIR)/NAME, and realpath(DIR) is the same for every file of the folder: one stat per file then,
 * of NAME in the folder's descriptor (fstatat), not of the whole path.
 * Anything else (a symlink, a path that does not resolve, a name like "..") takes the full pf_prod_canonical.
 * NULL: out of memory. */
static pf_prod_scan_entry *entry_new(dir_cache *c, const char *path)
{
    size_t pl = strlen(path);
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    struct stat st;
    int fast = slash && slash != path && *name && strcmp(name, ".") && strcmp(name, "..");
    size_t dl = slash ? (size_t)(slash - path) : 0;
    if (fast && (!c->dir || strlen(c->dir) != dl || memcmp(c->dir, path, dl) != 0)) {
        dir_cache_clear(c);
        c->dir = strndup(path, dl);
        c->real = c->dir ? realpath(c->dir, NULL) : NULL;
        c->real_len = c->real ? strlen(c->real) : 0;
        c->fd = c->real ? open(c->real, O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
        if (c->fd < 0)
            dir_cache_clear(c);
    }
    fast = fast && c->dir && fstatat(c->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISLNK(st.st_mode);
    if (!fast) {
        int64_t size;
        char *ident = pf_prod_canonical(path, &size);
        pf_prod_scan_entry *en = ident ? entry_block(path, pl, ident, strlen(ident)) : NULL;
        free(ident);
        if (en)
            en->size = size;
        return en;
    }
    /* realpath(DIR) "/" NAME, without a second slash after the root */
    size_t rl = c->real_len, nl = pl - dl - 1, at = rl == 1 && c->real[0] == '/' ? rl : rl + 1;
    pf_prod_scan_entry *en = malloc(sizeof *en + pl + 1 + at + nl + 1);
    if (!en)
        return NULL;
    memcpy(en->path, path, pl + 1);
    en->ident = en->path + pl + 1;
    memcpy(en->ident, c->real, rl);
    en->ident[rl] = '/';
    memcpy(en->ident + at, name, nl + 1);
    en->size = (int64_t)st.st_size;
    return en;
}

/* The walk yields to the loop while there are workers to serve: on a machine with few cores, a walk at full
 * speed took the CPU the loop, the workers and the sink need (dispatch fell to a third during the scan); at
 * nice +10 it runs on what they leave. With no worker connected nothing waits for the loop, and a niced walk
 * on a busy machine only took longer (1M files: 74 s instead of 15): it runs at the process' own priority
 * then. Per thread on Linux (setpriority on the thread's id). */
void pf_prod_feed_yield(pf_prod_feed *f, int yield)
{
    if (!f || !f->tid || f->yielding == yield)
        return;
    errno = 0;
    int base = getpriority(PRIO_PROCESS, 0);   /* the process' (its main thread's) nice value */
    if (errno)
        return;
    int want = yield ? (base + 10 > 19 ? 19 : base + 10) : base;
    /* going back up may be refused without CAP_SYS_NICE (RLIMIT_NICE): then it stays niced, and is not asked
     * again every loop turn */
    setpriority(PRIO_PROCESS, (id_t)f->tid, want);
    f->yielding = yield;
}

static void *feed_main(void *arg)
{
    pf_prod_feed *f = arg;
    pf_err e = {{0}};
    int state = 0;
    dir_cache dc = {.fd = -1};
    pthread_mutex_lock(&f->mu);
    f->tid = gettid();
    pthread_cond_signal(&f->ended);
    pthread_mutex_unlock(&f->mu);
    for (;;) {
        const char *path;
        int r = pf_scan_next(f->scan, &path, &e);
        if (r <= 0) {
            state = r < 0 ? -1 : 1;
            break;
        }
        pf_prod_scan_entry *en = entry_new(&dc, path);
        if (!en) {
            pf_errf(&e, "scan: out of memory");
            state = -1;
            break;
        }
        pthread_mutex_lock(&f->mu);
        while (f->q.n >= FEED_CAP && !f->stop)
            pthread_cond_wait(&f->space, &f->mu);
        int stop = f->stop;
        if (!stop && pf_ring_push(&f->q, en)) {
            pf_errf(&e, "scan: out of memory");
            stop = 1;
            state = -1;
        }
        pthread_mutex_unlock(&f->mu);
        if (stop) {
            pf_prod_scan_entry_free(en);
            break;
        }
    }
    dir_cache_clear(&dc);
    pthread_mutex_lock(&f->mu);
    if (!f->stop || state < 0) {
        f->state = state;
        f->err = e;
    }
    f->exited = 1;
    pthread_cond_signal(&f->ended);
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

int pf_prod_feed_start(pf_scan *scan, pf_prod_feed **out, pf_err *err)
{
    *out = NULL;
    pf_prod_feed *f = calloc(1, sizeof *f);
    if (!f)
        return pf_errf(err, "scan: out of memory");
    f->scan = scan;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->space, NULL);
    pthread_cond_init(&f->ended, NULL);
    pthread_mutex_lock(&f->mu);   /* the thread publishes its id first thing */
    int rc = pthread_create(&f->th, NULL, feed_main, f);
    if (!rc)
        while (!f->tid)
            pthread_cond_wait(&f->ended, &f->mu);
    pthread_mutex_unlock(&f->mu);
    if (rc) {
        pthread_cond_destroy(&f->ended);
        pthread_cond_destroy(&f->space);
        pthread_mutex_destroy(&f->mu);
        free(f);
        return pf_errf(err, "scan: cannot start its thread: %s", strerror(rc));
    }
    f->started = 1;
    *out = f;
    return 0;
}

size_t pf_prod_feed_take(pf_prod_feed *f, pf_prod_scan_entry **v, size_t max, int *state, pf_err *err)
{
    size_t n = 0;
    pthread_mutex_lock(&f->mu);
    while (n < max && f->q.n > 0)
        v[n++] = pf_ring_pop(&f->q);
    *state = f->q.n > 0 ? 0 : f->state;   /* complete only once everything found was taken */
    if (*state < 0)
        *err = f->err;
    if (n)
        pthread_cond_signal(&f->space);
    pthread_mutex_unlock(&f->mu);
    if (*state != 0 && f->started) {   /* the thread has returned or is returning: join it now */
        pthread_join(f->th, NULL);
        f->started = 0;
    }
    return n;
}

size_t pf_prod_feed_waiting(pf_prod_feed *f)
{
    pthread_mutex_lock(&f->mu);
    size_t n = f->q.n;
    pthread_mutex_unlock(&f->mu);
    return n;
}

void pf_prod_scan_entry_free(pf_prod_scan_entry *en)
{
    free(en);   /* ident lives in the same block (entry_block) */
}

void pf_prod_scan_stash_free(prod *p)
{
    while (p->stash_i < p->stash_n)
        pf_prod_scan_entry_free(p->stash[p->stash_i++]);
    p->stash_i = p->stash_n = 0;
}

/* How long a stop waits for the walk to return: an entry is a stat and a realpath, but a --list read from a
 * FIFO or stdin that nobody writes to blocks in read() for good, and a stopping producer must not hang. */
#define FEED_STOP_WAIT_S 2

int pf_prod_feed_stop(pf_prod_feed *f)
{
    if (!f)
        return 0;
    pthread_mutex_lock(&f->mu);
    f->stop = 1;
    pthread_cond_broadcast(&f->space);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += FEED_STOP_WAIT_S;
    while (f->started && !f->exited)
        if (pthread_cond_timedwait(&f->ended, &f->mu, &ts) == ETIMEDOUT)
            break;
    int exited = !f->started || f->exited;
    pthread_mutex_unlock(&f->mu);
    if (!exited) {
        /* blocked reading the list: left behind with its scan and this feed (freeing them under it would be
         * worse); the process is on its way out */
        pf_warn(LOG, "the scan is blocked reading its input (a --list FIFO or stdin nobody writes to?): left "
                "behind");
        pthread_detach(f->th);
        return -1;
    }
    if (f->started)
        pthread_join(f->th, NULL);
    pf_prod_scan_entry *en;
    while ((en = pf_ring_pop(&f->q)))
        pf_prod_scan_entry_free(en);
    pf_ring_free(&f->q);
    pthread_cond_destroy(&f->ended);
    pthread_cond_destroy(&f->space);
    pthread_mutex_destroy(&f->mu);
    free(f);
    return 0;
}
