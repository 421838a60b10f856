/* tokenizer_tables.c - the lookup structures behind the tokenizer: string -> id hash, merge-pair hash,
 * added-token trie, and the huge-page allocator they live in.
 *
 * Why our own open-addressing tables (hashing with xxh3): the vocabulary (257k strings) and the merges
 * (580k pairs) must be built in a few tens of milliseconds at every worker start; flat arrays with linear
 * probing and no per-entry allocation do that, and lookups during BPE cost one or two cache lines.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "model/tokenizer/tokenizer_internal.h"

/* ---- big allocations ----
 * On this kind of VM a 4 KiB page fault costs ~10 us: a 16 MiB table faulted page by page costs ~40 ms,
 * the same table on transparent huge pages ~1 ms. So tables >= 1 MiB get their own mapping, rounded up
 * to whole 2 MiB pages, with MADV_HUGEPAGE (a no-op where THP is disabled). Anonymous mappings come
 * zeroed. */
#define PF_HUGE (2u << 20)

void *pf_tok_big_alloc(size_t size, pf_err *err, const char *what)
{
    if (size == 0)
        size = 1;
    if (size < PF_HUGE / 2) {
        void *p = calloc(1, size);
        if (!p)
            pf_errf(err, "%s: out of memory (%zu bytes)", what, size);
        return p;
    }
    /* huge pages need 2 MiB alignment: map 2 MiB more and trim the ends */
    size_t len = (size + PF_HUGE - 1) & ~(size_t)(PF_HUGE - 1);
    char *raw = mmap(NULL, len + PF_HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        pf_errf(err, "%s: out of memory (%zu bytes)", what, len);
        return NULL;
    }
    char *p = (char *)(((uintptr_t)raw + PF_HUGE - 1) & ~(uintptr_t)(PF_HUGE - 1));
    if (p > raw)
        munmap(raw, (size_t)(p - raw));
    if (raw + len + PF_HUGE > p + len)
        munmap(p + len, (size_t)(raw + len + PF_HUGE - (p + len)));
#ifdef MADV_HUGEPAGE
    madvise(p, len, MADV_HUGEPAGE);
#endif
    return p;
}

void pf_tok_big_free(void *p, size_t size)
{
    if (!p)
        return;
    if (size == 0)
        size = 1;
    if (size < PF_HUGE / 2) {
        free(p);
        return;
    }
    munmap(p, (size + PF_HUGE - 1) & ~(size_t)(PF_HUGE - 1));
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n)
        p <<= 1;
    return p;
}

/* ---- string -> value map ---- */

int pf_tok_strmap_init(pf_tok_strmap *m, size_t expected, pf_err *err, const char *what)
{
    memset(m, 0, sizeof *m);
    size_t slots = pow2_at_least(expected * 2 + 1); /* load <= 0.5 */
    m->bytes = slots * sizeof(uint64_t);
    m->slots = pf_tok_big_alloc(m->bytes, err, what);
    if (!m->slots)
        return -1;
    m->mask = slots - 1;
    return 0;
}

void pf_tok_strmap_free(pf_tok_strmap *m)
{
    pf_tok_big_free(m->slots, m->bytes);
    memset(m, 0, sizeof *m);
}

static inline bool span_eq(const char *pool, const void *spans, size_t stride, uint32_t v, const char *s,
                           size_t len)
{
    const pf_tok_span *sp = (const pf_tok_span *)((const char *)spans + (size_t)v * stride);
    return sp->len == len && memcmp(pool + sp->off, s, len) == 0;
}

int pf_tok_strmap_insert(pf_tok_strmap *m, const char *pool, const void *spans, size_t stride, const char *s,
                         size_t len, uint32_t id, uint32_t *existing)
{
    uint64_t h = XXH3_64bits(s, len);
    uint64_t tag = h >> 32;
    for (size_t i = (size_t)h & m->mask;; i = (i + 1) & m->mask) {
        uint64_t slot = m->slots[i];
        if (slot == 0) {
            m->slots[i] = (tag << 32) | ((uint64_t)id + 1);
            return 1;
        }
        if ((slot >> 32) == tag) {
            uint32_t v = (uint32_t)slot - 1;
            if (span_eq(pool, spans, stride, v, s, len)) {
                *existing = v;
                return 0;
            }
        }
    }
}

int32_t pf_tok_strmap_get(const pf_tok_strmap *m, const char *pool, const void *spans, size_t stride,
                          const char *s, size_t len)
{
    if (!m->slots)
        return -1;
    uint64_t h = XXH3_64bits(s, len);
    uint64_t tag = h >> 32;
    for (size_t i = (size_t)h & m->mask;; i = (i + 1) & m->mask) {
        uint64_t slot = m->slots[i];
        if (slot == 0)
            return -1;
        if ((slot >> 32) == tag) {
            uint32_t v = (uint32_t)slot - 1;
            if (span_eq(pool, spans, stride, v, s, len))
                return (int32_t)v;
        }
    }
}

