/* record.h - the record of an item, as the sink writes it (one JSON line, PROTOCOL.md "Records") and
 * publishes it (the same fields as a msgpack map with "v" and "type": "record"), made from a worker's
 * `result` or an `error` message. */
#ifndef PF_PIPELINE_RECORD_H
#define PF_PIPELINE_RECORD_H

#include <jansson.h>
#include <msgpack.h>

#include "proto/proto.h"

/* The record of M (PF_MSG_RESULT or PF_MSG_ERROR), fields in file order: path (path_b64), key, task, then
 * text, boxes (detect prompts), objects and note (segment prompts), ids, stopped_by_eos, or error; image,
 * attempt, timings, workers. Strings that are not valid UTF-8 (file names, decoded bytes) get U+FFFD for
 * each invalid byte; a path that is not also gets `path_b64`, the base64 of its raw bytes (PROTOCOL.md
 * "Records"). */
json_t *pf_record_make(const pf_msg *m);

/* The raw path bytes of a record read back (malloc'd, NUL-terminated): `path_b64` decoded when present,
 * else `path`. What every reader of records must use as the item's identity (the sink's dedupe at start,
 * the reconciliation of output and job store): `path` alone is lossy. -1 when neither is usable. */
int pf_record_path(const json_t *rec, char **path);

/* Append REC, wrapped as {"v": 1, "type": "record", ...}, to SB as one msgpack map (what the PUB socket
 * carries). */
void pf_record_pack(const json_t *rec, msgpack_sbuffer *sb);

#endif
