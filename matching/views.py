"""The printable 24/7 report page: the month's figures, an hourly chart drawn on the server (SVG, so it
prints without a script) and every hour with demand, with its certificates."""

from __future__ import annotations

from datetime import date

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from gridtoken.exceptions import ApplicationError
from matching.apis import consumer_of, parse_month
from matching.report import HOUR, MonthReport, consumer_month_report, ratio_text, verify_path, wh_text

LOGIN_URL = "/login"
CHART_WIDTH, CHART_HEIGHT = 720, 160  # the bars' area; day labels below it


def _shift(month: date, months: int) -> date:
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def chart_bars(report: MonthReport) -> list[dict]:
    """Per hour of the month, the demand's and the covered supply's bar heights in px (floats for drawing only)."""
    hours = int((report.end - report.start) / HOUR)
    step = CHART_WIDTH / hours
    top = max((line.demand_wh for line in report.hours), default=0) or 1
    bars = []
    for line in report.hours:
        if not line.demand_wh and not line.matched_wh:
            continue
        x = (line.hour - report.start) / HOUR * step
        demand = float(line.demand_wh / top) * CHART_HEIGHT
        covered = float(line.covered_wh / top) * CHART_HEIGHT
        bars.append({
            "x": f"{x:.2f}", "width": f"{max(step - 0.3, 0.3):.2f}",
            "demand": f"{demand:.2f}", "demand_y": f"{CHART_HEIGHT - demand:.2f}",
            "covered": f"{covered:.2f}" if line.covered_wh else None, "covered_y": f"{CHART_HEIGHT - covered:.2f}",
        })  # fmt: skip
    return bars


def chart_days(report: MonthReport) -> list[dict]:
    """A tick at midnight of every day of the month, labelled on the 1st, 8th, 15th, 22nd and 29th."""
    days = (report.end - report.start).days
    step = CHART_WIDTH / days
    return [{"x": f"{day * step:.2f}", "label": str(day + 1) if day % 7 == 0 else ""} for day in range(days)]


def percent(ratio) -> str:
    return "n/a" if ratio is None else f"{ratio * 100:.1f} %"


@require_GET
@login_required(login_url=LOGIN_URL)
def consumer_report_page(request, consumer_id):
    try:
        month = parse_month(request.GET.get("month"))
        consumer = consumer_of(request.user, consumer_id)
    except ApplicationError as error:
        return render(request, "matching/report_error.html", {"error": error.as_dict()}, status=error.status)
    report = consumer_month_report(consumer=consumer, month=month)
    period = report.period
    rows = [
        {
            "hour": line.hour,
            "demand": wh_text(line.demand_wh),
            "matched": line.matched_wh,
            "bilateral": line.bilateral_wh,
            "pool": line.pool_wh,
            "unmatched": wh_text(line.unmatched_wh),
            "adjusted": line.adjusted,
            "certificates": [
                {**vars(c), "url": verify_path(c.bundle_id)} for c in report.certificates.get(line.hour, [])
            ],
        }
        for line in report.hours
        if line.demand_wh or line.matched_wh
    ]
    context = {
        "report": report,
        "period": period,
        "consumer": consumer,
        "month": f"{month:%Y-%m}",
        "previous": f"{_shift(month, -1):%Y-%m}",
        "next": f"{_shift(month, 1):%Y-%m}",
        "score": ratio_text(period.score),
        "score_percent": percent(period.score),
        "annual": ratio_text(period.annual_score),
        "annual_percent": percent(period.annual_score),
        "demand": wh_text(period.demand_wh),
        "covered": wh_text(period.covered_wh),
        "unmatched_hours": len(period.unmatched_hours),
        "hours": len(report.hours),
        "rows": rows,
        "bars": chart_bars(report),
        "days": chart_days(report),
        "chart": {"width": CHART_WIDTH, "height": CHART_HEIGHT},
    }
    return render(request, "matching/report.html", context)