/* ---- model vocabulary ---- */

uint64_t pf_tok_str_hash(const char *s, size_t len)
{
    return XXH3_64bits(s, len);
}

int pf_tok_vmap_init(pf_tok_vocabmap *m, size_t expected, pf_err *err)
{
    memset(m, 0, sizeof *m);
    size_t slots = pow2_at_least(expected * 2 + 1); /* load <= 0.5 */
    m->bytes = slots * sizeof(pf_tok_vslot);
    m->slots = pf_tok_big_alloc(m->bytes, err, "vocabulary table");
    if (!m->slots)
        return -1;
    m->mask = slots - 1;
    return 0;
}

void pf_tok_vmap_free(pf_tok_vocabmap *m)
{
    pf_tok_big_free(m->slots, m->bytes);
    memset(m, 0, sizeof *m);
}

/* The query's length field and zero-padded prefix, compared with the slot in two fixed-size compares. */
typedef struct vkey {
    uint16_t len;
    char pre[PF_TOK_VPRE];
} vkey;

static inline vkey make_vkey(const char *s, size_t len)
{
    vkey k;
    memset(&k, 0, sizeof k);
    k.len = (uint16_t)(len < 0xFFFF ? len : 0xFFFF);
    memcpy(k.pre, s, len < PF_TOK_VPRE ? len : PF_TOK_VPRE);
    return k;
}

static inline bool vslot_eq(const pf_tok_vslot *sl, const vkey *k, const char *pool, const pf_tok_span *spans,
                            const char *s, size_t len)
{
    if (sl->len != k->len || memcmp(sl->pre, k->pre, PF_TOK_VPRE) != 0)
        return false;
    if (len <= PF_TOK_VPRE)
        return true;
    const pf_tok_span *sp = &spans[sl->idp1 - 1];
    return sp->len == len && memcmp(pool + sp->off + PF_TOK_VPRE, s + PF_TOK_VPRE, len - PF_TOK_VPRE) == 0;
}

int32_t pf_tok_vmap_find(const pf_tok_vocabmap *m, const char *pool, const pf_tok_span *spans, uint64_t h,
                         const char *s, size_t len)
{
    vkey k = make_vkey(s, len);
    for (size_t i = (size_t)h & m->mask;; i = (i + 1) & m->mask) {
        const pf_tok_vslot *sl = &m->slots[i];
        if (sl->idp1 == 0)
            return -1;
        if (vslot_eq(sl, &k, pool, spans, s, len))
            return (int32_t)(sl->idp1 - 1);
    }
}

int pf_tok_vmap_insert(pf_tok_vocabmap *m, const char *pool, const pf_tok_span *spans, uint64_t h,
                       const char *s, size_t len, uint32_t id, uint32_t *existing)
{
    vkey k = make_vkey(s, len);
    for (size_t i = (size_t)h & m->mask;; i = (i + 1) & m->mask) {
        pf_tok_vslot *sl = &m->slots[i];
        if (sl->idp1 == 0) {
            sl->idp1 = id + 1;
            sl->len = k.len;
            memcpy(sl->pre, k.pre, PF_TOK_VPRE);
            return 1;
        }
        if (vslot_eq(sl, &k, pool, spans, s, len)) {
            *existing = sl->idp1 - 1;
            return 0;
        }
    }
}

/* ---- merge pairs ---- */

int pf_tok_merges_init(pf_tok_merges *m, size_t expected, pf_err *err)
{
    memset(m, 0, sizeof *m);
    size_t slots = pow2_at_least(expected + expected / 2 + 1); /* load <= ~0.67 */
    m->bytes = slots * sizeof(pf_tok_merge_slot);
    m->slots = pf_tok_big_alloc(m->bytes, err, "merges table");
    if (!m->slots)
        return -1;
    m->mask = slots - 1;
    return 0;
}

void pf_tok_merges_free(pf_tok_merges *m)
{
    pf_tok_big_free(m->slots, m->bytes);
    memset(m, 0, sizeof *m);
}

void pf_tok_merges_put(pf_tok_merges *m, int32_t a, int32_t b, uint32_t rank, int32_t new_id)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (size_t i = (size_t)pf_tok_pair_hash(key) & m->mask;; i = (i + 1) & m->mask) {
        pf_tok_merge_slot *s = &m->slots[i];
        if (s->key == 0) {
            s->key = key + 1;
            s->rank = rank;
            s->new_id = new_id;
            m->count++;
            return;
        }
        if (s->key == key + 1) {
            s->rank = rank;
            s->new_id = new_id;
            return;
        }
    }
}

