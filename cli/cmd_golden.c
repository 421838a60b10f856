/* paliflow golden: placeholder until issue 8 lands. */
#include "cli/cli_util.h"
#include "cli/commands.h"

int cmd_golden(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_not_yet("golden", "issue 8");
}
