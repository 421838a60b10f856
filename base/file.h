/* file.h - reading files safely: whole-file reads with a size cap, read-only memory maps. */
#ifndef PF_BASE_FILE_H
#define PF_BASE_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* A read-only mapping of a whole regular file. size 0 files map to data == NULL. */
typedef struct pf_map {
    const uint8_t *data;
    size_t size;
} pf_map;

/* Map PATH read-only. Refuses non-regular files (directories, devices, fifos). */
int pf_map_file(const char *path, pf_map *out, pf_err *err);
void pf_unmap(pf_map *map);

/* Read a regular file completely into a fresh malloc'd buffer (NUL-terminated for convenience;
 * *len excludes the NUL). Files larger than max_bytes are refused before reading. */
int pf_read_file(const char *path, size_t max_bytes, char **out, size_t *len, pf_err *err);

/* Write BUF to PATH atomically: write PATH.tmp.<pid>, fsync, rename. */
int pf_write_file_atomic(const char *path, const void *buf, size_t len, pf_err *err);

/* Join a directory and a file name into a malloc'd path. */
char *pf_path_join(const char *dir, const char *name);

/* Monotonic clock in seconds. */
double pf_now(void);

#endif
