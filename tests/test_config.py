from decimal import Decimal

import pytest

from config import ConfigError, load

BASE = {"DEBUG": "true"}


def test_defaults_match_the_spec():
    cfg = load(BASE).tokenization
    assert cfg.kwh_to_token_ratio == Decimal("1.0")
    assert (cfg.decimals, cfg.batch_size, cfg.polling_interval_secs) == (9, 50, 60)
    assert cfg.max_reading_kwh == Decimal("100.0")
    assert cfg.auto_mint_enabled is True


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("TOKENIZATION_KWH_TO_TOKEN_RATIO", "0", "> 0"),
        ("TOKENIZATION_KWH_TO_TOKEN_RATIO", "abc", "> 0"),
        ("TOKENIZATION_DECIMALS", "19", "from 0 to 18"),
        ("TOKENIZATION_BATCH_SIZE", "1001", "from 1 to 1000"),
        ("TOKENIZATION_POLLING_INTERVAL_SECS", "0", "from 1 to 3600"),
        ("TOKENIZATION_AUTO_MINT_ENABLED", "maybe", "true or false"),
        ("TOKENIZATION_MINT_STRATEGY", "magic", "spl, anchor"),
        ("REDIS_URL", "http://x", "redis://"),
        ("DATABASE_URL", "mysql://u@h/db", "postgres://"),
        ("SOLANA_COMMITMENT", "processed", "dropped fork"),
        ("SOLANA_COMMITMENT", "recent", "confirmed, finalized"),
        ("TOKENIZATION_MINT_BASIS", "hourly", "reading, export, window"),
        ("TOKENIZATION_WINDOW_SECS", "700", "a divisor of 3600"),
        ("VEE_ACTIONS", "spike=maybe", "actions off, flag, hold, reject"),
        ("VEE_ACTIONS", "tides=hold", "rules capacity, spike"),
        ("MQTT_POISON_MAX_DELIVERIES", "1", "from 2 to 100"),
    ],
)
def test_an_invalid_value_names_variable_value_and_allowed_range(name, value, allowed):
    with pytest.raises(ConfigError) as info:
        load({**BASE, name: value})
    message = str(info.value)
    assert name in message and repr(value) in message and allowed in message


def test_vee_actions_override_the_defaults_rule_by_rule():
    vee = load({**BASE, "VEE_ACTIONS": "spike=hold, gap=reject"}).vee
    assert vee.actions == {
        "capacity": "hold", "spike": "hold", "frozen": "flag", "gap": "reject", "clock_drift": "flag",
        "meter_quality": "hold",
    }  # fmt: skip
    assert vee.action("gap", {"gap": "off"}) == "off" and vee.action("gap", {"gap": "bogus"}) == "reject"


def test_the_anchor_strategy_needs_windows_on_15_minute_boundaries():
    anchor = {**BASE, "TOKENIZATION_MINT_STRATEGY": "anchor", "TOKENIZATION_MINT_BASIS": "window"}
    with pytest.raises(ConfigError, match="mint_generation"):
        load({**anchor, "TOKENIZATION_WINDOW_SECS": "300"})
    assert load({**anchor, "TOKENIZATION_WINDOW_SECS": "1800"}).tokenization.window_secs == 1800


def test_secret_key_is_required_outside_development():
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load({"DEBUG": "false", "SOLANA_KEYPAIR_PATH": "/k.json"})
    assert load({"DEBUG": "false", "SECRET_KEY": "s" * 50, "SOLANA_KEYPAIR_PATH": "/k.json"}).service.debug is False


def test_token_amount_of_the_largest_reading_must_fit_64_bits():
    with pytest.raises(ConfigError, match="TOKENIZATION_MAX_READING_KWH"):
        load({**BASE, "TOKENIZATION_DECIMALS": "18", "TOKENIZATION_MAX_READING_KWH": "100"})


def test_manage_py_stops_with_the_message_on_a_bad_value():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "DEBUG": "true", "TOKENIZATION_BATCH_SIZE": "5000"},
    )
    assert result.returncode == 2
    assert "TOKENIZATION_BATCH_SIZE='5000'" in result.stderr and "from 1 to 1000" in result.stderr


def test_retention_is_off_by_default_and_needs_no_destination():
    retention = load(BASE).retention
    assert retention.days is None and retention.archive_url is None


def test_a_retention_without_a_destination_says_what_to_set():
    with pytest.raises(ConfigError) as info:
        load({**BASE, "READINGS_RETENTION_DAYS": "90"})
    assert info.value.name == "READINGS_ARCHIVE_URL" and "unset READINGS_RETENTION_DAYS" in str(info.value)


