/* stage_preprocess.c - the preprocess stage: image bytes (or a shared-storage path) -> uint8 [S,S,3].
 * Decoding, EXIF, pixel limits, the decode memory budget and the Pillow-exact resize are the image
 * library's (image/image.h). */
#include "workers/stages.h"


#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "image/image.h"

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_init_rc;
static pf_err g_init_err;

static void init_once(void) { g_init_rc = pf_img_init(&g_init_err); }

typedef struct pre_inst {
    pf_preprocess_params cfg;
} pre_inst;

static void *pre_create(const void *cfg, pf_err *err)
{
    pthread_once(&g_once, init_once);
    if (g_init_rc) {
        pf_errf(err, "%s", g_init_err.msg);
        return NULL;
    }
    pre_inst *p = calloc(1, sizeof *p);
    if (!p) {
        pf_errf(err, "out of memory");
        return NULL;
    }
    if (cfg)
        p->cfg = *(const pf_preprocess_params *)cfg;
    if (!p->cfg.max_pixels)
        p->cfg.max_pixels = PF_IMG_DEFAULT_MAX_PIXELS;
    return p;
}

static void pre_destroy(void *inst) { free(inst); }

static void pre_process(void *inst, pf_work *w)
{
    pre_inst *p = inst;
    const void *bytes = w->in.data;
    size_t len = w->in.data_len;
    char *owned = NULL;
    pf_err e = {{0}};
    if (w->in.path_only) {
        double t = pf_now();
        /* Read into memory, never mapped (a file truncated while mapped raises SIGBUS and kills every
         * thread), opened without blocking and refused unless a regular file (a FIFO swapped in for the
         * image would otherwise hang this thread in open() for good). A file larger than the whole decode
         * budget could never be decoded: refused before it is read. */
        uint64_t budget = pf_img_budget_total(p->cfg.budget);
        size_t cap = budget && budget < PF_IMG_MAX_FILE_BYTES ? (size_t)budget : PF_IMG_MAX_FILE_BYTES;
        pf_file_fault fault;
        /* `file` is the producer's canonical absolute path: a relative `path` would be read from this
         * worker's working folder, not the producer's */
        const char *file = w->in.file && *w->in.file ? w->in.file : w->in.path;
        if (pf_read_file_safe(file, cap, &owned, &len, &fault, &e)) {
            /* Missing, unreadable or changing while read: maybe this host lacks the mount or the file is
             * being written; let another try decide (bounded by --max-attempts). Not a file, or too big:
             * the same on every host. */
            int final = fault == PF_FILE_NOT_REGULAR || fault == PF_FILE_TOO_BIG;
            pf_work_fail(w, final ? PF_WORK_FAILED : PF_WORK_RETRY, "%s%s", e.msg,
                         fault == PF_FILE_TOO_BIG && budget ? " (the decode memory budget, --decode-memory-mb)" : "");
            /* Cannot open it: our host's view of the shared storage (a missing mount, another working
             * folder). The producer believes that only if it sees the file itself. */
            w->worker_fault = fault == PF_FILE_IO;
            return;
        }
        bytes = owned;
        w->read_s = pf_now() - t;
        /* the producer only stat'ed the file: the bytes' key is made here, where they are read */
        if (pf_item_content_key(owned ? owned : "", len, w->in.key, w->content_key))
            w->content_key[0] = '\0';
    }
    pf_img_params opts = {.size = w->in.image_size,
                        .autorotate = w->in.task.autorotate,
                        .max_pixels = p->cfg.max_pixels,
                        .budget = p->cfg.budget};
    pf_img img;
    memset(&img, 0, sizeof img);
    pf_img_errkind kind = PF_IMG_OK;
    if (pf_img_load_buffer(bytes ? bytes : "", len, w->in.path, &opts, &img, &kind, &e)) {
        /* bad input is final; I/O and internal trouble may pass on another try */
        pf_work_fail(w, kind == PF_IMG_IO || kind == PF_IMG_INTERNAL ? PF_WORK_RETRY : PF_WORK_FAILED, "%s", e.msg);
    } else {
        /* the image's buffer (malloc'd, S*S*3) becomes the work's: no second 150 KB buffer and copy per item */
        w->rgb = img.rgb;
        img.rgb = NULL;
        w->size = img.size;
        w->width = img.orig_width;
        w->height = img.orig_height;
        pf_img_free(&img);
    }
    free(owned);
}

const pf_stage_ops pf_stage_preprocess_ops = {
    .name = "preprocess",
    .create = pre_create,
    .destroy = pre_destroy,
    .process = pre_process,
};

