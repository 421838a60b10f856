/* file.h - reading files safely: whole-file reads with a size cap, read-only memory maps.
 *
 * Every path the product reads (input images, --tokenizer, --config and its SIGHUP reload, a checkpoint's
 * config.json and safetensors) goes through pf_open_regular: opened with O_NONBLOCK, so that a FIFO (or a
 * device) named by mistake or swapped in under us cannot block open() forever, then fstat'ed, and refused
 * unless it is a regular file, before one byte is read. Whole files are read into memory with a cap
 * (pf_read_file); mapping (pf_map_file) is only for files that cannot change under us (see there): a mapped
 * file truncated by someone else kills the process with SIGBUS on the next access. */
#ifndef PF_BASE_FILE_H
#define PF_BASE_FILE_H

#include <stddef.h>
#include <stdint.h>

#include <sys/stat.h>

#include "base/err.h"

/* A read-only mapping of a whole regular file. size 0 files map to data == NULL. */
typedef struct pf_map {
    const uint8_t *data;
    size_t size;
} pf_map;

/* Why a read failed, for callers that decide between "try again later" and "this input is bad". */
typedef enum pf_file_fault {
    PF_FILE_OK = 0,
    PF_FILE_IO,          /* cannot open / read (missing, permissions, I/O error): maybe transient */
    PF_FILE_NOT_REGULAR, /* a directory, FIFO, socket or device: never readable as a file */
    PF_FILE_TOO_BIG,     /* larger than the caller's limit */
    PF_FILE_CHANGED,     /* shrank or grew past the limit while being read */
    PF_FILE_NO_MEMORY,
} pf_file_fault;

/* Open PATH read-only without blocking (O_NONBLOCK, cleared again once the type is known) and fstat it into
 * *st; anything but a regular file is refused by name and type ("is a FIFO"). Returns the fd, or -1 with
 * *fault (may be NULL) and err set. O_NOCTTY: a terminal named by mistake never becomes ours. */
int pf_open_regular(const char *path, struct stat *st, pf_file_fault *fault, pf_err *err);

/* Map PATH read-only, after pf_open_regular's checks. Only for files that are static while we run (model
 * weights): a mapped file that someone truncates raises SIGBUS on the next access to a lost page. Anything
 * that may change under us (input images, configs, tokenizers) is read with pf_read_file instead. */
int pf_map_file(const char *path, pf_map *out, pf_err *err);
void pf_unmap(pf_map *map);

/* Read a regular file completely into a fresh malloc'd buffer (NUL-terminated for convenience;
 * *len excludes the NUL). Files larger than max_bytes are refused before reading; a file that shrinks
 * while being read is an error (never a short buffer taken for the whole file), one that grows past
 * max_bytes too. Opened with pf_open_regular (no FIFO, device or directory). */
int pf_read_file(const char *path, size_t max_bytes, char **out, size_t *len, pf_err *err);
/* The same, saying why it failed in *fault (may be NULL). */
int pf_read_file_safe(const char *path, size_t max_bytes, char **out, size_t *len, pf_file_fault *fault,
                      pf_err *err);

/* Write all LEN bytes of BUF to FD (a short write continues, EINTR retries): 0, or -1 with errno set. */
int pf_write_all(int fd, const void *buf, size_t len);

/* Write BUF to PATH atomically: write PATH.tmp.<pid>, fsync, rename. */
int pf_write_file_atomic(const char *path, const void *buf, size_t len, pf_err *err);

/* Join a directory and a file name into a malloc'd path. */
char *pf_path_join(const char *dir, const char *name);

/* Monotonic clock in seconds. */
double pf_now(void);

#endif
