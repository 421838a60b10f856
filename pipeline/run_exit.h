/* run_exit.h - what `paliflow run` exits with, so a script can tell the outcomes apart:
 *   0    all done: every item has a result record
 *   1    error: the job could not start or continue (model, output or job store unusable)
 *   2    usage: bad or missing options
 *   3    done with failures: the job is complete but some items (maybe all) have error records
 *   130  interrupted (Ctrl-C, SIGTERM): the job state is saved; the same command resumes it
 * The embedded test runner uses the same mapping. */
#ifndef PF_PIPELINE_RUN_EXIT_H
#define PF_PIPELINE_RUN_EXIT_H

#include "pipeline/producer.h"

enum { PF_EXIT_OK = 0, PF_EXIT_ERROR = 1, PF_EXIT_USAGE = 2, PF_EXIT_FAILURES = 3, PF_EXIT_INTERRUPTED = 130 };

#define PF_RUN_EXIT_HELP                                                                                           \
    "Exit status: 0 every file has a result; 3 the job is complete but some (or all) files have error\n"          \
    "records; 130 interrupted (rerun to resume); 2 bad options; 1 the job could not run (model, output, store).\n"

/* RC: pf_embedded_run's (or pf_producer_run's) return value; ST its counts. */
static inline int pf_run_exit_code(int rc, const pf_job_stats *st)
{
    if (rc < 0)
        return PF_EXIT_ERROR;
    if (rc > 0)
        return PF_EXIT_INTERRUPTED;
    return st->failed > 0 ? PF_EXIT_FAILURES : PF_EXIT_OK;
}

#endif
