"""SOLANA_RPC_URLS: several providers with weights and roles, validated with errors that name no secret."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config import ConfigError, load
from config.providers import RpcEndpoint, parse_endpoints

BASE = {"DEBUG": "true"}


def test_without_solana_rpc_urls_the_one_url_is_the_one_provider():
    chain = load({**BASE, "SOLANA_RPC_URL": "https://rpc.example/key"}).chain
    assert chain.rpc_endpoints == (RpcEndpoint(url="https://rpc.example/key"),)
    assert load(BASE).chain.rpc_endpoints == (RpcEndpoint(url="http://127.0.0.1:8899"),)


def test_providers_keep_their_order_weights_and_roles_and_the_first_is_the_rpc_url():
    chain = load(
        {**BASE, "SOLANA_RPC_URLS": "https://a.example/k1#weight=2, https://b.example#role=read&weight=0,"
         "https://c.example:8443/?api-key=k3#role=send", "SOLANA_RPC_MAX_LAG_SLOTS": "64",
         "SOLANA_RPC_PROBE_SECS": "5", "SOLANA_RPC_PROBE_MAX_SECS": "30"}
    ).chain  # fmt: skip
    assert chain.rpc_endpoints == (
        RpcEndpoint("https://a.example/k1", 2, "all"),
        RpcEndpoint("https://b.example", 0, "read"),
        RpcEndpoint("https://c.example:8443/?api-key=k3", 1, "send"),
    )
    assert chain.rpc_url == "https://a.example/k1"
    assert (chain.rpc.max_lag_slots, chain.rpc.probe_secs, chain.rpc.probe_max_secs) == (64, 5.0, 30.0)


@pytest.mark.parametrize(
    ("variables", "name", "allowed"),
    [
        ({"SOLANA_RPC_URLS": "https://a.example", "SOLANA_RPC_URL": "https://b.io"}, "SOLANA_RPC_URL", "one source"),
        ({"SOLANA_RPC_URLS": "https://a.example,ftp://b.example/secret"}, "SOLANA_RPC_URLS", "provider 2 (ftp://b.example)"),
        ({"SOLANA_RPC_URLS": "https://a.example#weight=101"}, "SOLANA_RPC_URLS", "weight=0..100"),
        ({"SOLANA_RPC_URLS": "https://a.example#weight=\u00b2"}, "SOLANA_RPC_URLS", "weight=0..100"),
        ({"SOLANA_RPC_URLS": "https://a.example#role=leader"}, "SOLANA_RPC_URLS", "role=all|read|send"),
        ({"SOLANA_RPC_URLS": "https://a.example,https://a.example"}, "SOLANA_RPC_URLS", "each URL once"),
        ({"SOLANA_RPC_URLS": "https://a.example#role=send"}, "SOLANA_RPC_URLS", "role all or read"),
        ({"SOLANA_RPC_URLS": "https://a.example#weight=0"}, "SOLANA_RPC_URLS", "weight above 0"),
        ({"SOLANA_RPC_URLS": "https://a.example#role=read"}, "SOLANA_RPC_URLS", "role all or send"),
        ({"SOLANA_RPC_URLS": "https://a.example,"}, "SOLANA_RPC_URLS", "provider 2 (empty)"),
        ({"SOLANA_RPC_PROBE_SECS": "10", "SOLANA_RPC_PROBE_MAX_SECS": "5"}, "SOLANA_RPC_PROBE_MAX_SECS", ">="),
    ],
)  # fmt: skip
def test_a_bad_provider_setting_names_the_variable_and_what_is_allowed(variables, name, allowed):
    with pytest.raises(ConfigError) as raised:
        load({**BASE, **variables})
    assert raised.value.name == name
    assert allowed in str(raised.value)
    assert "secret" not in str(raised.value)


hosts = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,6}){0,2}", fullmatch=True)
secrets = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=8, max_size=40)
endpoints = st.builds(
    lambda host, port, secret, weight, role, in_query: RpcEndpoint(
        url=f"https://{host}{f':{port}' if port else ''}" + (f"/?api-key={secret}" if in_query else f"/{secret}"),
        weight=weight,
        role=role,
    ),
    hosts, st.none() | st.integers(1, 65535), secrets, st.integers(0, 100), st.sampled_from(["all", "read", "send"]),
    st.booleans(),
)  # fmt: skip


@given(st.lists(endpoints, min_size=1, max_size=8, unique_by=lambda endpoint: endpoint.url))
def test_any_valid_list_parses_back_to_its_providers_or_is_refused_for_lacking_a_reader_or_a_sender(providers):
    text = ",".join(f"{p.url}#weight={p.weight}&role={p.role}" for p in providers)
    usable = any(p.reads and p.weight for p in providers) and any(p.sends for p in providers)
    if usable:
        assert parse_endpoints(text) == tuple(providers)
    else:
        with pytest.raises(ConfigError):
            parse_endpoints(text)


@given(st.text(max_size=200), secrets)
def test_any_text_is_parsed_or_refused_with_a_config_error_that_never_shows_a_path_or_query(text, secret):
    try:
        parse_endpoints(f"https://rpc.example/{secret}?k={secret}#weight=1,{text}")
    except ConfigError as error:
        assert secret not in str(error) or secret in text
