"""``manage.py deadletters list | show ID | replay [ID ... | --method M --event-type T --since T | --all]``."""

from __future__ import annotations

import getpass
import json
import re
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from pipeline.deadletters import dead_letters_select
from pipeline.models import DeadLetter
from pipeline.publishing import dead_letters_replay

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """``--since``: an age (``90s``, ``30m``, ``2h``, ``7d``, ``1w``) or an ISO 8601 date or date-time.

    A date-time without a zone is taken as UTC. Raises ``CommandError`` for anything else.
    """
    value = value.strip()
    match = _RELATIVE.match(value)
    if match:
        return (now or timezone.now()) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    parsed = parse_datetime(value)
    if parsed is None:
        day = parse_date(value)
        parsed = datetime(day.year, day.month, day.day) if day else None
    if parsed is None:
        raise CommandError(f"--since {value!r}: give an age such as 30m, 2h or 7d, or an ISO 8601 date or date-time.")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


class Command(BaseCommand):
    help = "Inspect and replay dead letters: deliveries and pipeline steps that could not complete."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="{list,show,replay}")

        def filters(p: CommandParser) -> None:
            p.add_argument("--method", help="only this delivery method (alias)")
            p.add_argument("--event-type", help="only dead letters of events of this type")
            p.add_argument("--since", type=parse_since, help="only newer ones: an age (30m, 2h, 7d) or an ISO date")

        listing = sub.add_parser("list", help="list dead letters, newest last")
        filters(listing)
        listing.add_argument("--status", choices=["dead", "replayed", "all"], default="dead")
        listing.add_argument("--limit", type=int, default=100, help="at most this many (the newest); default 100")
        listing.add_argument("--json", action="store_true", help="one JSON object per line")

        show = sub.add_parser("show", help="everything about one dead letter, with its replay history")
        show.add_argument("id", type=int)

        replay = sub.add_parser("replay", help="send dead letters through the pipeline again, from the failed step")
        replay.add_argument("ids", type=int, nargs="*", metavar="ID")
        filters(replay)
        replay.add_argument("--all", action="store_true", help="every dead letter still dead")

    def handle(self, *args: Any, **options: Any) -> None:
        handler = {"list": self._list, "show": self._show, "replay": self._replay}[options["action"]]
        handler(options)

    def _select(self, options: dict[str, Any], *, status: str | None = DeadLetter.Status.DEAD) -> Any:
        return dead_letters_select(
            ids=options.get("ids") or None,
            method=options.get("method"),
            event_type=options.get("event_type"),
            since=options.get("since"),
            status=status,
        )

    def _list(self, options: dict[str, Any]) -> None:
        status = None if options["status"] == "all" else options["status"]
        letters = list(self._select(options, status=status).order_by("-created_at", "-pk")[: options["limit"]])
        letters.reverse()
        if options["json"]:
            for letter in letters:
                self.stdout.write(json.dumps(_summary(letter), default=str))
            return
        if not letters:
            self.stdout.write("No dead letters.")
            return
        self.stdout.write(
            f"{'ID':>6}  {'CREATED (UTC)':19}  {'STATUS':8}  {'KIND':8}  {'WHAT':32}  {'TRIES':>5}  ERROR"
        )
        for letter in letters:
            what = f"{letter.method} → {letter.recipient}" if letter.method else letter.task
            self.stdout.write(
                f"{letter.pk:>6}  {letter.created_at:%Y-%m-%d %H:%M:%S}  {letter.status:8}  {letter.kind:8}  "
                f"{what[:32]:32}  {letter.attempts:>5}  {letter.exception.splitlines()[0][:80]}"
            )

    def _show(self, options: dict[str, Any]) -> None:
        letter = DeadLetter.objects.select_related("event", "recipient").filter(pk=options["id"]).first()
        if letter is None:
            raise CommandError(f"There is no dead letter {options['id']}.")
        for name, value in _summary(letter).items():
            self.stdout.write(f"{name + ':':14} {value}")
        self.stdout.write(f"{'args:':14} {json.dumps(letter.args)}")
        self.stdout.write(f"{'kwargs:':14} {json.dumps(letter.kwargs)}")
        self.stdout.write(f"{'chain:':14} {', '.join(step.get('task', '?') for step in reversed(letter.chain)) or '-'}")
        self.stdout.write("traceback:")
        self.stdout.write(letter.traceback.rstrip() or "  (none: the delivery method reported the failure)")
        older = letter.history()[1:]
        newer = list(letter.replays.order_by("created_at", "pk"))
        if older or newer:
            self.stdout.write("history (oldest first):")
            for item in [*reversed(older), letter, *newer]:
                when = f"{item.created_at:%Y-%m-%d %H:%M:%S}"
                replayed = (
                    f", replayed by {item.replayed_by} at {item.replayed_at:%H:%M:%S}" if item.replayed_at else ""
                )
                this = "   <- this one" if item.pk == letter.pk else ""
                self.stdout.write(
                    f"  #{item.pk} {when} {item.status}{replayed}: {item.exception.splitlines()[0][:80]}{this}"
                )

    def _replay(self, options: dict[str, Any]) -> None:
        has_filter = options["ids"] or options["method"] or options["event_type"] or options["since"]
        if not has_filter and not options["all"]:
            raise CommandError("Say what to replay: IDs, --method, --event-type, --since, or --all.")
        if options["ids"]:
            missing = set(options["ids"]) - set(
                DeadLetter.objects.filter(pk__in=options["ids"]).values_list("pk", flat=True)
            )
            if missing:
                raise CommandError(f"There is no dead letter {', '.join(map(str, sorted(missing)))}.")
        letters = list(self._select(options, status=None if options["ids"] else DeadLetter.Status.DEAD))
        report = dead_letters_replay(letters=letters, replayed_by=f"{getpass.getuser()}@{socket.gethostname()} (cli)")
        self.stdout.write(f"Replayed {len(report.replayed)} dead letter(s).")
        if report.skipped:
            self.stdout.write(
                f"Skipped {len(report.skipped)} already replayed: {', '.join(map(str, report.skipped[:20]))}"
                f"{' ...' if len(report.skipped) > 20 else ''}"
            )


def _summary(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.pk,
        "status": letter.status,
        "kind": letter.kind,
        "created": letter.created_at.isoformat(),
        "task": letter.task,
        "event": str(letter.event_id) if letter.event_id else None,
        "event_type": letter.event.event_type if letter.event else None,
        "recipient": letter.recipient.get_username() if letter.recipient else None,
        "method": letter.method or None,
        "delivery": letter.delivery_id,
        "digest_window": letter.digest_window_id,
        "attempts": letter.attempts,
        "error": letter.exception,
        "replayed": letter.replayed_at.isoformat() if letter.replayed_at else None,
        "replay_of": letter.replay_of_id,
    }
