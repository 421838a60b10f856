/* proto.h - the messages paliflow's roles exchange, and their bounded msgpack codec.
 *
 * Every message is one ZeroMQ frame holding one msgpack map with at least "v" (protocol version) and
 * "t" (message type), optionally followed by a second frame holding an item's or tensor's bulk bytes (the
 * map then says `data_frame`; PROTOCOL.md, "Data frames"). proto/PROTOCOL.md documents every field; this
 * header is the C view of it.
 *
 * Decoding is bounded: pf_mp_validate() walks the raw bytes first and rejects a message whose declared
 * str/bin/array/map sizes exceed the bytes actually present or the configured limits, BEFORE msgpack-c
 * allocates anything (msgpack-c's unpacker reserves an array of the declared size up front). Only a
 * message that passed is handed to msgpack_unpack_next(), whose memory is then bounded by the limits.
 */
#ifndef PF_PROTO_PROTO_H
#define PF_PROTO_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/generation.h"
#include "base/optable.h"

#define PF_PROTO_VERSION 1

/* Limits a decoder enforces. pf_proto_default_limits() gives the values PROTOCOL.md documents. */
typedef struct pf_proto_limits {
    size_t max_msg_bytes;     /* whole message (also ZMQ_MAXMSGSIZE on every socket) */
    uint32_t max_depth;       /* nesting of arrays/maps */
    uint32_t max_container;   /* elements of one array, pairs of one map */
    uint32_t max_objects;     /* objects in the whole message */
    uint32_t max_str;         /* bytes of one str */
    size_t max_bin;           /* bytes of one bin */
} pf_proto_limits;

pf_proto_limits pf_proto_default_limits(void);

/* --max-message-mb N, for every command that talks the protocol: one limit for the whole message and for
 * one bin (the image bytes it carries). F is the command struct's pf_proto_limits (the SIZE row stores
 * max_msg_bytes, its first member; the hook copies it to max_bin). */
int pf_proto_limits_opt_hook(const pf_opt *opt, void *lim, const char *val, pf_err *err);
#define PF_PROTO_LIMITS_OPT_ROW(T, F)                                                                              \
    {"max-message-mb", 0, PF_OPT_SIZE, offsetof(T, F), 1, 4096, 1048576, .fn = pf_proto_limits_opt_hook, .arg = "N", \
     .help = "ZMQ_MAXMSGSIZE and decoder limit in MB"}

/* Walk msgpack bytes: exactly one object, no trailing bytes, no ext types, sizes within BUF and LIM. */
int pf_mp_validate(const uint8_t *buf, size_t len, const pf_proto_limits *lim, pf_err *err);

typedef enum pf_msg_type {
    PF_MSG_NONE = 0,
    PF_MSG_HELLO,     /* peer -> producer: I am a worker/sink (role, name, capacity) */
    PF_MSG_WELCOME,   /* producer -> peer: accepted, here is my instance id */
    PF_MSG_RESET,     /* producer -> peer: I do not know you (I restarted): say hello again */
    PF_MSG_HB,        /* heartbeat, both ways; from the producer it carries job progress */
    PF_MSG_CREDIT,    /* worker -> producer: send me N more items */
    PF_MSG_ITEM,      /* producer -> worker: one item to work on (raw bytes or preprocessed tensor) */
    PF_MSG_TENSOR,    /* preprocess worker -> producer: the preprocessed image of an item */
    PF_MSG_DONE,      /* worker -> producer: I sent this item's final record to the sink */
    PF_MSG_NACK,      /* worker -> producer: give this item back (retry, or hand back on shutdown) */
    PF_MSG_RESULT,    /* inference worker -> sink: generated text and ids */
    PF_MSG_ERROR,     /* worker or producer -> sink: an item's error record */
    PF_MSG_ACK,       /* sink -> producer: these items' records are on disk */
    PF_MSG_BYE,       /* peer -> producer: I am leaving (after handing back my items) */
    PF_MSG_START,     /* worker -> producer: I started working on this item (it was only queued before) */
    PF_MSG_LEASE,     /* producer -> sink: this item is leased to that worker (whose record the sink may take) */
    PF_MSG_UNLEASE,   /* producer -> sink: that lease is over (take no record for the item from its holder) */
    PF_MSG_NOTES,     /* producer -> sink: several lease/unlease notes in one message, applied in order */
    PF_MSG_TYPE_COUNT
} pf_msg_type;

const char *pf_msg_type_name(pf_msg_type t);

/* What to do with every item of a job: the prompt and the generation settings. */
typedef struct pf_task {
    const char *prompt;        /* "caption en", "ocr", "answer en <q>", "detect cat ; dog", any prompt */
    int32_t max_new_tokens;
    double temperature;        /* 0 = greedy */
    int32_t top_k;             /* 0 = off */
    double top_p;              /* 1 = off */
    double repetition_penalty; /* 1 = off */
    uint64_t seed;
    int32_t autorotate;        /* apply EXIF orientation before resizing */
} pf_task;

