# pyqmail-ldap. `make test` is the one command CI runs (see .ci/run).

# Debian's interpreter, not one under /root: processes that drop to qmail's
# users (qmailq, qmails, qmailr, mailbox owners) must still be able to run Python.
PYTHON    ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV      ?= .venv
PY        := $(VENV)/bin/python
QMAILHOME ?= /var/qmail
SHELL     := /bin/bash

# Debian packages the build and the tests need (real slapd, tinycdb, tcpserver, swaks ...).
DEBS := gcc python3-dev python3-venv libldap2-dev libsasl2-dev slapd ldap-utils tinycdb ucspi-tcp swaks daemontools \
        postfix dnsmasq-base openssl zlib1g-dev
# strace: file-operation counts in tests/test_queue.py, tests/test_maildir.py and the benchmarks
DEBS += strace
DEBS += $(shell cat tests/debian-packages.txt 2>/dev/null | sed 's/#.*//')
# bench/suite.py (make bench, tests/test_bench_suite.py): Postfix's LDAP map and strace's file-operation count.
DEBS += postfix-ldap strace
# tests/test_pop3pool.py: a real POP3 client against the master's POP3 pool
DEBS += fetchmail
# tests/test_authdovecot.py, tests/test_authimap.py: a throwaway Dovecot using auth_dovecot as its passdb
DEBS += dovecot-imapd dovecot-pop3d
# tests/test_tcpenv.py: a real RFC 1413 identd for tcp-env's TCPREMOTEINFO
DEBS += oidentd

.PHONY: all test debs venv build setup check bench bench-kernels run clean

all: build

debs:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:" $$missing; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages (run as root to install): $$missing" >&2; exit 1; \
	  fi; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel

venv: $(PY)

# Rebuild the compiled kernels whenever a source under ext/ or the conf files change.
.stamp-build: $(PY) pyproject.toml setup.py conf-spawn conf-split $(wildcard ext/*)
	$(PY) -m pip install -q -e '.[test]'
	$(PY) setup.py -q build_ext --inplace
	@touch $@

build: debs .stamp-build

test: build
	QMAIL_REQUIRE_COMPILED=1 $(PY) -m pytest tests

setup: build
	$(PY) -m engine.install $(if $(SINGLEUSER),--single-user) $(QMAILHOME)

check: build
	$(PY) -m engine.instcheck $(QMAILHOME)

bench-kernels: build
	$(PY) -m pytest bench -q -s -p no:cacheprovider

# Kernels, then our server against Postfix side by side (bench/suite.py; figures in bench/results/).
bench: build
	@$(PY) -c 'import matplotlib' 2>/dev/null || $(PY) -m pip install -q matplotlib
	@start=$$(date +%s); \
	$(PY) -m pytest bench -q -s -p no:cacheprovider && \
	$(PY) bench/suite.py $(BENCHFLAGS) && \
	echo "make bench: $$(( $$(date +%s) - start )) s in all"

# The demo needs no Debian package of its own: without slapd it says why and runs on users/assign.
run:
	@$(MAKE) -s debs || echo "make run: Debian packages missing (see above); slapd may be unavailable" >&2
	@$(MAKE) -s .stamp-build
	$(PY) -m engine.demo run

clean:
	rm -rf build *.egg-info engine/_*_c*.so engine/_buildconf.py .stamp-build
