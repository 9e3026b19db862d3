"""Issue 8 (the caller's cost): drop ``Event``'s indexes on ``event_type`` and ``published_at``.

Nothing reads events by type or by publication time (dead letters filter by
type through their own rows, the admin sorts by ``created_at``), and every
``emit_event()`` wrote an entry in each: three on PostgreSQL (``event_type``'s
btree and its ``LIKE`` index, ``published_at``), two on SQLite; the drain's
``UPDATE`` of ``published_at`` wrote one more. Only the indexes go, with ``DROP
INDEX`` on both databases: ``AlterField`` would copy the whole table on SQLite.
"""

from typing import Any

from django.db import migrations, models

COLUMNS = ("event_type", "published_at")


def _indexes(schema_editor: Any, table: str) -> list[str]:
    """The names of ``table``'s plain (not unique) indexes on one of :data:`COLUMNS` alone."""
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return sorted(
        name
        for name, info in constraints.items()
        if info["index"] and not info["unique"] and not info["primary_key"] and len(info["columns"]) == 1
        and info["columns"][0] in COLUMNS
    )


def indexes_drop(apps: Any, schema_editor: Any) -> None:
    table = apps.get_model("pipeline", "Event")._meta.db_table
    for name in _indexes(schema_editor, table):
        schema_editor.execute(f"DROP INDEX {schema_editor.quote_name(name)}")


def indexes_create(apps: Any, schema_editor: Any) -> None:
    table = apps.get_model("pipeline", "Event")._meta.db_table
    for column in COLUMNS:
        name = schema_editor.quote_name(f"pipeline_event_{column}_idx")
        schema_editor.execute(f"CREATE INDEX {name} ON {schema_editor.quote_name(table)} ({schema_editor.quote_name(column)})")


class Migration(migrations.Migration):
    dependencies = [("pipeline", "0005_redundant_indexes")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(model_name="event", name="event_type", field=models.CharField(max_length=100)),
                migrations.AlterField(
                    model_name="event",
                    name="published_at",
                    field=models.DateTimeField(
                        blank=True, help_text="When a worker first stored notifications of it.", null=True
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(indexes_drop, indexes_create)],
        )
    ]
