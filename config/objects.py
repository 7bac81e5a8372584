"""The typed configuration objects, one per concern, each built from the environment by ``from_env``."""

from __future__ import annotations

import socket
import string
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import environ

from config.environment import ConfigError, Env
from config.fees import FeeConfig
from config.providers import DEFAULT_RPC_URL, RpcEndpoint, RpcProvidersConfig
from config.retention import RetentionConfig
from config.signer import SignerConfig

BASE_DIR = Path(__file__).resolve().parent.parent
U64_MAX = 2**64 - 1
I64_MAX = 2**63 - 1
SOLANA_CLUSTERS = ("localnet", "devnet", "testnet", "mainnet-beta")
# What a reading mints: its own positive net kWh, its export energy, or nothing until its settlement window's
# net surplus is minted once per (meter, window). docs/METER_DATA.md.
MINT_BASES = ("reading", "export", "window")
VEE_RULES = ("capacity", "spike", "frozen", "gap", "clock_drift", "meter_quality")
VEE_ACTIONS = ("off", "flag", "hold", "reject")
VEE_DEFAULT_ACTIONS = "capacity=hold,spike=off,frozen=flag,gap=flag,clock_drift=flag,meter_quality=hold"


@dataclass(frozen=True)
class TokenizationConfig:
    kwh_to_token_ratio: Decimal
    decimals: int
    auto_mint_enabled: bool
    auto_mint_percentage: int
    polling_interval_secs: int
    batch_size: int
    max_reading_kwh: Decimal
    reading_max_age_days: int
    duplicate_window_secs: int
    future_tolerance_secs: int
    max_retry_attempts: int
    initial_retry_delay_secs: int
    retry_backoff_multiplier: Decimal
    max_retry_delay_secs: int
    trigger_debounce_ms: int
    mint_strategy: str
    mint_basis: str
    window_secs: int
    window_grace_secs: int

    @classmethod
    def from_env(cls, env: Env) -> TokenizationConfig:
        cfg = cls(
            kwh_to_token_ratio=env.decimal("TOKENIZATION_KWH_TO_TOKEN_RATIO", "1.0", gt=Decimal(0)),
            decimals=env.int("TOKENIZATION_DECIMALS", 9, min=0, max=18),
            auto_mint_enabled=env.bool("TOKENIZATION_AUTO_MINT_ENABLED", True),
            auto_mint_percentage=env.int("TOKENIZATION_AUTO_MINT_PERCENTAGE", 100, min=0, max=100),
            polling_interval_secs=env.int("TOKENIZATION_POLLING_INTERVAL_SECS", 60, min=1, max=3600),
            batch_size=env.int("TOKENIZATION_BATCH_SIZE", 50, min=1, max=1000),
            max_reading_kwh=env.decimal("TOKENIZATION_MAX_READING_KWH", "100.0", gt=Decimal(0)),
            reading_max_age_days=env.int("TOKENIZATION_READING_MAX_AGE_DAYS", 7, min=1, max=3650),
            duplicate_window_secs=env.int("TOKENIZATION_DUPLICATE_WINDOW_SECS", 900, min=0, max=86400),
            future_tolerance_secs=env.int("TOKENIZATION_FUTURE_TOLERANCE_SECS", 300, min=0, max=86400),
            max_retry_attempts=env.int("TOKENIZATION_MAX_RETRY_ATTEMPTS", 3, min=1, max=100),
            initial_retry_delay_secs=env.int("TOKENIZATION_INITIAL_RETRY_DELAY_SECS", 300, min=1, max=86400),
            retry_backoff_multiplier=env.decimal(
                "TOKENIZATION_RETRY_BACKOFF_MULTIPLIER", "2.0", ge=Decimal(1), le=Decimal(10)
            ),
            max_retry_delay_secs=env.int("TOKENIZATION_MAX_RETRY_DELAY_SECS", 3600, min=1, max=7 * 86400),
            trigger_debounce_ms=env.int("TOKENIZATION_TRIGGER_DEBOUNCE_MS", 200, min=0, max=5000),
            mint_strategy=env.str("TOKENIZATION_MINT_STRATEGY", "spl", choices=("spl", "anchor")),
            mint_basis=env.str("TOKENIZATION_MINT_BASIS", "reading", choices=MINT_BASES),
            window_secs=env.int("TOKENIZATION_WINDOW_SECS", 900, min=60, max=3600),
            window_grace_secs=env.int("TOKENIZATION_WINDOW_GRACE_SECS", 120, min=0, max=86400),
        )
        if 3600 % cfg.window_secs:
            raise ConfigError(
                "TOKENIZATION_WINDOW_SECS", str(cfg.window_secs), "a divisor of 3600 (900 for 15 minutes)"
            )
        if cfg.mint_strategy == "anchor" and cfg.mint_basis == "window" and cfg.window_secs % 900:
            raise ConfigError(
                "TOKENIZATION_WINDOW_SECS", str(cfg.window_secs), "900, 1800 or 3600: the energy_token program's "
                "mint_generation takes windows on 15-minute boundaries only",
            )  # fmt: skip
        if cfg.max_retry_delay_secs < cfg.initial_retry_delay_secs:
            raise ConfigError(
                "TOKENIZATION_MAX_RETRY_DELAY_SECS",
                cfg.max_retry_delay_secs,
                f">= TOKENIZATION_INITIAL_RETRY_DELAY_SECS ({cfg.initial_retry_delay_secs})",
            )
        # The largest single reading must fit the token_amount column (signed 64-bit) exactly.
        largest = cfg.max_reading_kwh * cfg.kwh_to_token_ratio * (Decimal(10) ** cfg.decimals)
        if largest > I64_MAX:
            raise ConfigError(
                "TOKENIZATION_MAX_READING_KWH",
                str(cfg.max_reading_kwh),
                f"a value whose token amount (kWh x ratio x 10^decimals) stays below 2^63 (got {largest:.0f})",
            )
        return cfg


