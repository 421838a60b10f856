/* sink_idset.c - see sink_idset.h. The open batch is a pf_keyset in memory; runs are WITHOUT
 * ROWID tables "run<t>" of 16-byte identities; the registry `runs` says which are live, which are being
 * built by a merge and which merge each one feeds. Every write here happens inside the caller's transaction
 * (sink_index.c), so a run, a merge step or a merge's end is committed with the batch, or not at all. */
#include "pipeline/sink_idset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/grow.h"
#include "pipeline/keyset.h"

#define FANOUT 4         /* runs merged at once: each identity is rewritten about log4(N / BASE) + 1 times */
#define BASE 4096        /* runs under BASE identities are level 0; level k holds BASE * 4^(k-1) .. BASE * 4^k */
#define SPILL 32768      /* an open batch this large is written as a run at once (its hash set: ~2 MiB) */
#define STEP_MIN 4096    /* merge budget of a flush that added little: merges still move on */
#define LEVELS_MAX 40    /* 4096 * 4^39 is far beyond any output */
#define PEND_KEEP 16384  /* slots of the open batch's set kept between batches (a spilled rebuild's are given back) */
/* Runs of up to FILTER_MAX identities written or merged by this process get an in-memory Bloom filter of
 * FILTER_BITS bits per identity (FILTER_K bits set each: ~1% false positives), so that a lookup skips the
 * SQLite probe of nearly all of them: a new identity was probed in every run (~1 us each when cached, more
 * when not; 13 runs at 1M). Bounded: a few runs per level below FILTER_MAX, ~1.5 MiB in all, whatever the
 * set's size; the larger runs are probed. Not stored: runs found at open are probed until merged again. */
#define FILTER_MAX 262144
#define FILTER_BITS 10
#define FILTER_K 5

typedef struct run {
    int64_t t;     /* its table is run<t> */
    int64_t n;     /* identities in it */
    int64_t dst;   /* the run a merge is building from it, 0 none */
    int lvl;       /* a live run's level; the level of its inputs for a run being built */
    int building;  /* the output of a merge under way: not probed (its inputs hold all it holds) */
    uint64_t *filter;   /* its Bloom filter (NULL: none, probe it) */
    uint64_t filter_bits;
    sqlite3_stmt *one;  /* its own lookup, for a run with a filter that lets the identity through */
} run;

struct pf_idset {
    sqlite3 *db;
    char *file;
    int kind;
    pf_keyset pend;        /* the open batch */
    /* the registry's rows of this set, oldest first */
    run *runs;
    size_t n_runs, cap_runs;
    sqlite3_stmt *probe;   /* one lookup in every live run (NULL: none); rebuilt when they change */
    int probe_stale;
    int bulk;              /* pf_idset_set_bulk */
};

int pf_idset_db_err(sqlite3 *db, const char *file, const char *what, pf_err *err)
{
    if ((sqlite3_errcode(db) & 0xff) == SQLITE_FULL)   /* say it as the output's own write would */
        return pf_errf(err, "%s (the sink's record index): %s: %s", file, what, strerror(ENOSPC));
    return pf_errf(err, "%s (the sink's record index): %s: %s", file, what, sqlite3_errmsg(db));
}

