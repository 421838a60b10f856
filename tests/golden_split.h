/* golden_split.h - one cmocka program, two ctest tests: its core checks (need only the repository) run with
 * no argument; its checks that read the golden data run with the argument "golden", registered by
 * pf_split_unit_test through the golden gate (tests/golden_guard.sh: skipped with a reason when the data is
 * absent, failed under CI). So a clone without the data still runs every check that does not need it. */
#ifndef PF_TESTS_GOLDEN_SPLIT_H
#define PF_TESTS_GOLDEN_SPLIT_H

#include <string.h>

/* 1 with "golden" as the first argument (removed from *argc / *argv, so the program sees its own arguments as
 * before), 0 without it. */
static inline int pf_test_golden_group(int *argc, char ***argv)
{
    if (*argc < 2 || strcmp((*argv)[1], "golden") != 0)
        return 0;
    (*argv)[1] = (*argv)[0];
    (*argc)--;
    (*argv)++;
    return 1;
}

#endif
