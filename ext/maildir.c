/* Maildir and mbox writing kernel (qmail-local's maildir_child and mailfile).
 *
 * md_deliver: tmp/<name> created O_EXCL, prefix + message written with
 * writev (bytes) or copy_file_range (fd), fsync, then renamed into
 * new/<name>,S=<size> with RENAME_NOREPLACE (link + unlink where the file
 * system lacks it), then new/ fsynced so the entry itself is durable
 * (unless syncnew is 0: the caller flushes the file system later, before
 * it counts the delivery as done). A file never appears in new/ before
 * its data is on disk.
 *
 * md_append_mbox: writes head + message to an mbox fd with ">From " quoting
 * (any line matching >*From gets one more '>'), a newline after an
 * unterminated last line, one empty line, then fsync.
 *
 * Failures return an errno and set *step (MD_STEP_*) so the caller can pick
 * qmail-local's reply text.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#define MD_STEP_TMP 1
#define MD_STEP_READ 2
#define MD_STEP_WRITE 3
#define MD_STEP_FSYNC 4
#define MD_STEP_LINK 5
#define MD_STEP_SYNCDIR 6
#define MD_STEP_NAME 7

#define MD_TRIES 3
#define MD_BUF 65536

static unsigned long md_counter;

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* prefix and body in one writev; loops over short writes */
static int writev2(int fd, const char *a, size_t alen, const char *b, size_t blen)
{
    struct iovec iov[2];
    while (alen + blen) {
        int cnt = 0;
        if (alen) { iov[cnt].iov_base = (void *)a; iov[cnt].iov_len = alen; cnt++; }
        if (blen) { iov[cnt].iov_base = (void *)b; iov[cnt].iov_len = blen; cnt++; }
        ssize_t w = writev(fd, iov, cnt);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        size_t done = (size_t)w;
        if (done >= alen) { done -= alen; a += alen; alen = 0; b += done; blen -= done; }
        else { a += done; alen -= done; }
    }
    return 0;
}

static int is_write_errno(int e)
{
    return e == ENOSPC || e == EDQUOT || e == EFBIG || e == EIO;
}

/* copy srcfd (from its offset to EOF) to out; in-kernel copy for regular files */
static int copy_fd(int out, int in, unsigned long long *total, int *step)
{
    static __thread char buf[MD_BUF];
    struct stat st;
    if (fstat(in, &st) == 0 && S_ISREG(st.st_mode)) {
        for (;;) {
            ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
            if (n > 0) { *total += (unsigned long long)n; continue; }
            if (n == 0) return 0;
            if (errno == EINTR) continue;
            if (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) break;
            *step = is_write_errno(errno) ? MD_STEP_WRITE : MD_STEP_READ;
            return -1;
        }
    }
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            *step = MD_STEP_READ;
            return -1;
        }
        if (n == 0) return 0;
        if (write_all(out, buf, (size_t)n) == -1) { *step = MD_STEP_WRITE; return -1; }
        *total += (unsigned long long)n;
    }
}

static int create_tmp(const char *maildir, const char *host, char *name, size_t namecap,
                      char *tmp, size_t cap, int *step)
{
    for (int tries = 0; tries < MD_TRIES; tries++) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        unsigned long q = __atomic_fetch_add(&md_counter, 1, __ATOMIC_RELAXED);
        int n = snprintf(name, namecap, "%lld.M%ldP%ldQ%lu.%s", (long long)tv.tv_sec,
                         (long)tv.tv_usec, (long)getpid(), q, host);
        if (n < 0 || (size_t)n >= namecap || (size_t)snprintf(tmp, cap, "%s/tmp/%s", maildir, name) >= cap) {
            *step = MD_STEP_NAME;
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) return fd;
        if (errno != EEXIST) break;
    }
    *step = MD_STEP_TMP;
    return -1;
}

static int move_to_new(const char *tmp, const char *new)
{
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, new, RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) return -1;
    if (link(tmp, new) == -1) return -1;
    unlink(tmp);
    return 0;
}

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd == -1) return -1;
    int r = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return r;
}

int md_deliver(const char *maildir, const char *prefix, size_t plen,
               const char *body, size_t blen, int srcfd, const char *host, int syncnew,
               char *name, size_t namecap, unsigned long long *size, int *step)
{
    size_t cap = strlen(maildir) + namecap + 32;
    char *tmp = malloc(cap), *new = malloc(cap);
    int fd = -1, err = 0;
    *step = 0;
    *size = 0;
    if (!tmp || !new) { err = ENOMEM; *step = MD_STEP_NAME; goto out; }

    fd = create_tmp(maildir, host, name, namecap, tmp, cap, step);
    if (fd == -1) { err = errno; goto out; }

    if (srcfd < 0) {
        if (writev2(fd, prefix, plen, body, blen) == -1) { err = errno; *step = MD_STEP_WRITE; goto fail; }
        *size = plen + blen;
    } else {
        if (write_all(fd, prefix, plen) == -1) { err = errno; *step = MD_STEP_WRITE; goto fail; }
        *size = plen;
        if (copy_fd(fd, srcfd, size, step) == -1) { err = errno; goto fail; }
    }
    if (fsync(fd) == -1) { err = errno; *step = MD_STEP_FSYNC; goto fail; }
    if (close(fd) == -1) { fd = -1; err = errno; *step = MD_STEP_FSYNC; goto fail; }
    fd = -1;

    size_t nlen = strlen(name);
    if ((size_t)snprintf(name + nlen, namecap - nlen, ",S=%llu", *size) >= namecap - nlen
        || (size_t)snprintf(new, cap, "%s/new/%s", maildir, name) >= cap) {
        name[nlen] = 0;
        err = ENAMETOOLONG; *step = MD_STEP_NAME; goto fail;
    }
    if (move_to_new(tmp, new) == -1) { err = errno; *step = MD_STEP_LINK; name[nlen] = 0; goto fail; }
    if (!syncnew) goto out;
    snprintf(new, cap, "%s/new", maildir);
    if (sync_dir(new) == -1) { err = errno; *step = MD_STEP_SYNCDIR; goto out; }
    goto out;

fail:
    if (fd != -1) close(fd);
    unlink(tmp);
out:
    free(tmp);
    free(new);
    return err;
}

