import pytest

from gridtoken.observability import ws_connection_count
from realtime.auth import origin_allowed, token_from_scope
from tests.realtime.conftest import close_code, connected, websocket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("in_memory_layer")]


async def test_token_in_query_string_connects_and_greets_the_user(producer):
    user = producer
    async with websocket(token=user.api_token) as ws:
        greeting = await connected(ws)
    assert greeting["user_id"] == str(user.pk)
    assert greeting["is_operator"] is False
    assert greeting["auth"] == "token"
    assert greeting["server_time"].endswith("Z")
    assert greeting["filters"] == {"event_types": None, "meters": None, "min_amount": None}


async def test_token_subprotocol_connects_and_the_token_marker_is_echoed(producer):
    user = producer
    async with websocket("/ws/events/", subprotocols=["token", user.api_token]) as ws:
        greeting = await connected(ws)
        assert ws.accepted_subprotocol == "token"
    assert greeting["user_id"] == str(user.pk)


async def test_session_cookie_connects_without_a_token(producer, producer_cookie):
    user = producer
    async with websocket(headers=[(b"cookie", producer_cookie)]) as ws:
        greeting = await connected(ws)
    assert greeting["user_id"] == str(user.pk)
    assert greeting["auth"] == "session"


async def test_operator_is_greeted_as_operator(operator):
    async with websocket("/ws/events", token=operator.api_token) as ws:
        greeting = await connected(ws)
    assert greeting["is_operator"] is True


async def test_anonymous_connection_is_closed_with_4001_before_anything_is_sent():
    async with websocket() as ws:
        assert await close_code(ws) == 4001


async def test_unknown_token_is_closed_with_4001():
    async with websocket(token="0" * 40) as ws:
        assert await close_code(ws) == 4001


async def test_invalid_token_is_refused_even_with_a_valid_session_cookie(producer_cookie):
    async with websocket(token="not-a-token", headers=[(b"cookie", producer_cookie)]) as ws:
        assert await close_code(ws) == 4001


async def test_token_marker_without_a_key_is_closed_with_4001_and_echoes_the_marker():
    async with websocket(subprotocols=["token"]) as ws:
        assert ws.accepted_subprotocol == "token"
        assert await close_code(ws) == 4001


@pytest.fixture
def inactive_user(people):
    return people.user(active=False)


async def test_token_of_an_inactive_user_is_closed_with_4001(inactive_user):
    user = inactive_user
    async with websocket(token=user.api_token) as ws:
        assert await close_code(ws) == 4001


async def test_browser_origin_that_is_not_allowed_is_closed_with_4003(producer):
    user = producer
    async with websocket(token=user.api_token, headers=[(b"origin", b"http://evil.example")]) as ws:
        assert await close_code(ws) == 4003


async def test_cross_site_page_cannot_ride_the_session_cookie(producer_cookie):
    headers = [(b"origin", b"https://evil.example"), (b"cookie", producer_cookie)]
    async with websocket(headers=headers) as ws:
        assert await close_code(ws) == 4003


async def test_origin_on_an_allowed_host_connects(producer):
    user = producer
    async with websocket(token=user.api_token, headers=[(b"origin", b"http://localhost:8000")]) as ws:
        greeting = await connected(ws)
    assert greeting["user_id"] == str(user.pk)


async def test_origin_listed_in_cors_allowed_origins_connects(producer, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    user = producer
    async with websocket(token=user.api_token, headers=[(b"origin", b"https://app.example.com")]) as ws:
        greeting = await connected(ws)
    assert greeting["user_id"] == str(user.pk)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        ("http://127.0.0.1:8000", True),
        ("http://[::1]:8000", True),
        ("https://LOCALHOST", True),
        ("https://app.example.com/", True),
        ("http://app.example.com", False),  # CORS origins match scheme and port exactly
        ("null", False),
        ("file://", False),
        ("http://localhost.evil.example", False),
        ("http://", False),
    ],
)
def test_origin_allowed_checks_allowed_hosts_and_cors_origins(settings, origin, allowed):
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    assert origin_allowed(origin) is allowed


@pytest.mark.parametrize(
    ("query", "subprotocols", "token"),
    [
        (b"token=abc", [], "abc"),
        (b"", ["token", "abc"], "abc"),
        (b"token=query", ["token", "sub"], "query"),
        (b"", ["gridtoken.v1"], None),
        (b"", ["token"], ""),
        (b"other=1", [], None),
    ],
)
def test_token_is_read_from_the_query_or_the_subprotocol_pair(query, subprotocols, token):
    assert token_from_scope({"query_string": query, "subprotocols": subprotocols}) == token


async def test_accepted_connections_are_counted_for_metrics_and_refused_ones_are_not(producer):
    before = ws_connection_count()
    async with websocket(token=producer.api_token) as ws:
        await connected(ws)
        assert ws_connection_count() == before + 1
        async with websocket(token="0" * 40) as refused:
            assert await close_code(refused) == 4001
        assert ws_connection_count() == before + 1
    assert ws_connection_count() == before
