/* paliflow run: placeholder until issue 5 lands. */
#include "cli/cli_util.h"
#include "cli/commands.h"

int cmd_run(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_not_yet("run", "issue 5");
}
