"""Issue 9: positions in each recipient's push stream, and the event's ``occurred_at`` on its notifications."""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def occurred_at_copy(apps, schema_editor):
    """Notifications stored before this migration take their event's ``occurred_at``; their ``push_seq`` stays
    empty (a socket's stream starts at the inbox's ``last_push_seq``, 0 for them)."""
    notification = apps.get_model("pipeline", "Notification")
    event = apps.get_model("pipeline", "Event")
    occurred = event.objects.filter(pk=OuterRef("event_id")).values("occurred_at")[:1]
    notification.objects.using(schema_editor.connection.alias).update(occurred_at=Subquery(occurred))


class Migration(migrations.Migration):
    dependencies = [("pipeline", "0003_hot_path")]

    operations = [
        migrations.AddField(
            model_name="inbox",
            name="last_push_seq",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="notification",
            name="push_seq",
            field=models.BigIntegerField(
                blank=True,
                help_text="Per-recipient position among the notifications pushed to sockets, 1, 2, 3, ... in "
                "cursor order; empty for one no socket is sent (no streamed delivery method, or the recipient's "
                "preference is off).",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="notification",
            name="occurred_at",
            field=models.DateTimeField(null=True, help_text="When its event happened (the event's occurred_at)."),
        ),
        migrations.RunPython(occurred_at_copy, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="notification",
            name="occurred_at",
            field=models.DateTimeField(help_text="When its event happened (the event's occurred_at)."),
        ),
    ]
