/* record_line.h - the record of an item as its line of the output file, written straight from the message.
 *
 * Why: the sink wrote each line by building the record with jansson (pf_record_make), dumping it and freeing
 * the tree: about a third of its CPU per record. The line written here is byte for byte what
 * json_dump_callback(pf_record_make(m), JSON_COMPACT) gives, followed by '\n' (tests/pipeline/
 * test_record_line.c and fuzz/fuzz_record_line.c compare the two; debug builds of the sink compare every
 * line it writes): fields in record.h's order, strings escaped and invalid UTF-8 replaced as jansson does,
 * numbers spelled as jansson spells them (json_real.h). The rarer parts whose shape other code decides
 * (a detect prompt's boxes, a segment prompt's objects, the item's meta fields) are still built with jansson
 * and dumped into the line.
 */
#ifndef PF_PIPELINE_RECORD_LINE_H
#define PF_PIPELINE_RECORD_LINE_H

#include <stddef.h>

#include "proto/proto.h"

/* A growing byte buffer (not NUL-terminated): the lines of a batch, one after another. */
typedef struct pf_line_buf {
    char *p;
    size_t n, cap;
} pf_line_buf;

/* Append the record of M (PF_MSG_RESULT or PF_MSG_ERROR) as one line, '\n' included, to B. 0, or -1 out of
 * memory (B then holds what it held before). */
int pf_record_line(const pf_msg *m, pf_line_buf *b);

#endif
