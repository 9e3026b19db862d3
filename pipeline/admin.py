from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from pipeline.models import DeadLetter, Delivery, DigestEntry, DigestWindow, Event, Inbox, Notification, Preference
from pipeline.publishing import dead_letters_replay


@admin.register(Event)
class EventAdmin(admin.ModelAdmin[Event]):
    list_display = ["id", "event_type", "actor", "created_at", "published_at", "completed_at"]
    list_filter = ["event_type"]
    search_fields = ["id", "idempotency_key"]
    readonly_fields = ["created_at"]


class DeliveryInline(admin.TabularInline[Delivery, Notification]):
    model = Delivery
    extra = 0
    readonly_fields = ["method", "status", "reason", "digest", "attempts", "last_error", "sent_at"]


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin[Notification]):
    list_display = ["id", "recipient", "event_type", "title", "cursor", "state", "created_at"]
    list_filter = ["state", "event_type", "category"]
    search_fields = ["title", "recipient__username"]
    raw_id_fields = ["event", "recipient"]
    inlines = [DeliveryInline]


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin[Delivery]):
    list_display = ["id", "notification", "method", "status", "attempts", "reason", "updated_at"]
    list_filter = ["status", "method"]
    raw_id_fields = ["notification"]


@admin.register(Preference)
class PreferenceAdmin(admin.ModelAdmin[Preference]):
    list_display = ["user", "category", "event_type", "method", "setting"]
    list_filter = ["method", "setting"]
    raw_id_fields = ["user"]


class DigestEntryInline(admin.TabularInline[DigestEntry, DigestWindow]):
    model = DigestEntry
    extra = 0
    raw_id_fields = ["delivery"]


@admin.register(DigestWindow)
class DigestWindowAdmin(admin.ModelAdmin[DigestWindow]):
    list_display = ["user", "method", "frequency", "closes_at", "status", "sent_at"]
    list_filter = ["status", "frequency"]
    inlines = [DigestEntryInline]


@admin.register(DigestEntry)
class DigestEntryAdmin(admin.ModelAdmin[DigestEntry]):
    list_display = ["window", "delivery", "created_at"]
    raw_id_fields = ["window", "delivery"]


@admin.register(Inbox)
class InboxAdmin(admin.ModelAdmin[Inbox]):
    list_display = ["user", "last_cursor"]
    raw_id_fields = ["user"]


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin[DeadLetter]):
    """Dead letters, read-only, with a "Replay" action (the same as ``manage.py deadletters replay``)."""

    list_display = ["id", "created_at", "status", "kind", "task", "method", "recipient", "attempts", "exception"]
    list_filter = ["status", "kind", "method", "task", "event__event_type"]
    search_fields = ["exception", "task_id", "event__id"]
    date_hierarchy = "created_at"
    raw_id_fields = ["event", "recipient", "delivery", "digest_window", "replay_of"]
    readonly_fields = [field.name for field in DeadLetter._meta.fields]
    actions = ["replay"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Replay the selected dead letters", permissions=["change"])
    def replay(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        report = dead_letters_replay(letters=queryset, replayed_by=f"{request.user} (admin)")
        self.message_user(request, f"Replayed {len(report.replayed)} dead letter(s).", messages.SUCCESS)
        if report.skipped:
            self.message_user(
                request, f"Skipped {len(report.skipped)} already replayed: {report.skipped[:20]}", messages.WARNING
            )
