/* cli_util.h - small helpers shared by the subcommands. */
#ifndef PF_CLI_UTIL_H
#define PF_CLI_UTIL_H

/* For subcommands that are not built yet: say so plainly (and which issue tracks it), exit 2. */
int cli_not_yet(const char *command, const char *tracking);

/* True if argv holds --help or -h. */
int cli_wants_help(int argc, char **argv);

#endif