@pytest.mark.parametrize(
    ("variables", "name", "allowed"),
    [
        ({"READINGS_RETENTION_DAYS": "7"}, "READINGS_RETENTION_DAYS", "at least 31 days"),
        (
            {"READINGS_RETENTION_DAYS": "60", "TOKENIZATION_READING_MAX_AGE_DAYS": "90"},
            "READINGS_RETENTION_DAYS",
            "at least 91 days",
        ),
        ({"READINGS_RETENTION_DAYS": "ninety"}, "READINGS_RETENTION_DAYS", "an integer"),
        ({"READINGS_ARCHIVE_URL": "ftp://archive/readings"}, "READINGS_ARCHIVE_URL", "file:///"),
        ({"READINGS_ARCHIVE_URL": "file://relative/dir"}, "READINGS_ARCHIVE_URL", "s3://bucket"),
        ({"READINGS_ARCHIVE_S3_ENDPOINT": "minio:9000"}, "READINGS_ARCHIVE_S3_ENDPOINT", "http://"),
        ({"READINGS_ARCHIVE_S3_ACCESS_KEY": "AKIA"}, "READINGS_ARCHIVE_S3_SECRET_KEY", "together"),
    ],
)
def test_an_invalid_retention_setting_names_the_variable(variables, name, allowed):
    destination = {"READINGS_ARCHIVE_URL": "file:///var/lib/gridtoken/archive"}
    with pytest.raises(ConfigError) as info:
        load({**BASE, **destination, **variables})
    assert info.value.name == name and allowed in str(info.value)


def test_archive_destinations_parse_to_a_directory_or_a_bucket_prefix():
    local = load({**BASE, "READINGS_RETENTION_DAYS": "90", "READINGS_ARCHIVE_URL": "file:///var/lib/gt/archive/"})
    assert (local.retention.days, local.retention.scheme, local.retention.location) == (
        90,
        "file",
        "/var/lib/gt/archive",
    )
    s3 = load(
        {**BASE, "READINGS_ARCHIVE_URL": "s3://archive/readings/", "READINGS_ARCHIVE_S3_ENDPOINT": "http://s3:9000"}
    )
    assert (s3.retention.scheme, s3.retention.location, s3.retention.s3_endpoint) == (
        "s3",
        "archive/readings",
        "http://s3:9000",
    )


SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
PKCS11 = {**BASE, "SIGNER_BACKEND": "pkcs11", "SIGNER_PKCS11_MODULE": SOFTHSM, "SIGNER_PKCS11_TOKEN_LABEL": "gt"}


def test_the_hsm_signer_reads_its_pin_from_a_file_and_never_shows_it(tmp_path):
    pin_file = tmp_path / "pin"
    pin_file.write_text("s3cret-pin\n")
    production = {**PKCS11, "DEBUG": "false", "SECRET_KEY": "s" * 50, "SIGNER_PKCS11_PIN_FILE": str(pin_file)}

    chain = load(production).chain  # no SOLANA_KEYPAIR_PATH needed: the HSM holds the authority

    assert (chain.signer.backend, str(chain.signer.module), chain.signer.token_label) == ("pkcs11", SOFTHSM, "gt")
    assert (chain.signer.key_label, chain.signer.pin) == ("gridtoken-authority", "s3cret-pin")
    assert chain.signer.pin_file == pin_file  # read again at each login: a fixed file needs no restart
    assert "s3cret-pin" not in repr(chain) and "s3cret-pin" not in str(chain)
    from_environment = load({**PKCS11, "SIGNER_PKCS11_PIN": "from-env"}).chain.signer
    assert (from_environment.pin, from_environment.pin_file) == ("from-env", None)
    assert load(BASE).chain.signer.backend == "file"


@pytest.mark.parametrize(
    ("changes", "name", "allowed"),
    [
        ({"SIGNER_BACKEND": "vault"}, "SIGNER_BACKEND", "file, pkcs11"),
        ({"SIGNER_PKCS11_MODULE": "/no/such/lib.so"}, "SIGNER_PKCS11_MODULE", "PKCS#11 library"),
        ({"SIGNER_PKCS11_TOKEN_LABEL": ""}, "SIGNER_PKCS11_TOKEN_LABEL", "1 to 32 bytes"),
        ({"SIGNER_PKCS11_KEY_LABEL": "k" * 33}, "SIGNER_PKCS11_KEY_LABEL", "1 to 32 bytes"),
        ({}, "SIGNER_PKCS11_PIN_FILE", "user PIN"),
        ({"SIGNER_PKCS11_PIN_FILE": "/no/such/pin"}, "SIGNER_PKCS11_PIN_FILE", "readable file"),
        ({"SIGNER_PKCS11_PIN_FILE": "/etc/hostname", "SIGNER_PKCS11_PIN": "x"}, "SIGNER_PKCS11_PIN", "one source"),
    ],
)
def test_a_bad_hsm_signer_setting_names_the_variable_and_never_the_pin(changes, name, allowed):
    with pytest.raises(ConfigError) as info:
        load({**PKCS11, **changes})
    assert info.value.name == name and allowed in str(info.value)
    assert "'x'" not in str(info.value)