@dataclass(frozen=True)
class IngestConfig:
    batch_max: int
    signature_required: bool
    signature_uncovered: str  # hold or reject a reading whose minted quantities its signature does not cover
    rate_limit_key_per_min: int
    rate_limit_user_per_min: int
    rate_limit_login_per_min: int

    @classmethod
    def from_env(cls, env: Env) -> IngestConfig:
        return cls(
            batch_max=env.int("INGEST_BATCH_MAX", 1000, min=1, max=10000),
            signature_required=env.bool("METER_SIGNATURE_REQUIRED", False),
            signature_uncovered=env.str("METER_SIGNATURE_UNCOVERED", "hold", choices=("hold", "reject")),
            rate_limit_key_per_min=env.int("RATE_LIMIT_KEY_PER_MIN", 600, min=0, max=10_000_000),
            rate_limit_user_per_min=env.int("RATE_LIMIT_USER_PER_MIN", 1200, min=0, max=10_000_000),
            rate_limit_login_per_min=env.int("RATE_LIMIT_LOGIN_PER_MIN", 10, min=0, max=10_000),
        )


@dataclass(frozen=True)
class VeeConfig:
    """Validation, estimation and editing of meter data: each rule's action and its thresholds."""

    actions: dict[str, str]
    capacity_margin: Decimal
    spike_factor: Decimal
    spike_history: int
    frozen_secs: int
    gap_tolerance_secs: int
    clock_drift_secs: int

    @classmethod
    def from_env(cls, env: Env) -> VeeConfig:
        return cls(
            actions=_vee_actions(env),
            capacity_margin=env.decimal("VEE_CAPACITY_MARGIN", "1.1", ge=Decimal(1), le=Decimal(10)),
            spike_factor=env.decimal("VEE_SPIKE_FACTOR", "10", gt=Decimal(1), le=Decimal(1000)),
            spike_history=env.int("VEE_SPIKE_HISTORY", 8, min=1, max=96),
            frozen_secs=env.int("VEE_FROZEN_SECS", 86400, min=60, max=30 * 86400),
            gap_tolerance_secs=env.int("VEE_GAP_TOLERANCE_SECS", 60, min=0, max=86400),
            clock_drift_secs=env.int("VEE_CLOCK_DRIFT_SECS", 60, min=1, max=86400),
        )

    def action(self, rule: str, overrides: dict | None = None) -> str:
        """A rule's action for one meter: the meter's own override (``Meter.vee_rules``) or the configured one."""
        if overrides and overrides.get(rule) in VEE_ACTIONS:
            return overrides[rule]
        return self.actions[rule]


