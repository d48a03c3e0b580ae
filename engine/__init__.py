"""pyqmail-ldap: qmail-ldap's programs, queue and control files, in Python with compiled kernels.

Each qmail program or service role is one module here, named after it
(queue = qmail-queue, inject = qmail-inject, ...); shared pieces (control
files, cdb, the queue layout in hier) have their own modules. Hot kernels
are loaded through engine.compiled, which picks engine._<name>_c (built
from ext/<name>.pyx or ext/<name>_build.py) or its pure twin engine._<name>_py.
"""

__version__ = "0.1.0"
