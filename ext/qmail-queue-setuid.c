/*
 * bin/qmail-queue for a root installation: qmail's qmail-queue is setuid
 * qmailq (mode 4711) so that any user can put mail into the queue, which
 * belongs to qmailq. A Python program cannot be setuid, so this front end
 * is: it throws away the caller's environment, keeps the caller's real uid
 * (qmail-queue records it as "invoked by uid N"), and execs the configured
 * interpreter in isolated mode (-I: no PYTHON* variables, no user site)
 * on engine.queue. QMAILHOME and PYTHON are fixed when make setup builds it.
 * Exit 120 ("unable to exec qq") when the interpreter cannot be started.
 */
#include <unistd.h>

#ifndef QMAILHOME
#error "build with -DQMAILHOME=\"/var/qmail\""
#endif
#ifndef PYTHON
#error "build with -DPYTHON=\"/path/to/venv/bin/python3\""
#endif

int main(void)
{
  char *const args[] = { (char *)PYTHON, (char *)"-I", (char *)"-m", (char *)"engine.queue", 0 };
  char *const env[] = { (char *)"QMAILHOME=" QMAILHOME, (char *)"PATH=/usr/bin:/bin", 0 };

  execve(PYTHON, args, env);
  _exit(120);
}
