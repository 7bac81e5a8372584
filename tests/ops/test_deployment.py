"""Docker cannot run here, so the deployment files are read against what the tests do run."""

import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from django.core.management import get_commands
from paho.mqtt.enums import CallbackAPIVersion

from config import load
from minting.selectors import DECISIONS_BLOCKED_RECENT, FEE_PAYER_LOW_LAMPORTS
from ops import demo
from protocols.mqtt import acl
from tests.conftest import ROOT, free_port, wait_until

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ("localnet", "init", "web", "worker", "beat", "mqtt-acl", "ingester")
PLACEHOLDER_OPTIONS = {"--host", "--port", "--ledger", "--schedule"}


def normalised(argv: list[str]) -> list[str]:
    """Drop the interpreter prefix (``python -m X`` is ``X``) and blank out host/port/path values."""
    argv = list(argv)
    if argv[0].endswith(("python", "python3")) or argv[0] == demo.PYTHON:
        argv = argv[2:] if argv[1] == "-m" else ["python", *argv[1:]]
    return [("VALUE" if i and argv[i - 1] in PLACEHOLDER_OPTIONS else arg) for i, arg in enumerate(argv)]


DEMO = demo.commands(host="127.0.0.1", port=8000, rpc_port=8899, ledger="/x/ledger.bin", beat_schedule="/x/beat")


@pytest.mark.parametrize("name", ["localnet", "web", "worker", "beat", "ingester"])
def test_compose_runs_the_same_command_as_the_demo(name):
    assert normalised(SERVICES[name]["command"]) == normalised(DEMO[name])


def test_the_one_shot_init_migrates_and_runs_both_chain_inits_before_the_app_starts():
    script = SERVICES["init"]["command"][-1]
    inits = " && ".join(" ".join(normalised(DEMO[name])) for name in ("chain_init", "certificates_chain_init"))
    assert script == "python manage.py migrate --noinput && " + inits
    assert SERVICES["init"]["restart"] == "no"
    for name in ("web", "worker", "beat"):
        assert SERVICES[name]["depends_on"] == {"init": {"condition": "service_completed_successfully"}}
    assert {"db", "redis", "localnet"} <= set(SERVICES["init"]["depends_on"])


def test_compose_uses_the_images_and_settings_the_issue_names():
    assert SERVICES["db"]["image"] == "postgres:15" and SERVICES["redis"]["image"] == "redis:7"
    assert SERVICES["web"]["environment"]["DB_POOL"] == "true"
    for name in APP_SERVICES:
        service = SERVICES[name]
        assert service["build"] == "." and service["env_file"] == [{"path": ".env", "required": False}]
        assert service["environment"]["SOLANA_KEYPAIR_PATH"] == "/run/gridtoken/authority.json"
    # Only the one-shot init may write the authority key; the rest mount it read-only.
    assert SERVICES["init"]["volumes"] == ["authority:/run/gridtoken"]
    assert all(SERVICES[n]["volumes"] == ["authority:/run/gridtoken:ro"] for n in ("web", "worker", "beat"))
    # Published ports are loopback-only.
    assert all(port.startswith("127.0.0.1:") for service in SERVICES.values() for port in service.get("ports", []))


def test_the_image_runs_as_a_non_root_user_and_serves_the_web_command():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "\nFROM python:3.11-slim\n" in dockerfile
    assert "RUN pip install -r requirements.txt" in dockerfile
    user = re.search(r"^USER (\S+)$", dockerfile, re.MULTILINE)[1]
    assert user not in ("root", "0")
    cmd = yaml.safe_load(re.search(r"^CMD (.+)$", dockerfile, re.MULTILINE)[1])
    assert cmd == SERVICES["web"]["command"]


def test_secrets_and_local_state_never_enter_the_image():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".secrets", "var", ".venv", ".git", "*.keypair.json"} <= set(ignored)


def read_env_file(path: Path) -> dict:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, value = line.split("=", 1)
            values[name] = re.split(r"\s+#", value)[0].strip()
    return values