def _vee_actions(env: Env) -> dict[str, str]:
    text = env.str("VEE_ACTIONS", VEE_DEFAULT_ACTIONS)
    actions = dict(part.split("=", 1) for part in VEE_DEFAULT_ACTIONS.split(","))
    for part in text.split(","):
        rule, _, action = part.strip().partition("=")
        if rule not in VEE_RULES or action not in VEE_ACTIONS:
            expected = f"rule=action pairs; rules {', '.join(VEE_RULES)}; actions {', '.join(VEE_ACTIONS)}"
            raise ConfigError("VEE_ACTIONS", text, expected)
        actions[rule] = action
    return actions


def _commitment(env: Env) -> str:
    if env.raw("SOLANA_COMMITMENT") == "processed":
        raise ConfigError(
            "SOLANA_COMMITMENT", "processed",
            "confirmed or finalized: a processed transaction can still vanish with a dropped fork, so deciding "
            "that a mint landed, failed or expired at processed could mint twice or lose it",
        )  # fmt: skip
    return env.str("SOLANA_COMMITMENT", "confirmed", choices=("confirmed", "finalized"))


@dataclass(frozen=True)
class ChainConfig:
    rpc_url: str  # the first provider's URL
    rpc: RpcProvidersConfig  # SOLANA_RPC_URLS and the providers' health rules (config/providers.py)
    keypair_path: Path
    cluster: str
    commitment: str
    energy_token_mint: str | None
    energy_token_program_id: str | None
    rec_validator_keypair_path: Path | None
    priority_fee_microlamports: int
    concurrent_batches: int
    rpc_timeout_secs: int
    signer: SignerConfig  # which key signs: SOLANA_KEYPAIR_PATH's file or an HSM's (config/signer.py)
    fees: FeeConfig = field(default_factory=FeeConfig)  # the compute-unit price, its ceilings (config/fees.py)

    @classmethod
    def from_env(cls, env: Env, *, debug: bool) -> ChainConfig:
        keypair, signer = env.raw("SOLANA_KEYPAIR_PATH"), SignerConfig.from_env(env)
        if keypair is None and not debug and signer.backend == "file":
            raise ConfigError("SOLANA_KEYPAIR_PATH", None, "a path to the mint authority keypair file (DEBUG=false)")
        rec_validator = env.raw("REC_VALIDATOR_KEYPAIR_PATH")
        rpc = RpcProvidersConfig.from_env(env)
        return cls(
            rpc_url=rpc.endpoints[0].url
            if rpc.endpoints
            else env.url("SOLANA_RPC_URL", DEFAULT_RPC_URL, schemes=("http", "https")),
            rpc=rpc,
            keypair_path=Path(keypair) if keypair else BASE_DIR / ".secrets" / "authority.json",
            cluster=env.str("SOLANA_CLUSTER", "localnet", choices=SOLANA_CLUSTERS),
            commitment=_commitment(env),
            energy_token_mint=env.raw("ENERGY_TOKEN_MINT"),
            energy_token_program_id=env.raw("ENERGY_TOKEN_PROGRAM_ID"),
            rec_validator_keypair_path=Path(rec_validator) if rec_validator else None,
            priority_fee_microlamports=env.int("SOLANA_PRIORITY_FEE_MICROLAMPORTS", 0, min=0, max=10**9),
            concurrent_batches=env.int("BLOCKCHAIN_CONCURRENT_BATCHES", 8, min=1, max=64),
            rpc_timeout_secs=env.int("SOLANA_RPC_TIMEOUT_SECS", 10, min=1, max=300),
            signer=signer,
            fees=FeeConfig.from_env(env),
        )

    @property
    def rpc_endpoints(self) -> tuple[RpcEndpoint, ...]:
        """Every provider, in order: SOLANA_RPC_URLS's, or SOLANA_RPC_URL alone."""
        return self.rpc.endpoints or (RpcEndpoint(url=self.rpc_url),)


