/* processor.c - PaliGemmaProcessor's prompt strings, pair tokenization, labels and padding. */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/grow.h"
#include "model/tokenizer/processor.h"

static const char IMAGE[] = "<image>", BOS[] = "<bos>", EOS[] = "<eos>", PAD[] = "<pad>";
#define IMAGE_LEN (sizeof IMAGE - 1)

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static int sb_add(sbuf *b, const char *s, size_t len, pf_err *err)
{
    if (len == 0)
        return 0;
    if (PF_GROW(b->p, b->cap, b->n, len, 256))
        return pf_errf(err, "processor: out of memory for a prompt of %zu + %zu bytes", b->n, len);
    memcpy(b->p + b->n, s, len);
    b->n += len;
    return 0;
}

static int sb_repeat(sbuf *b, const char *s, size_t len, size_t times, pf_err *err)
{
    for (size_t i = 0; i < times; i++)
        if (sb_add(b, s, len, err) != 0)
            return -1;
    return 0;
}

static bool has_image(pf_proc_text t)
{
    return t.s && memmem(t.s, t.len, IMAGE, IMAGE_LEN) != NULL;
}

/* The prompt string of one row (see processor.h). */
static int prompt_string(pf_proc_text prompt, bool any_image, int image_seq_len, int num_images, sbuf *b,
                         pf_err *err)
{
    const char *p = prompt.s ? prompt.s : "";
    size_t len = prompt.s ? prompt.len : 0;
    b->n = 0;
    if (!any_image) {
        if ((int64_t)image_seq_len * num_images > PF_PROC_MAX_IMAGE_TOKENS)
            return pf_errf(err, "processor: %d x %d image tokens is more than the limit of %d", image_seq_len,
                           num_images, PF_PROC_MAX_IMAGE_TOKENS);
        if (sb_repeat(b, IMAGE, IMAGE_LEN, (size_t)image_seq_len * (size_t)num_images, err) != 0 ||
            sb_add(b, BOS, sizeof BOS - 1, err) != 0 || sb_add(b, p, len, err) != 0 ||
            sb_add(b, "\n", 1, err) != 0)
            return -1;
        return 0;
    }
    /* sample.replace("<image>", "<image>" * image_seq_len) */
    size_t count = 0;
    for (const char *q = p; (q = memmem(q, len - (size_t)(q - p), IMAGE, IMAGE_LEN)) != NULL; q += IMAGE_LEN)
        count++;
    if ((uint64_t)count * (uint64_t)image_seq_len > PF_PROC_MAX_IMAGE_TOKENS)
        return pf_errf(err, "processor: %zu x %d image tokens is more than the limit of %d", count,
                       image_seq_len, PF_PROC_MAX_IMAGE_TOKENS);
    sbuf e = {0};
    size_t i = 0;
    while (i < len) {
        const char *hit = memmem(p + i, len - i, IMAGE, IMAGE_LEN);
        size_t at = hit ? (size_t)(hit - p) : len;
        if (sb_add(&e, p + i, at - i, err) != 0)
            goto fail;
        if (!hit)
            break;
        if (sb_repeat(&e, IMAGE, IMAGE_LEN, (size_t)image_seq_len, err) != 0)
            goto fail;
        i = at + IMAGE_LEN;
    }
    /* bos after the last "<image>" of the expanded string (rfind), or at 0 */
    size_t bos_at = 0;
    for (size_t k = e.n >= IMAGE_LEN ? e.n - IMAGE_LEN + 1 : 0; k-- > 0;) {
        if (memcmp(e.p + k, IMAGE, IMAGE_LEN) == 0) {
            bos_at = k + IMAGE_LEN;
            break;
        }
    }
    if (sb_add(b, e.p, bos_at, err) != 0 || sb_add(b, BOS, sizeof BOS - 1, err) != 0 ||
        sb_add(b, e.p + bos_at, e.n - bos_at, err) != 0 || sb_add(b, "\n", 1, err) != 0)
        goto fail;
    free(e.p);
    return 0;
fail:
    free(e.p);
    return -1;
}

/* ids of (prompt string, suffix): *n_prefix is the number of ids of the prompt string. */
static int row_ids(const pf_tokenizer *tok, pf_proc_text prompt, const pf_proc_text *suffix, bool any_image,
                   int image_seq_len, int num_images, sbuf *b, pf_ids *ids, size_t *n_prefix, pf_err *err)
{
    if (image_seq_len < 0 || num_images < 0)
        return pf_errf(err, "processor: image_seq_len and num_images must be >= 0 (got %d, %d)",
                       image_seq_len, num_images);
    if (prompt_string(prompt, any_image, image_seq_len, num_images, b, err) != 0)
        return -1;
    ids->n = 0;
    if (pf_tokenizer_encode(tok, b->p, b->n, ids, err) != 0)
        return pf_err_prefix(err, "processor: prompt");
    *n_prefix = ids->n;
    if (suffix && suffix->s) {
        b->n = 0;
        if (sb_add(b, suffix->s, suffix->len, err) != 0 ||
            (!any_image && sb_add(b, EOS, sizeof EOS - 1, err) != 0))
            return -1;
        if (pf_tokenizer_encode(tok, b->p, b->n, ids, err) != 0)
            return pf_err_prefix(err, "processor: suffix");
    }
    return 0;
}