def test_the_staging_example_is_valid_and_runs_on_devnet_with_auto_mint():
    values = read_env_file(ROOT / ".env.staging.example")
    cfg = load({**values, "SECRET_KEY": "s" * 50})
    assert (cfg.service.debug, cfg.chain.cluster, cfg.tokenization.auto_mint_enabled) == (False, "devnet", True)
    assert "devnet" in cfg.chain.rpc_url and values["SOLANA_KEYPAIR_PATH"].endswith(".json")


def test_the_production_example_is_valid_and_starts_in_manual_mode_on_mainnet():
    values = read_env_file(ROOT / ".env.production.example")
    cfg = load({**values, "SECRET_KEY": "s" * 50})
    assert (cfg.chain.cluster, cfg.tokenization.auto_mint_enabled) == ("mainnet-beta", False)
    assert cfg.ingest.signature_required is True and cfg.service.db_pool is True
    assert values["SECRET_KEY"] == ""  # a secret is never shipped in an example


RULES = yaml.safe_load((ROOT / "docs/alerts/gridtoken-rules.yml").read_text())["groups"][0]["rules"]


def test_every_metric_an_alert_uses_is_exported(exported_metrics):
    used = {name for rule in RULES for name in re.findall(r"gridtoken_[a-z_]+", rule["expr"])}
    assert used and used <= set(exported_metrics)


def github_anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")


def test_every_alert_links_to_a_runbook_section_that_exists():
    operations = (ROOT / "docs/OPERATIONS.md").read_text()
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", operations, re.MULTILINE)}
    for rule in RULES:
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor in anchors, rule["alert"]
        assert rule["alert"] in operations


def rule(name: str) -> dict:
    (found,) = [r for r in RULES if r["alert"] == name]
    return found


def test_every_rule_has_a_known_severity_and_a_valid_duration():
    for r in RULES:
        assert r["labels"]["severity"] in {"page", "warning", "info"}, r["alert"]
        assert re.fullmatch(r"(\d+[smh])+", r.get("for", "0s")), r["alert"]


def test_the_pause_alert_keeps_the_reason_and_bridges_gaps_shorter_than_its_for():
    expr = rule("GridTokenMintingPaused")["expr"]
    assert (
        "by (job, reason)" in expr
        and "{{ $labels.reason }}" in rule("GridTokenMintingPaused")["annotations"]["summary"]
    )
    window = re.search(r"max_over_time\(gridtoken_minting_paused\[(\d+)m\]\)", expr).group(1)
    assert int(rule("GridTokenMintingPaused")["for"].rstrip("m")) >= int(window)  # one blip never fires


def test_fee_payer_alerts_use_the_dashboards_threshold_and_do_not_overlap():
    low, critical = rule("GridTokenFeePayerLow"), rule("GridTokenFeePayerCritical")
    assert f"< {FEE_PAYER_LOW_LAMPORTS}" in low["expr"] and ">= 10000000" in low["expr"]
    assert "< 10000000" in critical["expr"]
    assert (low["labels"]["severity"], critical["labels"]["severity"]) == ("warning", "page")


def test_the_decisions_alert_window_matches_what_counts_as_recent():
    expr = rule("GridTokenDecisionsBlocked")["expr"]
    assert f"< {int(DECISIONS_BLOCKED_RECENT.total_seconds())}" in expr
    assert rule("GridTokenDecisionsBlocked")["for"] == "5m"


def compose_default(value: str) -> str:
    """The value Compose uses when the ``${VAR:-default}`` variable is unset."""
    return re.fullmatch(r"\$\{\w+:-(.*)\}", value)[1]


def test_the_ingester_runs_ingest_mqtt_like_the_worker_against_the_compose_broker():
    ingester, worker = SERVICES["ingester"], SERVICES["worker"]
    assert ingester["command"] == ["python", "manage.py", "ingest_mqtt"]
    assert get_commands()["ingest_mqtt"] == "protocols"
    assert ingester["restart"] == "unless-stopped" and ingester["image"] == worker["image"]
    assert {k: v for k, v in ingester["environment"].items() if not k.startswith("MQTT_")} == worker["environment"]
    assert ingester["depends_on"]["init"] == {"condition": "service_completed_successfully"}
    assert "mosquitto" in ingester["depends_on"]
    assert ingester["volumes"] == []  # it stores readings; only workers (and web) hold the mint authority key
    url = compose_default(ingester["environment"]["MQTT_URL"])
    client_id = compose_default(ingester["environment"]["MQTT_CLIENT_ID"])
    debug = compose_default(worker["environment"]["DEBUG"])
    cfg = load({"DEBUG": debug, "MQTT_URL": url, "MQTT_CLIENT_ID": client_id}).mqtt
    assert (cfg.host, cfg.port, cfg.client_id) == ("mosquitto", 1883, "gridtoken-ingest-1")
    # mqtt_acl writes the ingester's account from the same URL.
    assert SERVICES["mqtt-acl"]["environment"]["MQTT_URL"] == ingester["environment"]["MQTT_URL"]
    assert cfg.username and cfg.password