static int exec(pf_idset *s, const char *sql, pf_err *err)
{
    return sqlite3_exec(s->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : pf_idset_db_err(s->db, s->file, sql, err);
}

void pf_rec_id_bytes(pf_rec_id id, unsigned char b[16])
{
    for (int i = 0; i < 8; i++) {
        b[i] = (unsigned char)(id.hi >> (56 - 8 * i));
        b[8 + i] = (unsigned char)(id.lo >> (56 - 8 * i));
    }
}

pf_rec_id pf_rec_id_from_bytes(const unsigned char b[16])
{
    pf_rec_id id = {0, 0};
    for (int i = 0; i < 8; i++) {
        id.hi = id.hi << 8 | b[i];
        id.lo = id.lo << 8 | b[8 + i];
    }
    return id;
}

static int level_of(int64_t n)
{
    int l = 0;
    for (int64_t b = BASE; n >= b && l < LEVELS_MAX - 1; b *= FANOUT)
        l++;
    return l;
}

/* ---- Bloom filters ---- */

static void filter_new(run *u, int64_t n)
{
    u->filter_bits = ((uint64_t)(n > 0 ? n : 1) * FILTER_BITS + 63) / 64 * 64;
    u->filter = calloc(u->filter_bits / 64, sizeof *u->filter);   /* none when out of memory: probed */
}

/* Identities are hashes: their two halves give the K positions (double hashing). */
static void filter_add(run *u, pf_rec_id id)
{
    uint64_t h = id.lo, d = id.hi | 1;
    for (int i = 0; i < FILTER_K; i++, h += d) {
        uint64_t b = h % u->filter_bits;
        u->filter[b >> 6] |= 1ull << (b & 63);
    }
}

static int filter_maybe(const run *u, pf_rec_id id)
{
    uint64_t h = id.lo, d = id.hi | 1;
    for (int i = 0; i < FILTER_K; i++, h += d) {
        uint64_t b = h % u->filter_bits;
        if (!(u->filter[b >> 6] & 1ull << (b & 63)))
            return 0;
    }
    return 1;
}

static void run_free(run *u)
{
    free(u->filter);
    u->filter = NULL;
    sqlite3_finalize(u->one);
    u->one = NULL;
}

/* ---- the registry ---- */

static int load_runs(pf_idset *s, pf_err *err)
{
    sqlite3_stmt *st = NULL;
    for (size_t i = 0; i < s->n_runs; i++)   /* a rollback's runs are gone or changed: filters start over */
        run_free(&s->runs[i]);
    s->n_runs = 0;
    s->probe_stale = 1;
    if (sqlite3_prepare_v2(s->db, "SELECT t, n, dst, lvl, building FROM runs WHERE kind=? ORDER BY t", -1, &st,
                           NULL) != SQLITE_OK)
        return pf_idset_db_err(s->db, s->file, "read the runs", err);
    sqlite3_bind_int(st, 1, s->kind);
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (PF_GROW(s->runs, s->cap_runs, s->n_runs, 1, 16)) {
            sqlite3_finalize(st);
            return pf_errf(err, "%s: out of memory", s->file);
        }
        run *u = &s->runs[s->n_runs++];
        memset(u, 0, sizeof *u);
        u->t = sqlite3_column_int64(st, 0);
        u->n = sqlite3_column_int64(st, 1);
        u->dst = sqlite3_column_int64(st, 2);
        u->lvl = sqlite3_column_int(st, 3);
        u->building = sqlite3_column_int(st, 4);
        if (u->lvl < 0 || u->lvl >= LEVELS_MAX)
            u->lvl = LEVELS_MAX - 1;
    }
    sqlite3_finalize(st);
    return r == SQLITE_DONE ? 0 : pf_idset_db_err(s->db, s->file, "read the runs", err);
}

int pf_idset_schema(sqlite3 *db, const char *file, pf_err *err)
{
    if (sqlite3_exec(db,
                     "CREATE TABLE IF NOT EXISTS runs(t INTEGER PRIMARY KEY, kind INTEGER NOT NULL, n INTEGER NOT "
                     "NULL, dst INTEGER NOT NULL, lvl INTEGER NOT NULL, building INTEGER NOT NULL)",
                     NULL, NULL, NULL) != SQLITE_OK)
        return pf_idset_db_err(db, file, "create the runs registry", err);
    return 0;
}

int pf_idset_consistent(sqlite3 *db, const char *file, const char **why, pf_err *err)
{
    static const char *const checks[][2] = {
        {"SELECT count(*) FROM runs WHERE 'run' || t NOT IN (SELECT name FROM sqlite_master WHERE type='table')",
         "a run's table is missing"},
        {"SELECT count(*) FROM sqlite_master WHERE type='table' AND name GLOB 'run[0-9]*' AND "
         "name NOT IN (SELECT 'run' || t FROM runs)",
         "a run's table is not in the registry"},
        {"SELECT count(*) FROM runs AS o WHERE building AND NOT EXISTS (SELECT 1 FROM runs WHERE dst=o.t)",
         "a merge has no inputs"},
        {"SELECT count(*) FROM runs AS i WHERE dst AND NOT EXISTS (SELECT 1 FROM runs WHERE t=i.dst AND building "
         "AND kind=i.kind)",
         "a run feeds a merge that is not there"},
    };
    *why = NULL;
    for (size_t k = 0; k < sizeof checks / sizeof checks[0] && !*why; k++) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, checks[k][0], -1, &st, NULL) != SQLITE_OK)
            return pf_idset_db_err(db, file, "check the runs", err);
        int r = sqlite3_step(st);
        int64_t bad = r == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
        sqlite3_finalize(st);
        if (r != SQLITE_ROW)
            return pf_idset_db_err(db, file, "check the runs", err);
        if (bad)
            *why = checks[k][1];
    }
    return *why ? 0 : 1;
}

