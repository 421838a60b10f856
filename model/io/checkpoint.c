#include "model/io/checkpoint.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/file.h"

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const pf_ckpt_index_entry *)a)->name, ((const pf_ckpt_index_entry *)b)->name);
}

void pf_ckpt_index_free(pf_ckpt_index *ix)
{
    for (size_t i = 0; i < ix->n_shards; i++)
        free(ix->shards[i]);
    free(ix->shards);
    for (size_t i = 0; i < ix->n_entries; i++)
        free(ix->entries[i].name);
    free(ix->entries);
    memset(ix, 0, sizeof *ix);
}

static int plain_file_name(const char *s)
{
    return s[0] != '\0' && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

int pf_ckpt_index_parse(const char *text, size_t len, const char *name, pf_ckpt_index *ix, pf_err *err)
{
    memset(ix, 0, sizeof *ix);
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return pf_errf(err, "%s: not valid JSON (line %d column %d: %s)", name, jerr.line, jerr.column, jerr.text);
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(wm)) {
        json_decref(root);
        return pf_errf(err, "%s: no \"weight_map\" object", name);
    }
    size_t n = json_object_size(wm);
    ix->entries = calloc(n ? n : 1, sizeof *ix->entries);
    ix->shards = calloc(PF_CKPT_MAX_SHARDS, sizeof *ix->shards);
    if (!ix->entries || !ix->shards) {
        json_decref(root);
        pf_ckpt_index_free(ix);
        return pf_errf(err, "%s: out of memory", name);
    }
    const char *key;
    json_t *val;
    int rc = 0;
    json_object_foreach(wm, key, val)
    {
        if (!json_is_string(val) || !plain_file_name(json_string_value(val))) {
            rc = pf_errf(err, "%s: weight_map[\"%s\"]: shard must be a plain file name in the folder", name, key);
            break;
        }
        const char *file = json_string_value(val);
        size_t s = 0;
        while (s < ix->n_shards && strcmp(ix->shards[s], file) != 0)
            s++;
        if (s == ix->n_shards) {
            if (ix->n_shards == PF_CKPT_MAX_SHARDS) {
                rc = pf_errf(err, "%s: more than %d shard files", name, PF_CKPT_MAX_SHARDS);
                break;
            }
            if (!(ix->shards[s] = strdup(file))) {
                rc = pf_errf(err, "%s: out of memory", name);
                break;
            }
            ix->n_shards++;
        }
        if (!(ix->entries[ix->n_entries].name = strdup(key))) {
            rc = pf_errf(err, "%s: out of memory", name);
            break;
        }
        ix->entries[ix->n_entries++].shard = (int)s;
    }
    json_decref(root);
    if (rc == 0 && ix->n_shards == 0)
        rc = pf_errf(err, "%s: weight_map is empty", name);
    if (rc != 0) {
        pf_ckpt_index_free(ix);
        return -1;
    }
    qsort(ix->entries, ix->n_entries, sizeof *ix->entries, cmp_entry);
    return 0;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int open_file(pf_checkpoint *c, const char *name, pf_err *err)
{
    char *path = pf_path_join(c->dir, name);
    if (!path)
        return pf_errf(err, "%s: out of memory", c->dir);
    int rc = pf_st_open(path, &c->files[c->n_files], err);
    free(path);
    if (rc != 0)
        return -1;
    c->total_bytes += c->files[c->n_files].map.size;
    c->n_files++;
    return 0;
}

int pf_checkpoint_open(const char *dir, pf_checkpoint *c, pf_err *err)
{
    memset(c, 0, sizeof *c);
    if (!(c->dir = strdup(dir)))
        return pf_errf(err, "%s: out of memory", dir);
    char *single = pf_path_join(dir, "model.safetensors");
    char *index = pf_path_join(dir, "model.safetensors.index.json");
    int rc = -1;
    if (!single || !index) {
        pf_errf(err, "%s: out of memory", dir);
        goto done;
    }
    if (file_exists(single)) {
        if (!(c->files = calloc(1, sizeof *c->files))) {
            pf_errf(err, "%s: out of memory", dir);
            goto done;
        }
        rc = open_file(c, "model.safetensors", err);
        goto done;
    }
    if (!file_exists(index)) {
        pf_errf(err, "%s: neither model.safetensors nor model.safetensors.index.json found", dir);
        goto done;
    }
    char *text;
    size_t len;
    if (pf_read_file(index, PF_CKPT_MAX_INDEX_BYTES, &text, &len, err) != 0)
        goto done;
    rc = pf_ckpt_index_parse(text, len, index, &c->index, err);
    free(text);
    if (rc != 0)
        goto done;
    rc = -1;
    if (!(c->files = calloc(c->index.n_shards, sizeof *c->files))) {
        pf_errf(err, "%s: out of memory", dir);
        goto done;
    }
    for (size_t s = 0; s < c->index.n_shards; s++)
        if (open_file(c, c->index.shards[s], err) != 0)
            goto done;
    rc = 0;
done:
    free(single);
    free(index);
    if (rc != 0)
        pf_checkpoint_close(c);
    return rc;
}

void pf_checkpoint_close(pf_checkpoint *c)
{
    for (size_t i = 0; i < c->n_files; i++)
        pf_st_close(&c->files[i]);
    free(c->files);
    pf_ckpt_index_free(&c->index);
    free(c->dir);
    memset(c, 0, sizeof *c);
}

const pf_st_tensor *pf_checkpoint_find(const pf_checkpoint *c, const char *name, const char **file_path)
{
    /* The index names the shard; if it lies, fall back to looking in every file. */
    if (c->index.n_entries) {
        pf_ckpt_index_entry key = {.name = (char *)name};
        const pf_ckpt_index_entry *e =
            bsearch(&key, c->index.entries, c->index.n_entries, sizeof key, cmp_entry);
        if (e && (size_t)e->shard < c->n_files) {
            const pf_st_tensor *t = pf_st_find(&c->files[e->shard], name);
            if (t) {
                if (file_path)
                    *file_path = c->files[e->shard].path;
                return t;
            }
        }
    }
    for (size_t i = 0; i < c->n_files; i++) {
        const pf_st_tensor *t = pf_st_find(&c->files[i], name);
        if (t) {
            if (file_path)
                *file_path = c->files[i].path;
            return t;
        }
    }
    return NULL;
}
