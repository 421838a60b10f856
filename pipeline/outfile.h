/* outfile.h - the files a run owns: the JSON-lines output and the job store, checked before any work and
 * locked for as long as the run holds them.
 *
 * Why check first: the sink used to find out at its first write (or never) that --out was /dev/null, a
 * folder, a FIFO, /dev/full (read to its endless end at start), a read-only or full filesystem, while the
 * producer and the model ran on. Every refusal names the path and the reason.
 *
 * Why lock: two runs (or two sinks) appending to one output, or two producers on one job store, write
 * records twice and hand items out twice. The output is locked with flock() on the file itself, the job
 * store with flock() on "<db>.lock" (never on the SQLite file: SQLite's own POSIX locks are dropped when any
 * descriptor of that file is closed, and NFS emulates flock with the same POSIX locks). flock locks belong to
 * the open file and go with it when the process exits, also on kill -9: a stale lock cannot outlive its run.
 */
#ifndef PF_PIPELINE_OUTFILE_H
#define PF_PIPELINE_OUTFILE_H

#include <stddef.h>
#include <sys/types.h>

#include "base/err.h"

/* Least free space (bytes) the output's filesystem must have at start: a few batches of records. */
#define PF_OUT_MIN_FREE (64 * 1024)
/* Longest line of an output file we read back (a record is a few KiB; longer = not our file). */
#define PF_OUT_MAX_LINE (16u << 20)

/* PATH can be the output: an existing regular file we may write, or a name we may create in an existing,
 * writable folder; on a filesystem with PF_OUT_MIN_FREE bytes free. Refuses folders, devices (/dev/null,
 * /dev/full, a terminal), FIFOs and sockets (/dev/stdout when piped). Creates nothing. */
int pf_outfile_check(const char *path, pf_err *err);

/* The same checks for a job store file DB (SQLite makes it, and its -wal and -shm, in that folder). */
int pf_dbfile_check(const char *db, pf_err *err);

/* A and B name the same file, existing or not (an existing one by device and inode, one still to be made
 * by its folder's real path and its name): 1 yes, 0 no or cannot tell. */
int pf_outfile_same(const char *a, const char *b);

/* Check PATH, open it for reading and appending (created 0644 if absent) and lock it exclusively: *fd.
 * A lock held elsewhere is refused at once (no waiting), naming the file. Close the fd to release. */
int pf_outfile_open(const char *path, int *fd, pf_err *err);

/* The output PATH, opened and locked by someone else in this process (pf_outfile_open: `run`, which takes its
 * locks before its roles start), shared: *fd is a copy of HELD (the lock goes with the open file, so it lasts
 * until both are closed). Refused unless HELD is open on PATH itself. */
int pf_outfile_adopt(const char *path, int held, int *fd, pf_err *err);

/* Would pf_outfile_open(PATH) get the lock now? 0 yes (also when PATH does not exist yet), -1 no. For a
 * command that must refuse a busy output before it spends time (loading a model): the real lock is taken
 * later (`run` takes it once the model is loaded, before its roles start). */
int pf_outfile_probe_lock(const char *path, pf_err *err);

/* The job store's lock: flock on "<DB>.lock", which holds "pid N on HOST" of the holder. *fd: close it (after
 * the job store) to release. A lock held elsewhere is refused at once, naming the holder. */
int pf_dblock_acquire(const char *db, int *fd, pf_err *err);
/* Like pf_outfile_adopt, for the job store's lock HELD (pf_dblock_acquire on DB). */
int pf_dblock_adopt(const char *db, int held, int *fd, pf_err *err);
/* Like pf_outfile_probe_lock, for the job store DB. */
int pf_dblock_probe(const char *db, pf_err *err);

/* Read the output file FD from the start, line by line: CB(line, len, end_offset, arg) for each complete
 * line ('\n' included in len; a non-zero return stops the scan and is returned: the callback fills err).
 * *GOOD gets the end of the last complete line: the bytes after it are a torn line (a crash mid-write). A
 * line longer than MAX_LINE is an error naming PATH and the line: no output of ours holds one, and reading
 * it whole would take its size in memory. Memory: one buffer of at most MAX_LINE + 1 bytes. */
int pf_outfile_scan(int fd, const char *path, size_t max_line,
                    int (*cb)(const char *line, size_t len, off_t end, void *arg), void *arg, off_t *good,
                    pf_err *err);

/* The same from byte FROM of FD (the start of a line: a checkpoint), for a restart that reads only the tail
 * written after it; line numbers in messages count from there. */
int pf_outfile_scan_from(int fd, const char *path, off_t from, size_t max_line,
                         int (*cb)(const char *line, size_t len, off_t end, void *arg), void *arg, off_t *good,
                         pf_err *err);

/* Cut FD (the output PATH) back to GOOD bytes when it is longer: a torn last line left by a crash, logged
 * with its size. */
int pf_outfile_cut(int fd, const char *path, off_t good, pf_err *err);

#endif
