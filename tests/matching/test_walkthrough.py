"""docs/MATCHING.md's walkthrough runs as written: its bash block, verbatim, against a real uvicorn on the test
database, with the demo's consumer (``demo-consumer-1``, Demo Bakery GmbH) and a matched PPA and pool hour set up
here as ``manage.py demo``'s beat leaves them (tests/matching/test_report.py checks the figures themselves)."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from matching.models import Match
from matching.services.consumers import consumer_register
from matching.services.matcher import matching_run
from ops.demo_matching import CONSUMER_NAME
from tests.certificates.helpers import HOUR0
from tests.certificates.test_walkthrough import walkthrough
from tests.conftest import ROOT
from tests.factories import PASSWORD, MeterFactory, UserFactory
from tests.matching.helpers import after, consume, offer, producing_device
from tests.realtime.test_browser import processes, start_uvicorn

pytestmark = pytest.mark.django_db(transaction=True)
__all__ = ["processes"]  # a fixture, used by name


def test_the_matching_walkthrough_runs_as_written_against_a_live_server(processes):
    user = UserFactory(username="demo-consumer-1")
    bakery = consumer_register(user=user, name=CONSUMER_NAME, grid_zone="10YDE-VE-------2",
                               meters=[MeterFactory(owner=user)], match_from=HOUR0, actor="demo")  # fmt: skip
    consume(bakery, 0, ["0.5"])  # 500 Wh: 300 from the PPA, 200 from the pool
    consume(bakery, 1, ["0.25"])  # unmatched: the farm is quiet
    farm = producing_device({0: "0.6"})
    offer(farm, consumer=bakery, share="0.5")
    offer(farm, share="1")
    matching_run(now=after(3))
    base = start_uvicorn(processes)
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "API": base,
           "CONSUMER_PASSWORD": PASSWORD}  # fmt: skip

    run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", walkthrough("docs/MATCHING.md")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip

    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    out = run.stdout
    documents = json.loads("[" + re.sub(r"}\s*{", "},{", out.split("hour_start,")[0].strip()) + "]")
    month, first = documents[0], documents[1]
    assert month == {"score": "0.666667", "annual": "0.666667", "demand_wh": "750", "matched_wh": 500,
                     "unmatched_hours": 1, "hours": 2}  # fmt: skip
    assert (first["bilateral_wh"], first["pool_wh"]) == (300, 200)
    assert [c["kind"] for c in first["certificates"]] == ["bilateral", "pool"]
    assert "2026-03-01T00:00:00.000000Z,2026-03-01T01:00:00.000000Z,500,500,300,200,0,false," in out
    verified = json.loads(out.split("hour_start,")[1].split("\n", 3)[3].rsplit("Printable:", 1)[0])
    assert verified["status"] == "claimed" and verified["beneficiary"] == CONSUMER_NAME
    assert verified["match"]["kind"] == "bilateral" and verified["match"]["quantity_wh"] == 300
    assert str(Match.objects.get(kind="bilateral").bundle_id) in first["certificates"][0]["bundle_id"]
    assert f"{base}/matching/consumers/{bakery.id}/report?month=2026-03" in out
