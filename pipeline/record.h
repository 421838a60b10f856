/* record.h - the record of an item, as the sink writes it (one JSON line, PROTOCOL.md "Records") and
 * publishes it (the same fields as a msgpack map with "v" and "type": "record"), made from a worker's
 * `result` or an `error` message. */
#ifndef PF_PIPELINE_RECORD_H
#define PF_PIPELINE_RECORD_H

#include <jansson.h>
#include <msgpack.h>

#include "proto/proto.h"

/* The record of M (PF_MSG_RESULT or PF_MSG_ERROR), fields in file order: path, key, task, then text, boxes
 * (detect prompts), objects and note (segment prompts), ids, stopped_by_eos, or error; image, attempt, timings, workers. Strings that are not
 * valid UTF-8 (file names, decoded bytes) get U+FFFD for each invalid byte. */
json_t *pf_record_make(const pf_msg *m);

/* Append REC, wrapped as {"v": 1, "type": "record", ...}, to SB as one msgpack map (what the PUB socket
 * carries). */
void pf_record_pack(const json_t *rec, msgpack_sbuffer *sb);

#endif
