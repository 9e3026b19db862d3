from typing import Any

from django.core.management.base import BaseCommand

from webapp.gallery.seed import demo_seed


class Command(BaseCommand):
    help = "Create the demo users (password 'demo'), admin/admin, artworks and preferences."

    def handle(self, *args: Any, **options: Any) -> None:
        world = demo_seed()
        self.stdout.write(f"Demo users: {', '.join(sorted(world['users']))}")