int pf_idset_open(sqlite3 *db, const char *file, int kind, pf_idset **set, pf_err *err)
{
    *set = NULL;
    pf_idset *s = calloc(1, sizeof *s);
    if (!s || !(s->file = strdup(file))) {
        free(s);
        return pf_errf(err, "%s: out of memory", file);
    }
    s->db = db;
    s->kind = kind;
    if (load_runs(s, err)) {
        pf_idset_close(s);
        return -1;
    }
    *set = s;
    return 0;
}

void pf_idset_close(pf_idset *s)
{
    if (!s)
        return;
    sqlite3_finalize(s->probe);
    for (size_t i = 0; i < s->n_runs; i++)
        run_free(&s->runs[i]);
    pf_keyset_free(&s->pend);
    free(s->runs);
    free(s->file);
    free(s);
}

/* A new run's table and registry row (T: its number; pushed onto s->runs, which may move). */
static int new_run(pf_idset *s, int lvl, int building, int64_t *t, pf_err *err)
{
    sqlite3_stmt *st = NULL;
    if (PF_GROW(s->runs, s->cap_runs, s->n_runs, 1, 16))
        return pf_errf(err, "%s: out of memory", s->file);
    if (sqlite3_prepare_v2(s->db, "INSERT INTO runs(kind, n, dst, lvl, building) VALUES(?, 0, 0, ?, ?)", -1, &st,
                           NULL) != SQLITE_OK)
        return pf_idset_db_err(s->db, s->file, "register a run", err);
    sqlite3_bind_int(st, 1, s->kind);
    sqlite3_bind_int(st, 2, lvl);
    sqlite3_bind_int(st, 3, building);
    int r = sqlite3_step(st);
    sqlite3_finalize(st);
    if (r != SQLITE_DONE)
        return pf_idset_db_err(s->db, s->file, "register a run", err);
    *t = sqlite3_last_insert_rowid(s->db);
    char sql[96];
    snprintf(sql, sizeof sql, "CREATE TABLE run%lld(id BLOB PRIMARY KEY) WITHOUT ROWID", (long long)*t);
    if (exec(s, sql, err))
        return -1;
    s->runs[s->n_runs++] = (run){*t, 0, 0, lvl, building, NULL, 0, NULL};
    return 0;
}

/* Registry row T: n += DN; with SET_LVL >= 0 also lvl = SET_LVL and building = 0 (a merge's end). */
static int update_run(pf_idset *s, int64_t t, int64_t dn, int set_lvl, pf_err *err)
{
    sqlite3_stmt *st = NULL;
    int ends = set_lvl >= 0;
    if (sqlite3_prepare_v2(s->db,
                           ends ? "UPDATE runs SET n=n+?1, lvl=?3, building=0 WHERE t=?2"
                                : "UPDATE runs SET n=n+?1 WHERE t=?2",
                           -1, &st, NULL) != SQLITE_OK)
        return pf_idset_db_err(s->db, s->file, "update a run", err);
    sqlite3_bind_int64(st, 1, dn);
    sqlite3_bind_int64(st, 2, t);
    if (ends)
        sqlite3_bind_int(st, 3, set_lvl);
    int r = sqlite3_step(st);
    sqlite3_finalize(st);
    return r == SQLITE_DONE ? 0 : pf_idset_db_err(s->db, s->file, "update a run", err);
}

