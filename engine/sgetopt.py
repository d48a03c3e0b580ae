"""djb's getopt (qmail's sgetopt.c/subgetopt.c): option parsing as qmail's programs do it.

Options may be bundled (-ah), an option's argument may be attached
(-fuser) or the next word (-f user); "--" ends the options and is
consumed, a lone "-" ends them and is kept as an argument. A bad option
or a missing argument yields ("?", problem) after printing
"<prog>: illegal option -- x" or "<prog>: option requires an argument -- x"
on stderr.
"""

import sys


class getopt:
    """Iterate over (option, argument) pairs of argv (bytes); rest() is what follows the options."""

    def __init__(self, argv, optstring, progname, stderr=None):
        self.argv = argv
        self.optstring = optstring
        self.progname = progname
        self.stderr = stderr
        self.optind = 1
        self.optpos = 0

    def __iter__(self):
        return self

    def __next__(self):
        opt, arg = self._next()
        if opt is None:
            raise StopIteration
        if opt == b"?":
            self._complain(arg)
        return opt, arg

    def _next(self):
        argv = self.argv
        if self.optind >= len(argv):
            return None, None
        if self.optpos and self.optpos >= len(argv[self.optind]):
            self.optind += 1
            self.optpos = 0
            if self.optind >= len(argv):
                return None, None
        word = argv[self.optind]
        if not self.optpos:
            if not word.startswith(b"-"):
                return None, None
            self.optpos = 1
            if word[1:2] in (b"-", b""):
                if word[1:2]:
                    self.optind += 1
                self.optpos = 0
                return None, None
        c = word[self.optpos:self.optpos + 1]
        self.optpos += 1
        where = self.optstring.find(c)
        if c == b":" or where < 0:
            return b"?", c
        if self.optstring[where + 1:where + 2] != b":":
            return c, None
        arg = word[self.optpos:]
        self.optind += 1
        self.optpos = 0
        if not arg:
            if self.optind >= len(argv):
                return b"?", c
            arg = argv[self.optind]
            self.optind += 1
        return c, arg

    def skip_rest(self):
        """Ignore the rest of the current word (sendmail's -E/-J optional argument)."""
        if self.optpos:
            self.optpos = len(self.argv[self.optind])

    def rest(self):
        """The arguments after the options (call once the iteration has ended)."""
        return self.argv[self.optind:]

    def _complain(self, problem):
        err = self.stderr or sys.stderr.buffer
        if self.optind < len(self.argv):
            what = b": illegal option -- "
        else:
            what = b": option requires an argument -- "
        err.write(self.progname.encode() + what + problem + b"\n")
        err.flush()
