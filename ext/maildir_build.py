"""cffi build of the Maildir/mbox writing kernel (ext/maildir.c) as engine._maildir_cffi."""

import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

ffibuilder = FFI()
ffibuilder.cdef("""
    int md_deliver(const char *maildir, const char *prefix, size_t plen,
                   const char *body, size_t blen, int srcfd, const char *host, int syncnew,
                   char *name, size_t namecap, unsigned long long *size, int *step);
    int md_append_mbox(int fd, const char *head, size_t hlen, const char *body, size_t blen,
                       int srcfd, unsigned long long *written, int *step);
""")
with open(os.path.join(HERE, "maildir.c")) as f:
    ffibuilder.set_source("engine._maildir_cffi", f.read(), extra_compile_args=["-O2"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
