"""``python manage.py leap_listen --channel room``: a long-running Django management
command that consumes Leap messages (for example to update models), the way a worker
process would, with no asyncio loop."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from leap_sync import LeapClient, LeapError, MessageEvent


class Command(BaseCommand):
    help = "Subscribe to Leap channels and handle each message until interrupted."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--channel", action="append", required=True, help="channel id (repeatable)")
        parser.add_argument("--count", type=int, default=0, help="stop after this many messages (0: never)")

    def handle(self, *args: Any, **options: Any) -> None:
        client = LeapClient(settings.LEAP_PROJECT_ID, settings.LEAP_TOKEN, url=settings.LEAP_URL)
        messages = client.message_event_channel()
        with client:
            try:
                client.connect(wait=True, timeout=10)
                for channel in options["channel"]:
                    client.subscribe(channel, timeout=10)
                    self.stdout.write(f"subscribed to {channel}")
            except LeapError as exc:
                raise CommandError(str(exc)) from exc
            try:
                for n, event in enumerate(messages, 1):
                    self.handle_message(event)
                    if options["count"] and n >= options["count"]:
                        break
            except KeyboardInterrupt:
                self.stdout.write("interrupted")
        self.stdout.write(f"closed ({client.state.connection_state.value})")

    def handle_message(self, event: MessageEvent) -> None:
        # Application logic goes here (ORM writes, cache updates...). It runs on this
        # command's thread, in wire order, one message at a time.
        self.stdout.write(f"{event.channel_id} {event.event_name} {json.dumps(event.data)}")
