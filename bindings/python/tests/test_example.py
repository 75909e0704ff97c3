"""examples/python/quickstart.py runs against the real service and from a file."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

EXAMPLE = ROOT / "examples" / "python" / "quickstart.py"


def test_example_against_the_service(service, topics):
    t = topics.new("example")
    service.apply()
    r = subprocess.run([sys.executable, str(EXAMPLE), service.endpoint, t, "5"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "consumed 6 records" in r.stdout
    assert r.stdout.count("delivered to east/") == 5


def test_example_from_a_file(service, topics):
    t = topics.new("example-file")
    service.apply()
    path = service.write_desired()
    r = subprocess.run([sys.executable, str(EXAMPLE), str(path), t, "3"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "consumed 4 records" in r.stdout
