"""ProcSampler on a real child process: CPU, peak RSS, loopback TCP bytes (kernel counters)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from bench.peers.measure import ProcSampler

_CHILD = textwrap.dedent("""
    import socket, sys, time
    buf = bytearray(80 * 1024 * 1024)          # touch 80 MiB
    for i in range(0, len(buf), 4096):
        buf[i] = 1
    t = time.process_time()
    while time.process_time() - t < 0.6:       # burn 0.6 s of CPU
        pass
    s = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    s.sendall(b"x" * 300_000)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    time.sleep(1.5)                            # keep the connection up for the sampler
    s.close()
""")


@pytest.mark.integration
def test_sampler_sees_cpu_memory_and_socket_bytes() -> None:
    marker = "proc-sampler-test-marker"
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        with ProcSampler(lambda cmd: marker in cmd, interval=0.2) as sampler:
            child = subprocess.Popen([sys.executable, "-c", _CHILD, marker, str(port)])
            try:
                conn, _ = srv.accept()
                with conn:
                    got = 0
                    while chunk := conn.recv(65536):
                        got += len(chunk)
                    conn.sendall(b"k")
                    assert child.wait(timeout=30) == 0
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait(timeout=10)
    assert got == 300_000
    (sample,) = sampler.samples.values()
    assert sample.cpu_s >= 0.5
    assert sample.peak_rss_mib >= 80
    sent, received = sample.bytes_to(port)
    assert sent == 300_000 and received == 1