static int cmp_id(const void *a, const void *b)
{
    const pf_rec_id *x = a, *y = b;
    if (x->hi != y->hi)
        return x->hi < y->hi ? -1 : 1;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* The open batch, sorted, as a new live run (written in order: its pages are filled one after the other). */
static int write_run(pf_idset *s, pf_err *err)
{
    size_t k = pf_keyset_size(&s->pend);
    if (!k)
        return 0;
    pf_rec_id *v = malloc(k * sizeof *v);
    if (!v)
        return pf_errf(err, "%s: out of memory", s->file);
    uint64_t hi, lo;
    for (size_t pos = 0, i = 0; pf_keyset_next(&s->pend, &pos, &hi, &lo); i++)
        v[i] = (pf_rec_id){hi, lo};
    qsort(v, k, sizeof *v, cmp_id);   /* pf_rec_id_bytes is big-endian: this is the B-tree's order */
    int64_t t;
    sqlite3_stmt *st = NULL;
    char sql[64];
    int rc = new_run(s, level_of((int64_t)k), 0, &t, err);
    if (!rc) {
        snprintf(sql, sizeof sql, "INSERT INTO run%lld(id) VALUES(?)", (long long)t);
        if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
            rc = pf_idset_db_err(s->db, s->file, "write a run", err);
    }
    for (size_t i = 0; !rc && i < k; i++) {
        unsigned char b[16];
        pf_rec_id_bytes(v[i], b);
        sqlite3_bind_blob(st, 1, b, 16, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = pf_idset_db_err(s->db, s->file, "write a run", err);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    if (!rc && k <= FILTER_MAX) {
        run *u = &s->runs[s->n_runs - 1];
        filter_new(u, (int64_t)k);
        for (size_t i = 0; u->filter && i < k; i++)
            filter_add(u, v[i]);
    }
    free(v);
    if (rc || update_run(s, t, (int64_t)k, -1, err))
        return -1;
    s->runs[s->n_runs - 1].n = (int64_t)k;
    s->probe_stale = 1;
    pf_keyset_clear(&s->pend, PEND_KEEP);
    return 0;
}

/* ---- lookups ---- */

/* One statement probing every live run, newest first (a redone item is most often a recent one). */
static int build_probe(pf_idset *s, pf_err *err)
{
    sqlite3_finalize(s->probe);
    s->probe = NULL;
    s->probe_stale = 0;
    size_t live = 0;
    for (size_t i = 0; i < s->n_runs; i++)
        live += !s->runs[i].building && !s->runs[i].filter;
    if (!live)
        return 0;
    size_t cap = live * 64 + 16, k = 0;
    char *sql = malloc(cap);
    if (!sql)
        return pf_errf(err, "%s: out of memory", s->file);
    for (size_t i = s->n_runs; i-- > 0;)
        if (!s->runs[i].building && !s->runs[i].filter)
            k += (size_t)snprintf(sql + k, cap - k, "%sSELECT 1 FROM run%lld WHERE id=?1", k ? " UNION ALL " : "",
                                  (long long)s->runs[i].t);
    snprintf(sql + k, cap - k, " LIMIT 1");
    int r = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->probe, NULL);
    free(sql);
    if (r != SQLITE_OK) {
        s->probe_stale = 1;
        return pf_idset_db_err(s->db, s->file, "prepare the lookup", err);
    }
    return 0;
}

/* The runs with a filter: only those it lets ID through are probed, each with its own statement. */
static int probe_filtered(pf_idset *s, pf_rec_id id, const unsigned char b[16], pf_err *err)
{
    for (size_t i = s->n_runs; i-- > 0;) {
        run *u = &s->runs[i];
        if (u->building || !u->filter || !filter_maybe(u, id))
            continue;
        if (!u->one) {
            char sql[64];
            snprintf(sql, sizeof sql, "SELECT 1 FROM run%lld WHERE id=?1", (long long)u->t);
            if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &u->one, NULL) != SQLITE_OK)
                return pf_idset_db_err(s->db, s->file, "prepare a lookup", err);
        }
        sqlite3_bind_blob(u->one, 1, b, 16, SQLITE_STATIC);
        int r = sqlite3_step(u->one);
        sqlite3_reset(u->one);
        sqlite3_clear_bindings(u->one);
        if (r == SQLITE_ROW)
            return 1;
        if (r != SQLITE_DONE)
            return pf_idset_db_err(s->db, s->file, "lookup", err);
    }
    return 0;
}

