"""The live dashboard: one server-rendered page, a few JSON reads it refreshes from, and its own assets.

Everything live arrives over the WebSocket; the JSON endpoints resynchronise the page after a reconnect
(events are best effort, PostgreSQL is the truth) and read what the socket does not carry (chain balance,
pipeline figures).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from functools import wraps
from pathlib import Path
from urllib.parse import quote, urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET

from gridtoken.events import rfc3339
from gridtoken.exceptions import error_body
from matching.report import consumer_list
from meters.ratelimit import LoginRateLimitMixin
from meters.validation import KWH_QUANTUM
from realtime import charts, selectors

logger = logging.getLogger(__name__)

LOGIN_URL = "/login"
ASSETS_DIR = Path(__file__).resolve().parent / "static" / "realtime"
EXPLORER = "https://explorer.solana.com/tx/{signature}"


class DashboardLoginForm(LoginRateLimitMixin, AuthenticationForm):
    """Sign-ins count against the same per-username budget as the token endpoint and the admin."""


def explorer_tx_template() -> str:
    """An explorer URL for a transaction on the configured cluster, with ``{signature}`` to fill in."""
    cluster = settings.CHAIN.cluster
    if cluster == "mainnet-beta":
        return EXPLORER
    if cluster == "localnet":
        return f"{EXPLORER}?cluster=custom&customUrl={quote(settings.CHAIN.rpc_url, safe='')}"
    return f"{EXPLORER}?cluster={cluster}"


token_units = selectors.token_units


def wallet_balances(wallets: list[str]) -> list[dict]:
    """Each wallet's balance from the chain; ``"unavailable"`` instead of an error when the chain cannot say.

    After the first failure the remaining wallets are not asked: a dead RPC would make each wait its timeout.
    """
    unavailable = [{"wallet": w, "status": "unavailable", "balance": None, "base_units": None} for w in wallets]
    if not wallets:
        return []
    try:
        from minting.chain.configured import client_from_settings

        client = client_from_settings()
    except Exception:  # not configured, no mint yet, module not deployed: the page still works
        logger.warning("chain client unavailable for balances", exc_info=True)
        return unavailable
    found: list[dict] = []
    try:
        for wallet in wallets:
            raw = int(client.token_balance(wallet))
            found.append({"wallet": wallet, "status": "ok", "balance": token_units(raw), "base_units": raw})
    except Exception:
        logger.warning("token balance read failed", exc_info=True)
        found += unavailable[len(found) :]
    finally:
        client.close()
    return found


def utc_text(moment: str) -> str:
    """An RFC 3339 UTC time to the second, as the lists show it on one line ("2026-12-07 05:01:02"); the
    element's ``datetime`` attribute keeps it whole."""
    return moment.replace("T", " ").split(".")[0].removesuffix("Z")


def abbreviated(text: str) -> str:
    """A signature's first and last 8 characters, as the page's script abbreviates them (the title has it all)."""
    return f"{text[:8]}…{text[-8:]}" if len(text) > 20 else text


def displayed(reading: dict) -> dict:
    """A reading row as the template shows it: whole tokens, the time to the second, an explorer link."""
    tokens, signature = reading["tokens_minted"], reading["transaction_signature"]
    return {
        **reading,
        "tokens": None if tokens is None else token_units(tokens),
        "submitted_text": utc_text(reading["submitted_at"]),
        "signature_text": abbreviated(signature) if signature else None,
        "explorer_url": explorer_tx_template().format(signature=signature) if signature else None,
    }


def meter_rows(meters) -> list[dict]:
    """The meters table as the template shows it, by serial, with the last reading as an RFC 3339 UTC time."""
    return [
        {
            "id": str(meter.id),
            "serial": meter.serial,
            "status": meter.status,
            "wallet_address": meter.wallet_address,
            "reading_count": meter.reading_count,
            "last_reading": rfc3339(meter.last_reading) if meter.last_reading else None,
            "last_reading_text": utc_text(rfc3339(meter.last_reading)) if meter.last_reading else None,
        }
        for meter in meters
    ]


def kwh(amount: Decimal) -> str:
    """An exact kWh amount with its unit, as the database summed it (no float, no rounding)."""
    return f"{format(amount.quantize(KWH_QUANTUM), 'f')} kWh"  # sums keep the 9 places; a bare 0 gets them too


def window_rows(rows: list[selectors.WindowRow]) -> list[dict]:
    """The window table as the template shows it: exact kWh strings, the window as an RFC 3339 start."""
    return [
        {
            "meter_id": row.meter_id,
            "meter_serial": row.meter_serial,
            "window_start": rfc3339(row.window_start),
            "window_start_text": utc_text(rfc3339(row.window_start)),
            "generated": kwh(row.generated_kwh),
            "consumed": kwh(row.consumed_kwh),
            "net": kwh(row.net_kwh),
            "net_sign": "surplus" if row.net_kwh > 0 else "deficit" if row.net_kwh < 0 else "zero",
            "readings": row.readings,
            "held": row.held,
            "flagged": row.flagged,
            "minted": row.minted,
        }
        for row in rows
    ]


