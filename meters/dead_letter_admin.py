"""The dead letters in the admin (imported by ``meters.admin``): read-only; "Replay" and "Discard" are actions that
call ``meters.services.dead_letters``, as the operator API does."""

from __future__ import annotations

from django.contrib import admin, messages

from gridtoken.admin import RecordAdmin
from gridtoken.exceptions import ApplicationError
from meters.models import DeadLetter
from meters.services.dead_letters import dead_letter_discard, dead_letter_replay


@admin.register(DeadLetter)
class DeadLetterAdmin(RecordAdmin):
    list_display = ("id", "door", "topic", "meter_serial", "status", "error_type", "deliveries", "last_seen")
    list_filter = ("door", "status")
    search_fields = ("=meter_serial", "=request_id", "=fingerprint")
    actions = ("replay", "discard")

    def _apply(self, request, queryset, service, done: str) -> None:
        outcomes = []
        for letter_id in queryset.values_list("pk", flat=True):
            try:
                letter = service(dead_letter_id=letter_id, actor=request.user.get_username())
                outcomes.append(f"{letter_id}: {letter.status}")
            except ApplicationError as error:
                outcomes.append(f"{letter_id}: {error.code}")
        self.message_user(request, f"{done} {len(outcomes)}: {'; '.join(outcomes)}", messages.INFO)

    # An action needs a permission; "view" is the one this read-only admin grants.
    @admin.action(description="Replay through their door", permissions=["view"])
    def replay(self, request, queryset):
        self._apply(request, queryset, dead_letter_replay, "Replayed")

    @admin.action(description="Discard (not to be stored)", permissions=["view"])
    def discard(self, request, queryset):
        self._apply(request, queryset, dead_letter_discard, "Discarded")
