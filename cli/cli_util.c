#include "cli/cli_util.h"

#include <stdio.h>
#include <string.h>

int cli_not_yet(const char *command, const char *tracking)
{
    fprintf(stderr, "paliflow %s: not implemented yet (%s)\n", command, tracking);
    return 2;
}

int cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    return 0;
}
