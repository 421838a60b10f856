/* notes.h - the `notes` message (PROTOCOL.md, "How the sink learns the leases"): the lease and unlease notes
 * the producer has for one sink in a turn of its loop, as ONE message of entries applied in order, instead of
 * one message per note (an item costs three notes: two leases and an unlease).
 *
 * The batch is packed as the notes come (each entry once, straight into the message's buffer, under a header
 * written at the first entry); taking it patches the entry count and hands the buffer over for sending, so a
 * note costs no copy and no allocation of its own. Decoding is pf_msg_decode's (proto/msg.c), bounded like
 * every message.
 */
#ifndef PF_PROTO_NOTES_H
#define PF_PROTO_NOTES_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "proto/proto.h"

/* Entries per message at most: well under the decoder's 65536 per array (and 262144 objects: a lease entry is
 * 7); a turn with more sends several messages. */
#define PF_NOTES_BATCH_MAX 1024

/* One entry on the wire: a lease [id, key, path, stage, holder, holder_key|nil], an unlease [id, key]. */
int pf_note_pack(msgpack_packer *pk, const pf_note *n);

typedef struct pf_notes_batch pf_notes_batch;

/* An empty batch for messages from producer run INSTANCE (copied). NULL: out of memory. */
pf_notes_batch *pf_notes_batch_new(const char *instance);
void pf_notes_batch_free(pf_notes_batch *b);
/* Append N (a lease or an unlease, fields as pf_note says). -1: N is not a note, or out of memory (the batch
 * is emptied then: a batch with a note missing must not go out). */
int pf_notes_batch_add(pf_notes_batch *b, const pf_note *n, pf_err *err);
size_t pf_notes_batch_count(const pf_notes_batch *b);
/* Drop every entry (a sink that said hello again hears every lease anew). */
void pf_notes_batch_clear(pf_notes_batch *b);
/* The batch as one `notes` message (*out malloc'd, for pf_wire_send_raw, which frees it); the batch is empty
 * after. -1 when it is empty or out of memory (ERR says). */
int pf_notes_batch_take(pf_notes_batch *b, uint8_t **out, size_t *len, pf_err *err);

#endif
