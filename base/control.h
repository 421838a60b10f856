/* control.h - how a command steers a long-running role (producer, sink, worker): a graceful stop and a
 * reload of the role's options, both requested from signal handlers and acted on by the role's loop. */
#ifndef PF_BASE_CONTROL_H
#define PF_BASE_CONTROL_H

#include <signal.h>

typedef struct pf_control {
    volatile sig_atomic_t *stop;   /* graceful stop once non-zero (NULL: run until done) */
    volatile sig_atomic_t *reload; /* set (by SIGHUP) when the options should be re-read (NULL: never) */
    void (*on_reload)(void *arg);  /* re-reads them into the role's options (only its reloadable fields) */
    void *reload_arg;
} pf_control;

/* A stop was requested. */
int pf_control_stopping(const pf_control *c);
/* When a reload was requested: clear the request, call on_reload and return 1, so that the role can then
 * re-read what it keeps itself (an allow-list, a progress interval); 0 otherwise. */
int pf_control_reload(const pf_control *c);

#endif