/* ---- mbox ---- */

struct outbuf {
    int fd;
    size_t len;
    unsigned long long total;
    char buf[MD_BUF];
};

static int ob_flush(struct outbuf *o)
{
    if (o->len && write_all(o->fd, o->buf, o->len) == -1) return -1;
    o->len = 0;
    return 0;
}

static int ob_put(struct outbuf *o, const char *p, size_t n)
{
    o->total += n;
    if (o->len + n > sizeof o->buf) {
        if (ob_flush(o) == -1) return -1;
        if (n >= sizeof o->buf) return write_all(o->fd, p, n);
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return 0;
}

static int ob_repeat(struct outbuf *o, char c, size_t n)
{
    char run[256];
    memset(run, c, sizeof run);
    while (n) {
        size_t k = n < sizeof run ? n : sizeof run;
        if (ob_put(o, run, k) == -1) return -1;
        n -= k;
    }
    return 0;
}

/* line-start state carried across input chunks */
struct quoter {
    int at_start;   /* next byte begins a line */
    size_t gt;      /* '>' seen at this line start, not yet written */
    size_t k;       /* bytes of "From " matched after them */
    int any;        /* any message byte seen */
    char last;      /* last message byte */
};

static const char FROM_[] = "From ";

static int flush_pending(struct quoter *q, struct outbuf *o)
{
    if (ob_repeat(o, '>', q->gt) == -1 || ob_put(o, FROM_, q->k) == -1) return -1;
    q->gt = q->k = 0;
    return 0;
}

static int quote_feed(struct quoter *q, struct outbuf *o, const char *p, size_t n)
{
    size_t i = 0;
    if (n) { q->any = 1; q->last = p[n - 1]; }
    while (i < n) {
        if (q->at_start) {
            char c = p[i];
            if (c == '>' && q->k == 0) { q->gt++; i++; continue; }
            if (c == FROM_[q->k]) {
                q->k++; i++;
                if (q->k == 5) {
                    if (ob_put(o, ">", 1) == -1 || flush_pending(q, o) == -1) return -1;
                    q->at_start = 0;
                }
                continue;
            }
            if (flush_pending(q, o) == -1) return -1;
            q->at_start = 0;
        }
        const char *nl = memchr(p + i, '\n', n - i);
        size_t end = nl ? (size_t)(nl - p) + 1 : n;
        if (ob_put(o, p + i, end - i) == -1) return -1;
        i = end;
        if (nl) q->at_start = 1;
    }
    return 0;
}

static int quote_finish(struct quoter *q, struct outbuf *o)
{
    if (flush_pending(q, o) == -1) return -1;
    if (q->any && q->last != '\n' && ob_put(o, "\n", 1) == -1) return -1;
    return ob_put(o, "\n", 1);
}

int md_append_mbox(int fd, const char *head, size_t hlen, const char *body, size_t blen,
                   int srcfd, unsigned long long *written, int *step)
{
    struct outbuf *o = malloc(sizeof *o);
    struct quoter q = {1, 0, 0, 0, 0};
    int err = 0;
    *step = 0;
    *written = 0;
    if (!o) { *step = MD_STEP_WRITE; return ENOMEM; }
    o->fd = fd;
    o->len = 0;
    o->total = 0;
    if (ob_put(o, head, hlen) == -1) goto writefail;
    if (srcfd < 0) {
        if (quote_feed(&q, o, body, blen) == -1) goto writefail;
    } else {
        char *in = malloc(MD_BUF);
        if (!in) { err = ENOMEM; *step = MD_STEP_READ; goto out; }
        for (;;) {
            ssize_t n = read(srcfd, in, MD_BUF);
            if (n < 0) {
                if (errno == EINTR) continue;
                err = errno; *step = MD_STEP_READ; free(in); goto out;
            }
            if (n == 0) break;
            if (quote_feed(&q, o, in, (size_t)n) == -1) { free(in); goto writefail; }
        }
        free(in);
    }
    if (quote_finish(&q, o) == -1 || ob_flush(o) == -1) goto writefail;
    if (fsync(fd) == -1) { err = errno; *step = MD_STEP_FSYNC; goto out; }
    *written = o->total;
    goto out;
writefail:
    err = errno;
    *step = MD_STEP_WRITE;
out:
    free(o);
    return err;
}
