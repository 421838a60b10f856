/* outfile.c - see outfile.h. */
#include "pipeline/outfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "base/log.h"

static const char *kind_of(mode_t m)
{
    if (S_ISDIR(m))
        return "a folder";
    if (S_ISCHR(m))
        return "a character device (like /dev/null, /dev/full or a terminal)";
    if (S_ISBLK(m))
        return "a block device";
    if (S_ISFIFO(m))
        return "a pipe (FIFO; /dev/stdout is one when the output is piped)";
    if (S_ISSOCK(m))
        return "a socket";
    return "not a regular file";
}

/* The folder part of PATH ("." when it has none), malloc'd. */
static char *folder_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* The filesystem holding WHERE has room for records (and an inode when the output is still to be made). */
static int check_space(const char *path, const char *where, int need_inode, pf_err *err)
{
    struct statvfs vf;
    if (statvfs(where, &vf) != 0)
        return pf_errf(err, "%s: cannot query its filesystem: %s", path, strerror(errno));
    if (vf.f_flag & ST_RDONLY)
        return pf_errf(err, "%s: on a read-only filesystem", path);
    unsigned long long avail = (unsigned long long)vf.f_bavail * (unsigned long long)vf.f_frsize;
    if (avail < PF_OUT_MIN_FREE)
        return pf_errf(err, "%s: its filesystem is full (%llu bytes free, at least %d needed)", path, avail,
                       PF_OUT_MIN_FREE);
    if (need_inode && vf.f_files > 0 && vf.f_favail == 0)
        return pf_errf(err, "%s: its filesystem has no free inodes left to create it", path);
    return 0;
}

/* WHAT: "the output" or "the job store", for the messages. */
static int check_file(const char *path, const char *what, pf_err *err)
{
    if (!path || !*path)
        return pf_errf(err, "%s: the path is empty", what);
    struct stat st;
    if (stat(path, &st) == 0) {
        if (!S_ISREG(st.st_mode))
            return pf_errf(err, "%s: is %s; %s must be a regular file (it is read back on a restart)", path,
                           kind_of(st.st_mode), what);
        if (access(path, W_OK) != 0)
            return pf_errf(err, "%s: cannot write it: %s", path, strerror(errno));
        return check_space(path, path, 0, err);
    }
    if (errno != ENOENT && errno != ENOTDIR)   /* ENOTDIR: the folder part is a file (said below) */
        return pf_errf(err, "%s: %s", path, strerror(errno));
    char *dir = folder_of(path);
    if (!dir)
        return pf_errf(err, "%s: out of memory", path);
    int rc = 0;
    if (stat(dir, &st) != 0)
        rc = errno == ENOENT || errno == ENOTDIR ? pf_errf(err, "%s: the folder %s does not exist", path, dir)
                             : pf_errf(err, "%s: folder %s: %s", path, dir, strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        rc = pf_errf(err, "%s: %s is not a folder", path, dir);
    else if (access(dir, W_OK | X_OK) != 0)
        rc = pf_errf(err, "%s: cannot create it in folder %s: %s", path, dir, strerror(errno));
    else
        rc = check_space(path, dir, 1, err);
    free(dir);
    return rc;
}

int pf_outfile_check(const char *path, pf_err *err)
{
    return check_file(path, "the output", err);
}

int pf_dbfile_check(const char *db, pf_err *err)
{
    return check_file(db, "the job store", err);
}

/* PATH made canonical: realpath of the file, or of its folder plus its name when it does not exist yet
 * (malloc'd; NULL when neither resolves). */
static char *canonical(const char *path)
{
    char *r = realpath(path, NULL);
    if (r || errno != ENOENT)
        return r;
    char *dir = folder_of(path);
    char *rd = dir ? realpath(dir, NULL) : NULL;
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    char *out = NULL;
    if (rd && *name) {
        size_t n = strlen(rd) + strlen(name) + 2;
        if ((out = malloc(n)))
            snprintf(out, n, "%s/%s", strcmp(rd, "/") ? rd : "", name);
    }
    free(dir);
    free(rd);
    return out;
}

int pf_outfile_same(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0)
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    char *ca = canonical(a), *cb = canonical(b);
    int same = ca && cb && !strcmp(ca, cb);
    free(ca);
    free(cb);
    return same;
}