/* The generation defaults (base/generation.h: 64 new tokens, greedy), no prompt. */
pf_task pf_task_default_params(void);

typedef struct pf_ack {
    int64_t id;
    const char *key;
    int ok;                    /* 1: result record, 0: error record */
    int64_t end;               /* where the record ends in the sink's output file (bytes); -1 unknown */
} pf_ack;

/* One item of a batched `start` or `done` (PROTOCOL.md, "Batched start and done"): what a single message
 * would carry. stage/message: a `done` whose record was an error record (both NULL otherwise). */
typedef struct pf_item_ref {
    int64_t id;
    const char *key;
    const char *stage;
    const char *message;
} pf_item_ref;

/* Timings carried along an item (seconds; < 0 = absent). */
typedef struct pf_timings {
    double read_s, preprocess_s, queue_s, prefill_s, decode_s, inference_s;
} pf_timings;

/* The timings by index, in wire and record order, for code that treats them alike: pf_timing_names[i] is
 * the key of value i ("read_s", ...); pf_timings_values copies the values out. */
#define PF_TIMINGS_N 6
extern const char *const pf_timing_names[PF_TIMINGS_N];
void pf_timings_values(const pf_timings *t, double v[PF_TIMINGS_N]);

/* One entry of a `notes` message (producer -> sink): a lease (type PF_MSG_LEASE: every field but holder_key,
 * which is NULL without CURVE) or the end of one (PF_MSG_UNLEASE: id and key). Strings as in pf_msg. */
typedef struct pf_note {
    pf_msg_type type;
    int64_t id;
    const char *key, *path, *stage, *holder, *holder_key;
} pf_note;

/* One decoded (or to-be-encoded) message. Which fields matter depends on the type (PROTOCOL.md).
 * Strings are NUL-terminated and live in the message's arena; `data` (bin) points INTO the buffer that
 * was decoded: keep that buffer alive while using it. Absent strings are NULL, absent ints 0 or -1. */
typedef struct pf_msg {
    pf_msg_type type;
    uint32_t version;
    /* peers */
    const char *role;          /* hello: "preprocess" | "inference" | "sink" */
    const char *name;          /* sender's name (worker id) */
    const char *host;
    int64_t pid;
    const char *instance;      /* producer run id (welcome, hb, reset; echoed in credit/tensor/done) */
    int64_t capacity;          /* hello: items the worker can hold */
    int64_t out_end;           /* hello from a sink: its output's committed size in bytes (-1 absent) */
    int64_t out_records;       /* hello from a sink: distinct records (items) its output holds (-1 absent) */
    int64_t credit;            /* credit: n; tensor/done/nack: credit returned with it */
    int32_t finished;          /* hb from the producer: the job is complete */
    int64_t n_total, n_done, n_failed;   /* hb from the producer: progress */
    /* item */
    int64_t id;                /* item id inside the job (stable across producer restarts) */
    const char *key;           /* content hash + settings hash */
    const char *path;          /* path as the producer found it */
    int32_t attempt;
    int32_t has_task;
    pf_task task;
    int32_t image_size;        /* S: the model input the job was made for */
    int32_t path_only;         /* item: no bytes, read `path` from shared storage */
    const char *file;          /* item with path_only: the file to read, canonical and absolute (the producer's
                                  realpath of `path`, which stays the record's path) */
    const char *content_key;   /* path-only items: the key of the bytes (pf_item_key), made by the preprocess
                                  worker that read them (tensor, error), carried on (inference item, result) */
    const uint8_t *data;       /* item: file bytes; tensor/item(inference): uint8 [S,S,3] HWC RGB */
    size_t data_len;
    int32_t data_frame;        /* item/tensor: `data` travels as the message's second frame, not in the map
                                  (decoded: the map said so; encoding: the map says so and leaves `data` out) */
    int32_t data_frames;       /* hello from a worker: send me items with a data frame; welcome to a worker:
                                  send me tensors with one (PROTOCOL.md, "Data frames") */
    int32_t width, height;     /* original image size (tensor, result) */
    double lease_s;            /* item: lease duration */
    /* outcome */
    const char *stage;         /* error/nack: "producer" | "preprocess" | "inference" */
    const char *message;       /* error/nack: reason */
    int32_t handback;          /* nack: not a failure (worker shutting down): no attempt counted */
    int32_t worker_fault;      /* nack: the failure is the worker's (its host lacks the file, ...), not the item's */
    int64_t hello_seq;         /* hello: the sender's hello number (1, 2, ...); welcome: the hello it answers */
    const char *text;          /* result: generated text; may hold NUL bytes (byte tokens): use text_len */
    size_t text_len;
    int32_t *ids;              /* result: generated ids (heap, owned by the message) */
    size_t n_ids;
    int32_t stopped_by_eos;
    const char *objects;       /* result of a segment prompt, from a worker with a mask decoder: the JSON array
                                  of objects with masks (model/seg/objects.h); wire type bin; NULL = absent */
    size_t objects_len;
    const char *meta;          /* item/result/error: JSON object text the record gets (a manifest's "id" and
                                  "extra" columns); carried unchanged by workers; NULL = none */
    const char *w_preprocess;  /* names of the workers that handled the item */
    const char *w_inference;
    pf_timings timings;
    pf_ack *acks;              /* ack: heap, owned */
    size_t n_acks;
    /* record authorization (PROTOCOL.md, "Who may say what") */
    int32_t leases;            /* hello from a sink: send me lease notes; welcome to a sink: I will */
    const char *holder;        /* lease: the holder's routing id on the producer's socket (its name) */
    const char *holder_key;    /* lease: the holder's CURVE public key (Z85), absent without CURVE */
    int32_t batch_notes;       /* hello from a sink: it takes `notes` messages (else one message per note) */
    pf_note *notes;            /* notes: heap, owned; strings in the arena */
    size_t n_notes;
    /* batched start/done (PROTOCOL.md, "Batched start and done") */
    int32_t batch;             /* welcome to a worker: I take start/done with `items` */
    pf_item_ref *items;        /* start/done: several items in one message (heap, owned); then no id/key */
    size_t n_items;
    /* owned memory */
    char *arena_;
    size_t arena_len_, arena_cap_;
} pf_msg;

