/* config_file.h - the --config FILE every command takes.
 *
 * The file holds one option per line, "name = value" or "name" (a flag); '#' starts a comment line; a
 * value may be quoted ('...' or "..."). Names are the long options of the command without the dashes. The
 * lines become "--name=value" arguments placed before the command line's, so the command line wins (and
 * repeatable options add up), and the command's option table (base/optable.h) parses them like any other:
 * one parser, one set of messages. A long-running command keeps its original argv and expands it again on
 * SIGHUP to reload the file.
 */
#ifndef PF_BASE_CONFIG_FILE_H
#define PF_BASE_CONFIG_FILE_H

#include "base/err.h"

/* Build a new argv with --config FILE expanded in place of itself. *out_argv is malloc'd (free with
 * pf_config_free_argv); argv[0] stays first. A file over 1 MiB or a line that is not an option is refused,
 * naming the file and line. */
int pf_config_expand_argv(int argc, char **argv, int *out_argc, char ***out_argv, pf_err *err);
void pf_config_free_argv(int argc, char **argv);

#endif
