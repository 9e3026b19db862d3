from django.contrib import admin

from pipeline.models import Delivery, DigestEntry, DigestWindow, Event, Inbox, Notification, Preference


@admin.register(Event)
class EventAdmin(admin.ModelAdmin[Event]):
    list_display = ["id", "event_type", "actor", "created_at", "published_at"]
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