int pf_processor_build_n(const pf_tokenizer *tok, pf_proc_text prompt, pf_proc_text suffix, int image_seq_len,
                         int num_images, pf_proc_row *out, pf_err *err)
{
    memset(out, 0, sizeof *out);
    sbuf b = {0};
    size_t n_prefix;
    int rc = row_ids(tok, prompt, &suffix, has_image(prompt), image_seq_len, num_images, &b, &out->input_ids,
                     &n_prefix, err);
    free(b.p);
    if (rc != 0) {
        pf_proc_row_free(out);
        return -1;
    }
    if (suffix.s) {
        size_t n = out->input_ids.n;
        out->has_suffix = 1;
        if (pf_ids_reserve(&out->token_type_ids, n, err) != 0 || pf_ids_reserve(&out->labels, n, err) != 0) {
            pf_proc_row_free(out);
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            out->token_type_ids.v[i] = i < n_prefix ? 0 : 1;
            out->labels.v[i] = i < n_prefix ? -100 : out->input_ids.v[i];
        }
        out->token_type_ids.n = out->labels.n = n;
    }
    return 0;
}

int pf_processor_build(const pf_tokenizer *tok, const char *prompt, const char *suffix, int image_seq_len,
                       int num_images, pf_proc_row *out, pf_err *err)
{
    pf_proc_text p = {prompt ? prompt : "", prompt ? strlen(prompt) : 0};
    pf_proc_text s = {suffix, suffix ? strlen(suffix) : 0};
    return pf_processor_build_n(tok, p, s, image_seq_len, num_images, out, err);
}

void pf_proc_row_free(pf_proc_row *row)
{
    if (!row)
        return;
    pf_ids_free(&row->input_ids);
    pf_ids_free(&row->token_type_ids);
    pf_ids_free(&row->labels);
    row->has_suffix = 0;
}

int pf_processor_build_batch(const pf_tokenizer *tok, const pf_proc_text *prompts,
                             const pf_proc_text *suffixes, size_t n, int image_seq_len, const int *num_images,
                             pf_proc_pad_side side, pf_proc_batch *out, pf_err *err)
{
    memset(out, 0, sizeof *out);
    int32_t pad_id = pf_tokenizer_token_to_id(tok, PAD);
    if (pad_id < 0)
        return pf_errf(err, "processor: the tokenizer has no %s token", PAD);
    bool any_image = false;
    for (size_t i = 0; i < n; i++)
        any_image = any_image || has_image(prompts[i]);
    if (suffixes)
        for (size_t i = 0; i < n; i++)
            if (!suffixes[i].s)
                return pf_errf(err, "processor: suffixes[%zu] is missing (suffixes must all be strings)", i);

    pf_ids *ids = calloc(n ? n : 1, sizeof *ids);
    size_t *npre = calloc(n ? n : 1, sizeof *npre);
    sbuf b = {0};
    int rc = -1;
    if (!ids || !npre) {
        pf_errf(err, "processor: out of memory");
        goto out;
    }
    size_t cols = 0;
    for (size_t i = 0; i < n; i++) {
        if (row_ids(tok, prompts[i], suffixes ? &suffixes[i] : NULL, any_image, image_seq_len,
                    num_images ? num_images[i] : 1, &b, &ids[i], &npre[i], err) != 0) {
            pf_err_prefix(err, "row %zu", i);
            goto out;
        }
        if (ids[i].n > cols)
            cols = ids[i].n;
    }
    if (n && cols > SIZE_MAX / sizeof(int32_t) / n) {
        pf_errf(err, "processor: batch too large");
        goto out;
    }
    size_t cells = n * cols;
    out->rows = n;
    out->cols = cols;
    out->has_suffix = suffixes != NULL;
    out->input_ids = malloc((cells ? cells : 1) * sizeof(int32_t));
    out->attention_mask = malloc((cells ? cells : 1) * sizeof(int32_t));
    if (suffixes) {
        out->token_type_ids = malloc((cells ? cells : 1) * sizeof(int32_t));
        out->labels = malloc((cells ? cells : 1) * sizeof(int32_t));
    }
    if (!out->input_ids || !out->attention_mask || (suffixes && (!out->token_type_ids || !out->labels))) {
        pf_errf(err, "processor: out of memory for a %zu x %zu batch", n, cols);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = ids[i].n, padn = cols - len;
        size_t first = side == PF_PROC_PAD_LEFT ? padn : 0; /* column of the first real token */
        for (size_t c = 0; c < cols; c++) {
            size_t at = i * cols + c;
            bool real = c >= first && c < first + len;
            size_t k = c - first;
            out->input_ids[at] = real ? ids[i].v[k] : pad_id;
            out->attention_mask[at] = real ? 1 : 0;
            if (suffixes) {
                int32_t type = real && k >= npre[i] ? 1 : 0;
                out->token_type_ids[at] = type;
                out->labels[at] = type ? ids[i].v[k] : -100;
            }
        }
    }
    rc = 0;
out:
    if (ids)
        for (size_t i = 0; i < n; i++)
            pf_ids_free(&ids[i]);
    free(ids);
    free(npre);
    free(b.p);
    if (rc != 0)
        pf_proc_batch_free(out);
    return rc;
}

void pf_proc_batch_free(pf_proc_batch *b)
{
    if (!b)
        return;
    free(b->input_ids);
    free(b->attention_mask);
    free(b->token_type_ids);
    free(b->labels);
    memset(b, 0, sizeof *b);
}