def review_links(review: dict, *, operator: bool) -> dict:
    """Held and flagged counts, with links into the readings admin for operators (producers cannot open it)."""
    changelist = reverse("admin:meters_meterreading_changelist") if operator else None
    return {
        "held": review["held"],
        "held_url": f"{changelist}?status__exact=held" if changelist else None,
        "flagged": [
            {"flag": flag, "count": count, "url": f"{changelist}?{urlencode({'flag': flag})}" if changelist else None}
            for flag, count in review["flags"]
        ],
        "flagged_hours": int(selectors.FLAGGED_SINCE.total_seconds() // 3600),
    }


def fleet_figures(figures: dict) -> dict:
    """The pipeline figures with what the template shows besides them: the last batch's explorer link."""
    last = figures["last_batch"]
    if last is not None:
        url = explorer_tx_template().format(signature=last["signature"])
        last = {**last, "explorer_url": url, "signature_text": abbreviated(last["signature"])}
    return {**figures, "last_batch": last}


def json_login_required(view):
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return JsonResponse(error_body({"code": "not_authenticated", "message": "Sign in first."}), status=401)
        return view(request, *args, **kwargs)

    return wrapped


def json_operator_required(view):
    @wraps(view)
    @json_login_required
    def wrapped(request, *args, **kwargs):
        if not request.user.is_staff:
            return JsonResponse(error_body({"code": "forbidden", "message": "Operators only."}), status=403)
        return view(request, *args, **kwargs)

    return wrapped


@require_GET
@login_required(login_url=LOGIN_URL)
@ensure_csrf_cookie
def dashboard(request):
    user = request.user
    operator = user.is_staff
    meters = selectors.meter_list(user=user)
    wallets = selectors.wallet_list(user=user)
    # An operator watches the fleet; their own balance, meters and readings appear only if they have some
    # (empty "your meters" panels beside a feed of everyone's traffic read as if the fleet were empty).
    own_panels = not operator or bool(meters)
    page_config = {
        "user_id": str(user.pk),
        "is_operator": user.is_staff,
        "ws_path": "/ws",
        "decimals": settings.TOKENIZATION.decimals,
        "explorer_tx": explorer_tx_template(),
        "cluster": settings.CHAIN.cluster,
        "readings_url": reverse("realtime:readings"),
        "balance_url": reverse("realtime:balance"),
        "stats_url": reverse("realtime:stats"),
        "energy_url": reverse("realtime:energy") if own_panels else None,
        "fleet_url": reverse("realtime:fleet") if operator else None,
        "toggle_url": "/api/admin/tokenization/toggle-auto-mint",
        "matching_consumers": [
            {
                "id": str(consumer.id),
                "name": consumer.name,
                "report_url": reverse("matching-report", args=[consumer.id]),
                "csv_url": reverse("matching-report-csv", args=[consumer.id]),
                "page_url": reverse("matching-report-page", args=[consumer.id]),
            }
            for consumer in consumer_list(user=user)
        ],
    }
    context = {
        "page_config": page_config,
        "operator": operator,
        "show_balance": not operator or bool(wallets),
        "show_own_panels": own_panels,
        "meters": meter_rows(meters),
        "readings": [displayed(selectors.reading_as_dict(r)) for r in selectors.reading_list_recent(user=user)]
        if own_panels
        else [],
        "wallets": wallets,
        "figures": fleet_figures(selectors.pipeline_figures()) if operator else None,
        "windows": window_rows(selectors.window_table(user=user)),
        "window_minutes": settings.TOKENIZATION.window_secs // 60,
        "window_basis": settings.TOKENIZATION.mint_basis == "window",
        "this_month": timezone.now().strftime("%Y-%m"),
        "review": review_links(selectors.review_counts(user=user), operator=user.is_staff),
    }
    return render(request, "realtime/dashboard.html", context)


@require_GET
@json_login_required
def readings_json(request):
    readings = selectors.reading_list_recent(user=request.user)
    return JsonResponse({"readings": [selectors.reading_as_dict(r) for r in readings], "as_of": rfc3339()})


@require_GET
@json_login_required
def balance_json(request):
    balances = wallet_balances(selectors.wallet_list(user=request.user))
    return JsonResponse({"wallets": balances, "cluster": settings.CHAIN.cluster, "as_of": rfc3339()})


@require_GET
@json_operator_required
def stats_json(request):
    return JsonResponse(fleet_figures(selectors.pipeline_figures()))


def chart_json(request, spans: dict[str, charts.Span], read) -> JsonResponse:
    """``read(span)`` for the ``span`` query parameter (the first of ``spans`` when absent), or a 400 naming
    the choices."""
    name = request.GET.get("span", next(iter(spans)))
    if name not in spans:
        message = f"span must be one of {', '.join(spans)}."
        return JsonResponse(error_body({"code": "invalid_span", "message": message, "field": "span"}), status=400)
    return JsonResponse(read(spans[name]))


@require_GET
@json_login_required
def energy_json(request):
    return chart_json(request, charts.ENERGY_SPANS, lambda span: charts.energy_series(user=request.user, span=span))


@require_GET
@json_operator_required
def fleet_json(request):
    return chart_json(request, charts.FLEET_SPANS, lambda span: charts.fleet_series(span=span))
