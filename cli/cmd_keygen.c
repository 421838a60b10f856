/* paliflow keygen: placeholder until issue 10 lands. */
#include "cli/cli_util.h"
#include "cli/commands.h"

int cmd_keygen(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_not_yet("keygen", "issue 10");
}
