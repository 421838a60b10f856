/* image_budget.c - the decode memory budget shared by a process's decoding threads (see image.h).
 *
 * A counter of reserved bytes under a mutex. Requests are served first come, first served (a ticket
 * queue): a large image waiting for room is not overtaken forever by a stream of small ones. Each image
 * reserves once, all it needs, before its pixels are decoded, and never holds a reservation while asking
 * for another, so threads cannot deadlock on the budget: whatever waits is served when the images being
 * decoded finish. A request larger than the whole budget is refused at once (it could never be served). */
#include <pthread.h>
#include <stdlib.h>

#include "image/image_internal.h"

struct pf_img_budget {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t total, used;
    uint64_t next_ticket, serving;
};

pf_img_budget *pf_img_budget_new(uint64_t bytes)
{
    pf_img_budget *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->total = bytes;
    return b;
}

void pf_img_budget_free(pf_img_budget *b)
{
    if (!b)
        return;
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

uint64_t pf_img_budget_total(const pf_img_budget *b) { return b ? b->total : 0; }

uint64_t pf_img_budget_used(pf_img_budget *b)
{
    if (!b)
        return 0;
    pthread_mutex_lock(&b->mu);
    uint64_t u = b->used;
    pthread_mutex_unlock(&b->mu);
    return u;
}

int pf_img_budget_acquire(pf_img_budget *b, uint64_t bytes)
{
    if (!b)
        return 0;
    if (bytes > b->total)
        return -1;
    pthread_mutex_lock(&b->mu);
    uint64_t me = b->next_ticket++;
    while (me != b->serving || b->total - b->used < bytes)
        pthread_cond_wait(&b->cv, &b->mu);
    b->used += bytes;
    b->serving++;
    pthread_cond_broadcast(&b->cv); /* the next ticket may fit too */
    pthread_mutex_unlock(&b->mu);
    return 0;
}

void pf_img_budget_release(pf_img_budget *b, uint64_t bytes)
{
    if (!b || !bytes)
        return;
    pthread_mutex_lock(&b->mu);
    b->used = bytes > b->used ? 0 : b->used - bytes;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}
