/* signals.h - the signals every long-running command handles the same way: SIGINT/SIGTERM ask for a
 * graceful stop, SIGHUP for a reload of the --config file (base/config_file.h, base/optable.h), SIGPIPE is
 * ignored (a closed socket or pipe is an error return, not a death). The handlers only set flags that the
 * command's loop reads between two iterations. */
#ifndef PF_BASE_SIGNALS_H
#define PF_BASE_SIGNALS_H

#include <signal.h>

/* SIGINT/SIGTERM set *flag (graceful stop); a second signal exits at once (status 130). SIGPIPE ignored. */
void pf_install_stop_signals(volatile sig_atomic_t *flag);
/* SIGHUP sets *flag (reload the config file where safe: pipeline/service.h). */
void pf_install_reload_signal(volatile sig_atomic_t *flag);

#endif