/* FD is a regular file (the path may have been swapped between the check and the open). */
static int still_regular(int fd, const char *path, pf_err *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return pf_errf(err, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return pf_errf(err, "%s: is %s; the output must be a regular file", path, kind_of(st.st_mode));
    return 0;
}

static int busy_output(const char *path, pf_err *err)
{
    return pf_errf(err, "%s: in use: another paliflow run or sink is writing it (it is locked); refusing to write "
                   "one output from two processes", path);
}

int pf_outfile_open(const char *path, int *fd, pf_err *err)
{
    *fd = -1;
    if (pf_outfile_check(path, err))
        return -1;
    /* O_NONBLOCK: a FIFO swapped in after the check must not block the open */
    int f = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0644);
    if (f < 0)
        return pf_errf(err, "%s: cannot open it: %s", path, strerror(errno));
    if (still_regular(f, path, err)) {
        close(f);
        return -1;
    }
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(f);
        return e == EWOULDBLOCK ? busy_output(path, err) : pf_errf(err, "%s: cannot lock it: %s", path, strerror(e));
    }
    int fl = fcntl(f, F_GETFL);
    if (fl >= 0)
        fcntl(f, F_SETFL, fl & ~O_NONBLOCK);
    *fd = f;
    return 0;
}

/* *FD: a copy of HELD, which must be open on PATH (same device and inode): a lock handed over is for the file
 * the taker names, not whatever descriptor it was given. */
int pf_outfile_adopt(const char *path, int held, int *fd, pf_err *err)
{
    *fd = -1;
    struct stat a, b;
    if (held < 0 || fstat(held, &a) != 0)
        return pf_errf(err, "%s: the lock handed over is not an open file", path);
    if (stat(path, &b) != 0)
        return pf_errf(err, "%s: %s", path, strerror(errno));
    if (a.st_dev != b.st_dev || a.st_ino != b.st_ino)
        return pf_errf(err, "%s: the lock handed over is on another file (was it replaced?)", path);
    int f = fcntl(held, F_DUPFD_CLOEXEC, 0);
    if (f < 0)
        return pf_errf(err, "%s: cannot share its lock: %s", path, strerror(errno));
    *fd = f;
    return 0;
}

/* Try the exclusive lock on the existing file LOCKPATH and let it go: 0 free (or absent), 1 held elsewhere,
 * -1 error (err says why). */
static int probe(const char *lockpath, pf_err *err)
{
    struct stat st;
    if (stat(lockpath, &st) != 0)
        return errno == ENOENT ? 0 : pf_errf(err, "%s: %s", lockpath, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return pf_errf(err, "%s: is %s; it must be a regular file", lockpath, kind_of(st.st_mode));
    int f = open(lockpath, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (f < 0)
        return pf_errf(err, "%s: %s", lockpath, strerror(errno));
    int held = flock(f, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(f);   /* releases the lock if we got it */
    return held;
}

int pf_outfile_probe_lock(const char *path, pf_err *err)
{
    int r = probe(path, err);
    return r == 1 ? busy_output(path, err) : r;
}

static char *lock_path(const char *db)
{
    size_t n = strlen(db) + 6;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s.lock", db);
    return p;
}

/* Who holds the lock file FD, as it says ("pid N on HOST"), made printable, into BUF. */
static void holder_of(int fd, char *buf, size_t cap)
{
    ssize_t n = pread(fd, buf, cap - 1, 0);
    if (n <= 0) {
        snprintf(buf, cap, "another process");
        return;
    }
    buf[n] = '\0';
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] == '\n' || (unsigned char)buf[i] < 0x20 || (unsigned char)buf[i] >= 0x7f)
            buf[i] = i == n - 1 && buf[i] == '\n' ? '\0' : '?';
}

static int busy_db(const char *db, const char *lp, int fd, pf_err *err)
{
    char who[128];
    if (fd >= 0)
        holder_of(fd, who, sizeof who);
    else
        snprintf(who, sizeof who, "another process");
    return pf_errf(err, "job store %s: in use by %s (it holds %s): another run or producer on the same job; "
                   "refusing to run one job twice", db, who, lp);
}

int pf_dblock_acquire(const char *db, int *fd, pf_err *err)
{
    *fd = -1;
    char *lp = lock_path(db);
    if (!lp)
        return pf_errf(err, "job store %s: out of memory", db);
    int rc = -1;
    int f = open(lp, O_RDWR | O_CREAT | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0644);
    if (f < 0) {
        pf_errf(err, "job store %s: cannot open its lock file %s: %s", db, lp, strerror(errno));
        goto out;
    }
    if (still_regular(f, lp, err))
        goto out;
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            busy_db(db, lp, f, err);
        else
            pf_errf(err, "job store %s: cannot lock %s: %s", db, lp, strerror(errno));
        goto out;
    }
    char host[64] = {0}, line[128];
    gethostname(host, sizeof host - 1);
    int n = snprintf(line, sizeof line, "pid %d on %s\n", (int)getpid(), host);
    /* who holds it is only for the message of a refused run: a failure here costs nothing else */
    if (ftruncate(f, 0) != 0 || pwrite(f, line, (size_t)n, 0) != n)
        pf_warn("job store", "%s: cannot note the holder: %s", lp, strerror(errno));
    *fd = f;
    f = -1;
    rc = 0;
out:
    if (f >= 0)
        close(f);
    free(lp);
    return rc;
}

