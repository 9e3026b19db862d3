"""Issue 8 (fan-out): drop the single-column indexes of three foreign keys that a unique index already leads
with: ``Notification.event`` ((event, recipient)), ``Notification.recipient`` ((recipient, cursor)) and
``Delivery.notification`` ((notification, method)). One index entry less per stored notification and delivery,
and PostgreSQL no longer reads an event's every notification through ``event_id`` to check one chunk of its
audience. On PostgreSQL each is a ``DROP INDEX``; SQLite copies the table (Django's way to alter a field there).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("pipeline", "0004_push_stream"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="delivery",
            name="notification",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="deliveries",
                to="pipeline.notification",
            ),
        ),
        migrations.AlterField(
            model_name="notification",
            name="event",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="notifications",
                to="pipeline.event",
            ),
        ),
        migrations.AlterField(
            model_name="notification",
            name="recipient",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="notifications",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]
