"""One directory connection per process, used from asyncio through a single worker thread.

python-ldap is synchronous: a lookup that waits for a slow or stopped slapd
(up to ldaptimeout) must not stall every other session of an SMTP worker,
so lookups run in one dedicated thread that owns the connection.
qmail-verify's habit is kept: the connection is closed after 5 idle seconds
and opened again on the next lookup.
"""

import asyncio
import concurrent.futures
import threading
import time

from engine import qldap

IDLE_CLOSE = 5.0


class DirectoryThread:
    def __init__(self, home, login_fallback=True):
        self.home = home
        self.login_fallback = login_fallback
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ldap")
        self.directory = None
        self.last_used = 0.0
        self.lock = threading.Lock()

    def _directory(self):
        if self.directory is None or time.monotonic() - self.last_used > IDLE_CLOSE:
            if self.directory is not None:
                self.directory.close()
            self.directory = qldap.Directory(qldap.Config.load(self.home, login_fallback=self.login_fallback))
        self.last_used = time.monotonic()
        return self.directory

    def _run(self, func):
        with self.lock:
            try:
                return func(self._directory())
            except qldap.QldapError:
                if self.directory is not None:
                    self.directory.close()
                self.directory = None
                raise

    async def call(self, func):
        """func(directory) in the LDAP thread; QldapError and ControlError propagate."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._run, func)