static int probe(pf_idset *s, pf_rec_id id, pf_err *err)
{
    unsigned char b[16];
    pf_rec_id_bytes(id, b);
    int f = probe_filtered(s, id, b, err);
    if (f)
        return f;
    if (s->probe_stale && build_probe(s, err))
        return -1;
    if (!s->probe)
        return 0;
    sqlite3_bind_blob(s->probe, 1, b, 16, SQLITE_STATIC);
    int r = sqlite3_step(s->probe);
    sqlite3_reset(s->probe);
    sqlite3_clear_bindings(s->probe);   /* B is gone after this return */
    if (r == SQLITE_ROW)
        return 1;
    return r == SQLITE_DONE ? 0 : pf_idset_db_err(s->db, s->file, "lookup", err);
}

int pf_idset_has(pf_idset *s, pf_rec_id id, pf_err *err)
{
    return pf_keyset_has(&s->pend, id.hi, id.lo) ? 1 : probe(s, id, err);
}

static int flush_batch(pf_idset *s, pf_err *err);

int pf_idset_add(pf_idset *s, pf_rec_id id, pf_err *err)
{
    int r = s->bulk ? pf_keyset_has(&s->pend, id.hi, id.lo) : pf_idset_has(s, id, err);
    if (r)
        return r < 0 ? -1 : 0;
    if (pf_keyset_add(&s->pend, id.hi, id.lo) < 0)
        return pf_errf(err, "%s: out of memory for the open batch", s->file);
    if (pf_keyset_size(&s->pend) >= SPILL && flush_batch(s, err))
        return -1;
    return 1;
}

int pf_idset_remove(pf_idset *s, pf_rec_id id, pf_err *err)
{
    if (pf_keyset_remove(&s->pend, id.hi, id.lo))
        return 1;
    unsigned char b[16];
    pf_rec_id_bytes(id, b);
    int removed = 0;
    for (size_t k = 0; k < s->n_runs; k++) {   /* rare (compaction): a statement per run is fine */
        char sql[64];
        sqlite3_stmt *st = NULL;
        snprintf(sql, sizeof sql, "DELETE FROM run%lld WHERE id=?", (long long)s->runs[k].t);
        if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
            return pf_idset_db_err(s->db, s->file, "remove", err);
        sqlite3_bind_blob(st, 1, b, 16, SQLITE_STATIC);
        int r = sqlite3_step(st);
        sqlite3_finalize(st);
        if (r != SQLITE_DONE)
            return pf_idset_db_err(s->db, s->file, "remove", err);
        if (sqlite3_changes(s->db) > 0) {
            if (update_run(s, s->runs[k].t, -1, -1, err))
                return -1;
            s->runs[k].n--;
            removed |= !s->runs[k].building;
        }
    }
    return removed;
}

/* ---- merges ---- */

/* Start a merge of the FANOUT oldest idle live runs of level LVL: *B is the index of its output. */
static int start_merge(pf_idset *s, int lvl, size_t *b, pf_err *err)
{
    int64_t t;
    if (new_run(s, lvl, 1, &t, err))
        return -1;
    *b = s->n_runs - 1;
    int taken = 0;
    int64_t total = 0;
    for (size_t i = 0; i < s->n_runs && taken < FANOUT; i++) {
        run *u = &s->runs[i];
        if (u->building || u->dst || u->lvl != lvl)
            continue;
        char sql[80];
        snprintf(sql, sizeof sql, "UPDATE runs SET dst=%lld WHERE t=%lld", (long long)t, (long long)u->t);
        if (exec(s, sql, err))
            return -1;
        u->dst = t;
        total += u->n;
        taken++;
    }
    /* started here, so its output is seen whole: it gets a filter when small enough */
    if (total <= FILTER_MAX)
        filter_new(&s->runs[*b], total);
    return 0;
}

/* The merge into run B is complete: its inputs go, it becomes live (one transaction with its last step). */
static int finish_merge(pf_idset *s, size_t b, pf_err *err)
{
    run out = s->runs[b];
    sqlite3_finalize(s->probe);   /* no statement of ours may be open on a table dropped here */
    s->probe = NULL;
    s->probe_stale = 1;
    size_t k = 0;
    for (size_t i = 0; i < s->n_runs; i++) {
        if (s->runs[i].dst == out.t) {
            char sql[64];
            snprintf(sql, sizeof sql, "DROP TABLE run%lld", (long long)s->runs[i].t);
            run_free(&s->runs[i]);
            if (exec(s, sql, err))
                return -1;
            continue;
        }
        s->runs[k++] = s->runs[i];
    }
    s->n_runs = k;
    char sql[64];
    snprintf(sql, sizeof sql, "DELETE FROM runs WHERE dst=%lld", (long long)out.t);
    int lvl = level_of(out.n);
    if (exec(s, sql, err) || update_run(s, out.t, 0, lvl, err))
        return -1;
    for (size_t i = 0; i < s->n_runs; i++)
        if (s->runs[i].t == out.t) {
            s->runs[i].building = 0;
            s->runs[i].lvl = lvl;
        }
    return 0;
}