void pf_msg_init(pf_msg *m, pf_msg_type type);
void pf_msg_free(pf_msg *m);

/* A client of the producer (the sink, a worker) got M: whether to say HELLO again now. The producer sends
 * RESET to a peer it does not know, and its heartbeats carry its instance id, which changes when it
 * restarts; either way the client is no longer welcomed (*welcomed = 0). INSTANCE is the producer the client
 * was welcomed by; hellos go at most every 0.2 s (LAST_HELLO: the previous one). */
int pf_msg_wants_hello(const pf_msg *m, const char *instance, int *welcomed, double last_hello, double now);

/* Decode BUF (validated first). On success M holds the fields; M must be pf_msg_free'd either way. */
int pf_msg_decode(const uint8_t *buf, size_t len, const pf_proto_limits *lim, pf_msg *m, pf_err *err);

/* Decode a message of two frames when DATA != NULL: the map BUF, then DATA (DATA_LEN bytes, at most
 * lim->max_bin), which becomes m->data (not copied: keep it alive while M is used). The map must say
 * `data_frame` exactly when a data frame comes, only an item or a tensor may, and its `data` must then be
 * absent; else the message is malformed (ERR says which). DATA == NULL: pf_msg_decode. */
int pf_msg_decode_frames(const uint8_t *buf, size_t len, const uint8_t *data, size_t data_len,
                         const pf_proto_limits *lim, pf_msg *m, pf_err *err);

/* Encode M into a fresh malloc'd buffer (*out, *len); free with free(). With m->data_frame set, the map says
 * `data_frame` and leaves m->data out: the caller sends it as the second frame (proto/wire.h). */
int pf_msg_encode(const pf_msg *m, uint8_t **out, size_t *len, pf_err *err);

/* Canonical settings hash of a task + image size (xxh3-64), and item key = content hash + settings:
 * "<32 hex xxh3-128 of the file bytes>-<16 hex settings hash>" (49 chars + NUL). */
uint64_t pf_task_hash(const pf_task *t, int image_size);
#define PF_KEY_LEN 49
void pf_item_key(const void *bytes, size_t len, uint64_t settings_hash, char out[PF_KEY_LEN + 1]);
/* A --path-only item's key, made without reading the file: xxh3-128 of its canonical path, size and
 * modification time (ns), then the settings hash. The same file unchanged gives the same key in every run (so
 * a redone item is deduplicated by the sink); a file rewritten in between gives another (a new record). */
void pf_item_stat_key(const char *ident, int64_t size, int64_t mtime_ns, uint64_t settings_hash,
                      char out[PF_KEY_LEN + 1]);
/* The content key of BYTES for an item whose key is ITEM_KEY: the bytes' hash with ITEM_KEY's settings half
 * (a worker knows the item's key, not how its settings hash was made). 0, or -1 when ITEM_KEY is malformed. */
int pf_item_content_key(const void *bytes, size_t len, const char *item_key, char out[PF_KEY_LEN + 1]);

/* True if the prompt asks for detection ("detect ..."): records then carry boxes. */
int pf_task_is_detect(const char *prompt);

#endif