@dataclass(frozen=True)
class ServiceConfig:
    debug: bool
    secret_key: str
    allowed_hosts: list[str]
    cors_allowed_origins: list[str]
    database: dict
    db_pool: bool
    redis_url: str
    log_level: str

    @classmethod
    def from_env(cls, env: Env) -> ServiceConfig:
        debug = env.bool("DEBUG", False)
        secret_key = env.raw("SECRET_KEY")
        if secret_key is None:
            if not debug:
                raise ConfigError(
                    "SECRET_KEY",
                    None,
                    "a long random string when DEBUG=false "
                    "(python -c 'import secrets; print(secrets.token_urlsafe(50))')",
                )
            secret_key = "development-only-secret-key-never-use-in-production"
        return cls(
            debug=debug,
            secret_key=secret_key,
            allowed_hosts=env.list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"]),
            cors_allowed_origins=env.list("CORS_ALLOWED_ORIGINS", []),
            database=env.db_url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gridtoken"),
            db_pool=env.bool("DB_POOL", False),
            redis_url=env.url("REDIS_URL", "redis://127.0.0.1:6379/0", schemes=("redis", "rediss")),
            log_level=env.str("LOG_LEVEL", "INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
        )


# Topic layouts the MQTT ingester understands: format name -> default topic template ({serial} is one level).
MQTT_PRESETS = {
    "gridtoken": "gridtoken/meters/{serial}/readings",
    "tasmota": "tele/{serial}/SENSOR",
    "tasmota-export": "tele/pv/{serial}/SENSOR",  # plugs whose ENERGY.Total is production; not subscribed by default
    "shelly": "{serial}/status/emdata:0",
    "shelly-rpc": "{serial}/events/rpc",
}
MQTT_DEFAULT_TOPICS = "gridtoken,tasmota,shelly,shelly-rpc"


@dataclass(frozen=True)
class MqttConfig:
    """The MQTT ingester (``manage.py ingest_mqtt``) and the broker files ``manage.py mqtt_acl`` writes."""

    url: str
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    ca_file: Path | None
    client_id: str
    share_group: str
    topics: tuple[tuple[str, str], ...]  # (format, template)
    error_topic: str
    session_expiry_secs: int
    keepalive_secs: int
    batch_max: int
    batch_ms: int
    queue_max: int
    reconnect_min_secs: int
    reconnect_max_secs: int
    tasmota_timezone: str
    device_secret: str | None
    poison_max_deliveries: int = 3  # attempts at a message whose ingester died handling it, then quarantine

    @classmethod
    def from_env(cls, env: Env, *, debug: bool, batch_limit: int) -> MqttConfig:
        url = env.url("MQTT_URL", "mqtt://127.0.0.1:1883", schemes=("mqtt", "mqtts"))
        parts = urlsplit(url)
        shown = url.replace(f":{parts.password}@", ":***@") if parts.password else url  # errors name no secret
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError:
            raise ConfigError("MQTT_URL", shown, "mqtt[s]://[user:password@]host[:port]") from None
        if not parts.hostname or parts.path not in ("", "/"):
            raise ConfigError("MQTT_URL", shown, "mqtt[s]://[user:password@]host[:port] (no path)")
        ca_file = env.raw("MQTT_CA_FILE")
        if ca_file is not None and not Path(ca_file).is_file():
            raise ConfigError("MQTT_CA_FILE", ca_file, "a readable PEM file of CA certificates (mqtts://)")
        share_group = env.str("MQTT_SHARE_GROUP", "gridtoken")
        if share_group and not _mqtt_level(share_group):
            raise ConfigError("MQTT_SHARE_GROUP", share_group, "one topic level without / + # (empty: no sharing)")
        timezone = env.str("MQTT_TASMOTA_TIMEZONE", "UTC")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                "MQTT_TASMOTA_TIMEZONE", timezone, "an IANA time zone such as UTC or Asia/Bangkok"
            ) from None
        error_topic = env.str("MQTT_ERROR_TOPIC", "gridtoken/meters/{serial}/errors")
        if _mqtt_template(error_topic) is None:
            raise ConfigError("MQTT_ERROR_TOPIC", error_topic, "a topic with one {serial} level and no + or #")
        cfg = cls(
            url=url,
            host=parts.hostname,
            port=port,
            tls=parts.scheme == "mqtts",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ca_file=Path(ca_file) if ca_file else None,
            client_id=env.str("MQTT_CLIENT_ID", f"gridtoken-ingest-{socket.gethostname()}"[:64]),
            share_group=share_group,
            topics=_mqtt_topics(env),
            error_topic=error_topic,
            session_expiry_secs=env.int("MQTT_SESSION_EXPIRY_SECS", 7 * 86400, min=60, max=2**32 - 2),
            keepalive_secs=env.int("MQTT_KEEPALIVE_SECS", 30, min=5, max=3600),
            batch_max=env.int("MQTT_BATCH_MAX", min(500, batch_limit), min=1, max=batch_limit),
            batch_ms=env.int("MQTT_BATCH_MS", 50, min=0, max=10_000),
            queue_max=env.int("MQTT_QUEUE_MAX", 2000, min=1, max=65_535),
            reconnect_min_secs=env.int("MQTT_RECONNECT_MIN_SECS", 1, min=1, max=300),
            reconnect_max_secs=env.int("MQTT_RECONNECT_MAX_SECS", 60, min=1, max=3600),
            tasmota_timezone=timezone,
            device_secret=env.raw("MQTT_DEVICE_SECRET") or ("development-only-mqtt-device-secret" if debug else None),
            poison_max_deliveries=env.int("MQTT_POISON_MAX_DELIVERIES", 3, min=2, max=100),
        )
        if not cfg.client_id.isprintable() or len(cfg.client_id) > 128:
            raise ConfigError("MQTT_CLIENT_ID", cfg.client_id, "1 to 128 printable characters, stable per ingester")
        if cfg.reconnect_max_secs < cfg.reconnect_min_secs:
            raise ConfigError("MQTT_RECONNECT_MAX_SECS", cfg.reconnect_max_secs, ">= MQTT_RECONNECT_MIN_SECS")
        return cfg


