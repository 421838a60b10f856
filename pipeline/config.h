/* config.h - what the pipeline commands share: the optional config file, stop signals, generation and
 * log-level options (number parsing is base/option.h).
 *
 * Config file (--config FILE): one option per line, "name = value" or "name" (a flag), '#' starts a
 * comment line; names are the long options of the command without the dashes. The file's options are
 * placed before the command line's, so the command line wins (and repeatable options add up).
 */
#ifndef PF_PIPELINE_CONFIG_H
#define PF_PIPELINE_CONFIG_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/option.h"   /* pf_parse_int, pf_parse_double */

/* Build a new argv with --config FILE expanded in place of itself. *out_argv is malloc'd (free with
 * pf_config_free_argv); argv[0] stays first. */
int pf_config_expand_argv(int argc, char **argv, int *out_argc, char ***out_argv, pf_err *err);
void pf_config_free_argv(int argc, char **argv);


/* SIGINT/SIGTERM set *flag (graceful stop); a second signal exits at once (status 130). SIGPIPE ignored. */
void pf_install_stop_signals(volatile sig_atomic_t *flag);
/* SIGHUP sets *flag (reload the config file where safe: pipeline/service.h). */
void pf_install_reload_signal(volatile sig_atomic_t *flag);

#include "proto/proto.h"

/* Generation settings shared by `producer` and `run`: apply option NAME (without dashes) = VAL to T.
 * Returns 1 if NAME is one of them (0 if not), -1 on a bad value (err says why). */
int pf_task_option(const char *name, const char *val, pf_task *t, pf_err *err);
#define PF_TASK_OPTIONS_HELP                                                                                       \
    "  --max-new-tokens N       tokens to generate at most (default 64)\n"                                        \
    "  --temperature T          0 = greedy (default), > 0 samples\n"                                               \
    "  --top-k K                sample from the K most likely tokens (0 = off)\n"                                  \
    "  --top-p P                nucleus sampling threshold (1 = off)\n"                                            \
    "  --repetition-penalty R   1 = off\n"                                                                         \
    "  --seed N                 sampling seed\n"                                                                   \
    "  --autorotate             apply EXIF orientation before resizing (off: like transformers)\n"

#endif
