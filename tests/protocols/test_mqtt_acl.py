"""``manage.py mqtt_acl`` against the real Mosquitto running as its own user: the files it writes stay
readable by the broker across a rewrite and a reload (SIGHUP)."""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import shutil
import signal
import stat
import tempfile
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from protocols.mqtt import acl
from tests.conftest import wait_until
from tests.factories import MeterFactory
from tests.protocols.conftest import Mosquitto
from tests.protocols.test_mqtt import Peer

try:
    BROKER = pwd.getpwnam("mosquitto")
except KeyError:
    BROKER = None
needs_root_and_broker_user = pytest.mark.skipif(
    os.geteuid() != 0 or BROKER is None, reason="giving files to the broker's user needs root and a mosquitto user"
)


@pytest.fixture
def broker_dir():
    """A directory the broker's user can traverse (pytest's tmp_path is private to the test's user)."""
    path = Path(tempfile.mkdtemp(prefix="gridtoken-acl-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def ingester_account(settings):
    settings.MQTT = dataclasses.replace(settings.MQTT, username="ingester", password="ingest-pw-1")
    return settings.MQTT


def write_files(directory: Path, **options) -> str:
    out = StringIO()
    call_command("mqtt_acl", passwords=directory / "passwd", acl=directory / "acl", stdout=out, **options)
    return out.getvalue()


def owner_and_mode(path: Path) -> tuple[str, str, int]:
    info = path.stat()
    return pwd.getpwuid(info.st_uid).pw_name, grp.getgrgid(info.st_gid).gr_name, stat.S_IMODE(info.st_mode)


@needs_root_and_broker_user
def test_a_broker_running_as_mosquitto_reads_the_rewritten_files_after_a_reload(db, broker_dir, ingester_account):
    first = MeterFactory()
    write_files(broker_dir)
    for name in ("passwd", "acl"):
        assert owner_and_mode(broker_dir / name) == ("mosquitto", grp.getgrgid(BROKER.pw_gid).gr_name, 0o640)
    broker = Mosquitto(
        broker_dir,
        ("allow_anonymous false", f"password_file {broker_dir / 'passwd'}", f"acl_file {broker_dir / 'acl'}"),
        user="mosquitto",
    ).start()
    try:
        assert pwd.getpwuid(os.stat(f"/proc/{broker.process.pid}").st_uid).pw_name == "mosquitto"
        second = MeterFactory()  # added after the broker started: known to it only after the rewrite and reload
        write_files(broker_dir)
        broker.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "Reloading config" in broker.log.read_text(), timeout=10, message="the reload")
        time.sleep(0.3)  # the password and ACL files are read right after the line
        assert broker.process.poll() is None, broker.log.read_text()
        assert "Unable to open" not in broker.log.read_text()

        secret = ingester_account.device_secret
        ingester = Peer(broker.port, username="ingester", password="ingest-pw-1", subscribe=["tele/+/SENSOR"])
        device = Peer(broker.port, username=second.serial, password=acl.device_password(secret, second.serial))
        device.publish(f"tele/{second.serial}/SENSOR", "new meter, allowed topic")
        wait_until(lambda: ingester.received, timeout=10, interval=0.05, message="the new meter's message")
        assert ingester.received == [(f"tele/{second.serial}/SENSOR", b"new meter, allowed topic")]
        wrong = Peer(broker.port, username=second.serial, password="wrong", reconnect_on_failure=False)
        assert wrong.connack.is_failure
        old = Peer(broker.port, username=first.serial, password=acl.device_password(secret, first.serial))
        assert not old.connack.is_failure
        for client in (ingester, device, wrong, old):
            client.close()
    finally:
        broker.stop()


@needs_root_and_broker_user
def test_owner_and_group_options_take_names_or_numbers(db, tmp_path, ingester_account):
    nobody, nogroup = pwd.getpwnam("nobody"), grp.getgrnam("nogroup")
    write_files(tmp_path, owner="nobody", group="nogroup")
    assert owner_and_mode(tmp_path / "passwd") == ("nobody", "nogroup", 0o640)
    write_files(tmp_path, owner=str(nobody.pw_uid))  # the user's own group when no group is named
    assert owner_and_mode(tmp_path / "acl") == ("nobody", grp.getgrgid(nobody.pw_gid).gr_name, 0o640)
    write_files(tmp_path, group=str(nogroup.gr_gid))  # the default owner, another group
    assert owner_and_mode(tmp_path / "acl") == ("mosquitto", "nogroup", 0o640)


def test_an_unknown_owner_is_refused_before_anything_is_written(db, tmp_path, ingester_account):
    with pytest.raises(CommandError, match="--owner/--group: no user 'no-such-user-x'"):
        write_files(tmp_path, owner="no-such-user-x")
    assert list(tmp_path.iterdir()) == []


def test_without_a_broker_user_an_existing_file_keeps_its_owner_and_a_new_one_is_the_callers(tmp_path):
    existing, new = tmp_path / "passwd", tmp_path / "acl"
    existing.write_text("old\n")
    if os.geteuid() == 0:
        os.chown(existing, pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
    kept = (existing.stat().st_uid, existing.stat().st_gid)
    assert acl.file_owner(existing, broker_user="no-such-broker-user") == kept
    assert acl.file_owner(new, broker_user="no-such-broker-user") == (os.geteuid(), os.getegid())
    acl.write_private(existing, "new\n", owner=acl.file_owner(existing, broker_user="no-such-broker-user"))
    assert (existing.stat().st_uid, existing.stat().st_gid, existing.read_text()) == (*kept, "new\n")


def test_a_write_that_fails_leaves_the_old_file_whole_and_no_temporary_file(tmp_path):
    path = tmp_path / "passwd"
    acl.write_private(path, "old\n", owner=(os.geteuid(), os.getegid()))
    with pytest.raises(UnicodeEncodeError):
        acl.write_private(path, "half \udc80 written\n", owner=(os.geteuid(), os.getegid()))
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["passwd"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
