/* paliflow producer: placeholder until issue 5 lands. */
#include "cli/cli_util.h"
#include "cli/commands.h"

int cmd_producer(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_not_yet("producer", "issue 5");
}
