/* paliflow sink: placeholder until issue 5 lands. */
#include "cli/cli_util.h"
#include "cli/commands.h"

int cmd_sink(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_not_yet("sink", "issue 5");
}