MOSQUITTO_CONF = ROOT / "deploy/mosquitto/mosquitto.conf"


def conf_values(text: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition(" ")
            values.setdefault(name, []).append(value)
    return values


def test_the_broker_mounts_its_config_and_reads_the_files_mqtt_acl_writes():
    broker, writer = SERVICES["mosquitto"], SERVICES["mqtt-acl"]
    assert broker["image"] == "eclipse-mosquitto:2" and broker["restart"] == "unless-stopped"
    assert "./deploy/mosquitto/mosquitto.conf:/mosquitto/config/mosquitto.conf:ro" in broker["volumes"]
    conf = conf_values(MOSQUITTO_CONF.read_text())
    assert conf["allow_anonymous"] == ["false"] and conf["persistence"] == ["true"]
    assert "mosquittodata:" + conf["persistence_location"][0].rstrip("/") in broker["volumes"]
    # The broker reads, from the volume mqtt-acl writes, the very files it writes.
    (auth,) = [v.split(":")[1] for v in broker["volumes"] if v.startswith("mqttauth:")]
    (written,) = [v.split(":")[1] for v in writer["volumes"] if v.startswith("mqttauth:")]
    argv = writer["command"]
    assert argv[:3] == ["python", "manage.py", "mqtt_acl"]
    for option, setting in (("--passwords", "password_file"), ("--acl", "acl_file")):
        path = argv[argv.index(option) + 1]
        assert path.startswith(written + "/") and conf[setting] == [auth + path.removeprefix(written)]
    assert broker["depends_on"] == {"mqtt-acl": {"condition": "service_completed_successfully"}}
    # The app image's group (Dockerfile: uid/gid 10001) reads mqtt_acl's 0640 files.
    assert broker["user"].split(":")[1] == "10001" and "--uid 10001 --user-group" in (ROOT / "Dockerfile").read_text()


def connack(port: int, username: str | None, password: str | None):
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
    if username is not None:
        client.username_pw_set(username, password)
    answered, result = threading.Event(), []
    client.on_connect = lambda c, u, flags, reason_code, props: (result.append(reason_code), answered.set())
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert answered.wait(10), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="no mosquitto binary")
def test_the_broker_config_refuses_anonymous_clients_and_admits_the_ingester(tmp_path):
    """The shipped mosquitto.conf, run by the real Mosquitto 2, with its paths moved into ``tmp_path``."""
    port = free_port()
    (tmp_path / "data").mkdir()
    acl.write_private(tmp_path / "passwd", acl.passwords_text([("gridtoken-ingester", "ingest-pw-1")]))
    acl.write_private(tmp_path / "acl", "user gridtoken-ingester\ntopic read #\n")
    text = MOSQUITTO_CONF.read_text().replace("listener 1883", f"listener {port} 127.0.0.1")
    text = text.replace("/mosquitto/auth/", f"{tmp_path}/").replace("/mosquitto/data/", f"{tmp_path}/data/")
    (tmp_path / "mosquitto.conf").write_text(text + "user root\n")  # run as the test's user, not mosquitto
    with open(tmp_path / "log", "wb") as log:
        broker = subprocess.Popen([MOSQUITTO, "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=log)
    try:
        wait_until(lambda: listening(port) or broker.poll() is not None, timeout=10)
        assert broker.poll() is None, (tmp_path / "log").read_text()
        assert connack(port, None, None).is_failure
        assert connack(port, "gridtoken-ingester", "wrong").is_failure
        assert not connack(port, "gridtoken-ingester", "ingest-pw-1").is_failure
    finally:
        broker.terminate()
        broker.wait(timeout=10)