def _mqtt_level(text: str) -> bool:
    return bool(text) and not any(char in text for char in "/+#") and text.isprintable()


def _mqtt_template(template: str) -> list[str] | None:
    """The levels of a topic template with exactly one whole ``{serial}`` level, or None when it is not one."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError:
        return None
    levels = template.split("/")
    if fields != ["serial"] or levels.count("{serial}") != 1 or any(c in template for c in "+#"):
        return None
    if template.startswith("$") or "" in levels:
        return None
    return levels


def _mqtt_topics(env: Env) -> tuple[tuple[str, str], ...]:
    """MQTT_TOPICS: comma-separated presets (``gridtoken``) or ``format=template`` pairs
    (``tasmota=site1/tele/{serial}/SENSOR``)."""
    text = env.str("MQTT_TOPICS", MQTT_DEFAULT_TOPICS)
    allowed = (
        f"presets or format=template pairs; formats {', '.join(MQTT_PRESETS)}; templates with one {{serial}} level"
    )
    topics = []
    for part in (part.strip() for part in text.split(",")):
        name, _, template = part.partition("=")
        template = template or MQTT_PRESETS.get(name, "")
        if name not in MQTT_PRESETS or _mqtt_template(template) is None:
            raise ConfigError("MQTT_TOPICS", text, allowed)
        topics.append((name, template))
    if not topics or len({template for _, template in topics}) != len(topics):
        raise ConfigError("MQTT_TOPICS", text, allowed + ", each template once")
    return tuple(topics)


@dataclass(frozen=True)
class AppConfig:
    service: ServiceConfig
    tokenization: TokenizationConfig
    ingest: IngestConfig
    vee: VeeConfig
    chain: ChainConfig
    mqtt: MqttConfig
    retention: RetentionConfig


def load(source=None) -> AppConfig:
    """Read and validate every setting; raises ConfigError on the first bad value.

    Without an explicit source, the process environment is used, with defaults from ``.env`` at the
    repository root when that file exists (variables already set win).
    """
    if source is None and (BASE_DIR / ".env").is_file():
        environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
    env = Env(source)
    service = ServiceConfig.from_env(env)
    ingest = IngestConfig.from_env(env)
    tokenization = TokenizationConfig.from_env(env)
    return AppConfig(
        service=service,
        tokenization=tokenization,
        ingest=ingest,
        vee=VeeConfig.from_env(env),
        chain=ChainConfig.from_env(env, debug=service.debug),
        mqtt=MqttConfig.from_env(env, debug=service.debug, batch_limit=ingest.batch_max),
        retention=RetentionConfig.from_env(env, reading_max_age_days=tokenization.reading_max_age_days),
    )
