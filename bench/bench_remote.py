"""Remote delivery throughput: deliveries/s of one process (engine.remote.deliver) to Postfix's smtp-sink on
loopback, one delivery at a time and 20 at once. Run: .venv/bin/python -m pytest bench/bench_remote.py --benchmark-only
"""

import asyncio
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from engine import remote  # noqa: E402
from support.qmailhome import make_qmailhome  # noqa: E402
from support.sink import SmtpSink  # noqa: E402

MESSAGE = b"From: bench@example.org\nTo: user@ex.test\nSubject: bench\n\n" + b"a body line of text\n" * 100
DELIVERIES = 200


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    home = make_qmailhome(str(tmp_path_factory.mktemp("bench") / "qmail"))
    sink = SmtpSink().start()
    with open(os.path.join(home, "control", "smtproutes"), "w") as f:
        f.write(f"ex.test:127.0.0.1:{sink.port}\n")
    yield home, remote.load_controls(home)
    sink.stop()


async def _deliver_all(home, controls, concurrency):
    gate = asyncio.Semaphore(concurrency)

    async def one(i):
        async with gate:
            return await remote.deliver("ex.test", b"bench@example.org", [b"u%d@ex.test" % i], MESSAGE,
                                        home=home, controls=controls)
    return await asyncio.gather(*(one(i) for i in range(DELIVERIES)))


@pytest.mark.parametrize("concurrency", [1, 20])
def test_deliveries_per_second(benchmark, setup, concurrency):
    home, controls = setup
    rates = []

    def run():
        started = time.perf_counter()
        results = asyncio.run(_deliver_all(home, controls, concurrency))
        rates.append(DELIVERIES / (time.perf_counter() - started))
        return results

    results = benchmark.pedantic(run, rounds=3, iterations=1)
    assert all(r.final[:1] == b"K" for r in results)
    benchmark.extra_info["deliveries_per_second"] = round(max(rates), 1)
    print(f"\nconcurrency {concurrency}: {max(rates):.0f} deliveries/s (best of 3 x {DELIVERIES})")
