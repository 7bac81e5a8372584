"""docs/CERTIFICATES.md's walkthrough runs as written: its bash block, verbatim, against a real uvicorn on the test
database, with the demo's accounts and a demo meter's settled history. The test plays the beat's part (issuance)
while the block waits for a bundle, then checks the registry the block left."""

from __future__ import annotations

import os
import re
import subprocess
import time
from types import SimpleNamespace

import pytest

from certificates.models import CertificateBundle, ProductionDevice
from certificates.services.issuance import certificates_issue_due
from tests.certificates.helpers import add_readings, close_hour
from tests.conftest import ROOT
from tests.factories import PASSWORD, MeterFactory, UserFactory
from tests.realtime.test_browser import processes, start_uvicorn

pytestmark = pytest.mark.django_db(transaction=True)
__all__ = ["processes"]  # a fixture, used by name
DEADLINE_SECS = 180


def walkthrough(document: str = "docs/CERTIFICATES.md") -> str:
    """The one bash block of the document's walkthrough section."""
    section = (ROOT / document).read_text().split("## Walkthrough", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    return block


def test_the_certificates_walkthrough_runs_as_written_against_a_live_server(processes):
    producer = UserFactory(username="demo-producer-1")
    buyer = UserFactory(username="demo-producer-2")
    UserFactory(username="demo-operator", is_staff=True)
    meter = MeterFactory(owner=producer, serial="DEMO0101-1-01")
    add_readings(SimpleNamespace(meter=meter), 0, ["0.1"] * 4)  # an hour of 400 Wh, settled (minted)
    close_hour(SimpleNamespace(meter=meter), 0)
    base = start_uvicorn(processes)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "API": base,
        "PRODUCER_PASSWORD": PASSWORD,
        "OPERATOR_PASSWORD": PASSWORD,
    }

    run = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", walkthrough()],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + DEADLINE_SECS
    while run.poll() is None and time.monotonic() < deadline:
        certificates_issue_due()  # the beat's tick, while the block waits for a bundle
        time.sleep(0.5)
    if run.poll() is None:
        run.kill()
    out, err = run.communicate()

    assert run.returncode == 0, f"{out[-3000:]}\n{err[-3000:]}"
    assert '"status": "approved"' in out and out.rstrip().splitlines()[-1] != "null"
    assert "transfer_to_self" in out.splitlines()
    device = ProductionDevice.objects.get(meter=meter)
    assert device.status == "approved"
    live = CertificateBundle.objects.filter(issuance__device=device).exclude(status="split")
    held = {(b.holder_id, b.range_start, b.range_end, b.status, b.beneficiary) for b in live}
    assert held == {
        (buyer.id, 1, 100, "active", ""),
        (producer.id, 101, 150, "claimed", "Acme GmbH"),
        (producer.id, 151, 400, "active", ""),
    }