int pf_dblock_adopt(const char *db, int held, int *fd, pf_err *err)
{
    *fd = -1;
    char *lp = lock_path(db);
    if (!lp)
        return pf_errf(err, "job store %s: out of memory", db);
    int rc = pf_outfile_adopt(lp, held, fd, err);
    free(lp);
    return rc;
}

int pf_dblock_probe(const char *db, pf_err *err)
{
    char *lp = lock_path(db);
    if (!lp)
        return pf_errf(err, "job store %s: out of memory", db);
    int r = probe(lp, err);
    if (r == 1) {
        int f = open(lp, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        busy_db(db, lp, f, err);
        if (f >= 0)
            close(f);
        r = -1;
    }
    free(lp);
    return r;
}

int pf_outfile_scan(int fd, const char *path, size_t max_line,
                    int (*cb)(const char *line, size_t len, off_t end, void *arg), void *arg, off_t *good,
                    pf_err *err)
{
    return pf_outfile_scan_from(fd, path, 0, max_line, cb, arg, good, err);
}

int pf_outfile_scan_from(int fd, const char *path, off_t from, size_t max_line,
                         int (*cb)(const char *line, size_t len, off_t end, void *arg), void *arg, off_t *good,
                         pf_err *err)
{
    *good = from;
    size_t cap = max_line < (64u << 10) ? max_line + 1 : (64u << 10);
    char *buf = malloc(cap);
    if (!buf)
        return pf_errf(err, "%s: out of memory", path);
    off_t base = from;   /* file offset of buf[0] */
    size_t have = 0;     /* bytes in buf */
    size_t start = 0;    /* the current line starts at buf[start] */
    size_t searched = 0; /* buf[start..searched) holds no '\n' */
    long long lineno = 1;
    int rc = 0;
    for (;;) {
        char *nl;
        while ((nl = memchr(buf + searched, '\n', have - searched))) {
            size_t end = (size_t)(nl - buf) + 1;
            rc = cb(buf + start, end - start, base + (off_t)end, arg);
            if (rc)
                goto out;
            start = searched = end;
            lineno++;
        }
        searched = have;
        if (have - start > max_line) {
            rc = pf_errf(err, "%s: line %lld is longer than %zu bytes: not a paliflow output file", path, lineno,
                         max_line);
            goto out;
        }
        if (start > 0) {   /* keep only the partial line: one move per read, not per line */
            memmove(buf, buf + start, have - start);
            have -= start;
            searched -= start;
            base += (off_t)start;
            start = 0;
        }
        if (have == cap) {
            size_t nc = cap * 2 > max_line + 1 ? max_line + 1 : cap * 2;
            char *nb = realloc(buf, nc);
            if (!nb) {
                rc = pf_errf(err, "%s: out of memory reading line %lld", path, lineno);
                goto out;
            }
            buf = nb;
            cap = nc;
        }
        ssize_t n = pread(fd, buf + have, cap - have, base + (off_t)have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = pf_errf(err, "%s: read error at byte %lld: %s", path, (long long)(base + (off_t)have),
                         strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        have += (size_t)n;
    }
    *good = base;
out:
    free(buf);
    return rc;
}

int pf_outfile_cut(int fd, const char *path, off_t good, pf_err *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return pf_errf(err, "%s: %s", path, strerror(errno));
    if (st.st_size <= good)
        return 0;
    pf_warn("sink", "%s: cutting a torn last line (%lld bytes after byte %lld, no newline) left by a crash or an "
            "edit; its item is redone", path, (long long)(st.st_size - good), (long long)good);
    if (ftruncate(fd, good) != 0)
        return pf_errf(err, "%s: cannot cut the torn last line: %s", path, strerror(errno));
    return 0;
}