/* ---- trie ---- */

typedef struct build_node {
    uint32_t first_child, next_sibling;
    uint8_t byte;
    int32_t value;
} build_node;

static int cmp_edge(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    return (*x > *y) - (*x < *y);
}

int pf_tok_trie_build(pf_tok_trie *t, const char *const *pats, const size_t *lens, const int32_t *values,
                      size_t n, pf_err *err)
{
    memset(t, 0, sizeof *t);
    t->empty = (n == 0);
    size_t total = 1;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] > UINT32_MAX - total)
            return pf_errf(err, "added tokens: patterns too long in total");
        total += lens[i];
    }
    build_node *nodes = malloc(total * sizeof *nodes);
    uint64_t *tmp = NULL;
    if (!nodes)
        return pf_errf(err, "added tokens: out of memory building the matcher");
    uint32_t count = 1;
    nodes[0] = (build_node){0, 0, 0, -1};
    for (size_t i = 0; i < n; i++) {
        uint32_t cur = 0;
        for (size_t k = 0; k < lens[i]; k++) {
            uint8_t c = (uint8_t)pats[i][k];
            uint32_t ch = nodes[cur].first_child;
            while (ch && nodes[ch].byte != c)
                ch = nodes[ch].next_sibling;
            if (!ch) {
                ch = count++;
                nodes[ch] = (build_node){0, nodes[cur].first_child, c, -1};
                nodes[cur].first_child = ch;
            }
            cur = ch;
        }
        if (nodes[cur].value < 0) /* equal patterns: the first one wins, as in aho-corasick */
            nodes[cur].value = values[i];
    }
    t->n_nodes = count;
    t->edge_start = malloc(((size_t)count + 1) * sizeof(uint32_t));
    t->edge_byte = malloc(count);
    t->edge_to = malloc((size_t)count * sizeof(uint32_t));
    t->value = malloc((size_t)count * sizeof(int32_t));
    tmp = malloc((size_t)count * sizeof(uint64_t));
    if (!t->edge_start || !t->edge_byte || !t->edge_to || !t->value || !tmp) {
        free(nodes);
        free(tmp);
        pf_tok_trie_free(t);
        return pf_errf(err, "added tokens: out of memory building the matcher");
    }
    uint32_t e = 0;
    for (uint32_t i = 0; i < count; i++) {
        t->value[i] = nodes[i].value;
        t->edge_start[i] = e;
        size_t m = 0;
        for (uint32_t ch = nodes[i].first_child; ch; ch = nodes[ch].next_sibling)
            tmp[m++] = ((uint64_t)nodes[ch].byte << 32) | ch;
        qsort(tmp, m, sizeof *tmp, cmp_edge);
        for (size_t k = 0; k < m; k++) {
            t->edge_byte[e] = (uint8_t)(tmp[k] >> 32);
            t->edge_to[e] = (uint32_t)tmp[k];
            if (i == 0)
                t->root[t->edge_byte[e]] = t->edge_to[e];
            e++;
        }
    }
    t->edge_start[count] = e;
    free(nodes);
    free(tmp);
    return 0;
}

void pf_tok_trie_free(pf_tok_trie *t)
{
    free(t->edge_start);
    free(t->edge_byte);
    free(t->edge_to);
    free(t->value);
    memset(t, 0, sizeof *t);
}

static inline uint32_t trie_child(const pf_tok_trie *t, uint32_t node, uint8_t c)
{
    uint32_t lo = t->edge_start[node], hi = t->edge_start[node + 1];
    while (hi - lo > 8) { /* narrow to a window that still holds the first edge >= c */
        uint32_t mid = lo + (hi - lo) / 2;
        if (t->edge_byte[mid] < c)
            lo = mid + 1;
        else
            hi = mid + 1;
    }
    for (; lo < hi; lo++) {
        if (t->edge_byte[lo] == c)
            return t->edge_to[lo];
        if (t->edge_byte[lo] > c)
            break;
    }
    return 0;
}

bool pf_tok_trie_find(const pf_tok_trie *t, const uint8_t *s, size_t len, size_t from, size_t *ms, size_t *me,
                      int32_t *value)
{
    if (t->empty)
        return false;
    for (size_t i = from; i < len; i++) {
        uint32_t node = t->root[s[i]];
        if (!node)
            continue;
        int32_t best = -1;
        size_t best_end = 0, j = i + 1;
        for (;;) {
            if (t->value[node] >= 0) {
                best = t->value[node];
                best_end = j;
            }
            if (j >= len)
                break;
            node = trie_child(t, node, s[j]);
            if (!node)
                break;
            j++;
        }
        if (best >= 0) {
            *ms = i;
            *me = best_end;
            *value = best;
            return true;
        }
    }
    return false;
}