/* Add to U's filter the identities of its table after LAST (N_LAST bytes: 0 from the start): those a merge
 * step just copied (pages it just wrote, in the cache). */
static int filter_read_back(pf_idset *s, run *u, const unsigned char *last, int n_last, pf_err *err)
{
    char sql[64];
    sqlite3_stmt *st = NULL;
    snprintf(sql, sizeof sql, "SELECT id FROM run%lld WHERE id>?1", (long long)u->t);
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return pf_idset_db_err(s->db, s->file, "read a merge's output", err);
    sqlite3_bind_blob(st, 1, n_last ? (const void *)last : "", n_last, SQLITE_STATIC);
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW)
        if (sqlite3_column_bytes(st, 0) == 16)
            filter_add(u, pf_rec_id_from_bytes(sqlite3_column_blob(st, 0)));
    sqlite3_finalize(st);
    return r == SQLITE_DONE ? 0 : pf_idset_db_err(s->db, s->file, "read a merge's output", err);
}

/* Copy up to *BUDGET more identities, in order, from the inputs of the merge into run B (the next ones after
 * the largest it holds: it is filled in order); the merge ends when the inputs have no more. */
static int advance(pf_idset *s, size_t b, int64_t *budget, pf_err *err)
{
    int64_t o = s->runs[b].t;
    size_t cap = 160, k = 0, inputs = 0;
    for (size_t i = 0; i < s->n_runs; i++)
        inputs += s->runs[i].dst == o;
    cap += inputs * 64;
    char *sql = malloc(cap);
    if (!sql)
        return pf_errf(err, "%s: out of memory", s->file);
    k += (size_t)snprintf(sql, cap, "INSERT INTO run%lld(id) ", (long long)o);
    int first = 1;
    for (size_t i = 0; i < s->n_runs; i++)
        if (s->runs[i].dst == o) {   /* UNION: a merge of sorted inputs (SQLite's MERGE), equal ids once */
            k += (size_t)snprintf(sql + k, cap - k, "%sSELECT id FROM run%lld WHERE id>?1", first ? "" : " UNION ",
                                  (long long)s->runs[i].t);
            first = 0;
        }
    snprintf(sql + k, cap - k, " ORDER BY 1 LIMIT ?2");
    sqlite3_stmt *cur = NULL, *st = NULL;
    char csql[64];
    snprintf(csql, sizeof csql, "SELECT max(id) FROM run%lld", (long long)o);
    int rc = 0;
    if (sqlite3_prepare_v2(s->db, csql, -1, &cur, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK || sqlite3_step(cur) != SQLITE_ROW)
        rc = pf_idset_db_err(s->db, s->file, "merge runs", err);
    free(sql);
    int64_t copied = 0, limit = *budget;
    unsigned char last[16];
    int n_last = 0;
    if (!rc) {
        /* after the largest identity copied; an empty blob sorts before every identity */
        const void *p = sqlite3_column_blob(cur, 0);
        n_last = p && sqlite3_column_bytes(cur, 0) == 16 ? 16 : 0;
        if (n_last)
            memcpy(last, p, 16);
        sqlite3_bind_blob(st, 1, n_last ? (const void *)last : "", n_last, SQLITE_TRANSIENT);
        sqlite3_reset(cur);   /* closed before its table is written */
        sqlite3_bind_int64(st, 2, limit);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = pf_idset_db_err(s->db, s->file, "merge runs", err);
        else
            copied = sqlite3_changes64(s->db);
    }
    sqlite3_finalize(cur);
    sqlite3_finalize(st);
    if (!rc && copied && s->runs[b].filter)
        rc = filter_read_back(s, &s->runs[b], last, n_last, err);
    if (rc || update_run(s, o, copied, -1, err))
        return -1;
    s->runs[b].n += copied;
    *budget -= copied;
    return copied < limit ? finish_merge(s, b, err) : 0;
}

/* One piece of merge work on the lowest level that has some (small merges first: they keep the number of
 * runs, hence of probes per lookup, low). *DID 0: no merge is due. */
static int merge_step(pf_idset *s, int64_t *budget, int *did, pf_err *err)
{
    *did = 0;
    for (int lvl = 0; lvl < LEVELS_MAX; lvl++) {
        size_t b = SIZE_MAX;
        int idle = 0;
        for (size_t i = 0; i < s->n_runs; i++) {
            const run *u = &s->runs[i];
            if (u->building && u->lvl == lvl)
                b = i;
            else if (!u->building && !u->dst && u->lvl == lvl)
                idle++;
        }
        if (b == SIZE_MAX && idle < FANOUT)
            continue;
        if (b == SIZE_MAX && start_merge(s, lvl, &b, err))
            return -1;
        *did = 1;
        return advance(s, b, budget, err);
    }
    return 0;
}

static int top_level(const pf_idset *s)
{
    int top = 0;
    for (size_t i = 0; i < s->n_runs; i++)
        if (s->runs[i].lvl + 1 > top)
            top = s->runs[i].lvl + 1;
    return top;
}

/* The open batch as a run, and merges by a budget. */
static int flush_batch(pf_idset *s, pf_err *err)
{
    int64_t added = (int64_t)pf_keyset_size(&s->pend);
    if (write_run(s, err))
        return -1;
    /* Each identity is merged once per level: a budget of (levels + 2) per identity added keeps up, with room
     * to catch up; bounded work per commit (a large merge is spread over many). */
    int64_t budget = (top_level(s) + 2) * added;
    if (budget < STEP_MIN)
        budget = STEP_MIN;
    int did = 1;
    while (budget > 0 && did)
        if (merge_step(s, &budget, &did, err))
            return -1;
    return 0;
}

int pf_idset_merge_all(pf_idset *s, pf_err *err)
{
    int did = 1;
    while (did) {
        int64_t budget = INT64_MAX / 2;
        if (merge_step(s, &budget, &did, err))
            return -1;
    }
    return 0;
}

/* Every run into one (after pf_idset_merge_all no merge is under way, and the runs left are a few per level). */
static int merge_everything(pf_idset *s, pf_err *err)
{
    if (pf_idset_merge_all(s, err))
        return -1;
    if (s->n_runs < 2)
        return 0;
    int64_t t;
    if (new_run(s, 0, 1, &t, err))
        return -1;
    char sql[120];
    snprintf(sql, sizeof sql, "UPDATE runs SET dst=%lld WHERE kind=%d AND t<>%lld", (long long)t, s->kind,
             (long long)t);
    if (exec(s, sql, err))
        return -1;
    for (size_t i = 0; i + 1 < s->n_runs; i++)
        s->runs[i].dst = t;
    int64_t budget = INT64_MAX / 2;
    return advance(s, s->n_runs - 1, &budget, err);
}

void pf_idset_set_bulk(pf_idset *s, int bulk) { s->bulk = bulk; }

int pf_idset_flush(pf_idset *s, pf_err *err)
{
    if (flush_batch(s, err))
        return -1;
    return s->bulk ? merge_everything(s, err) : 0;
}

int pf_idset_forget(pf_idset *s, pf_err *err)
{
    pf_keyset_clear(&s->pend, PEND_KEEP);
    sqlite3_finalize(s->probe);
    s->probe = NULL;
    return load_runs(s, err);
}

void pf_idset_get_stats(const pf_idset *s, pf_idset_stats *st)
{
    memset(st, 0, sizeof *st);
    st->pending = (int64_t)pf_keyset_size(&s->pend);
    for (size_t i = 0; i < s->n_runs; i++) {
        if (s->runs[i].building) {
            st->merging++;
            continue;
        }
        st->runs++;
        st->filtered += s->runs[i].filter != NULL;
        st->in_runs += s->runs[i].n;
        if (s->runs[i].lvl + 1 > st->levels)
            st->levels = s->runs[i].lvl + 1;
    }
}
