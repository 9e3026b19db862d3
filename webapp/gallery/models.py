from __future__ import annotations

from django.conf import settings
from django.db import models


class Artwork(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="artworks")
    title = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.title


class Critique(models.Model):
    artwork = models.ForeignKey(Artwork, on_delete=models.CASCADE, related_name="critiques")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="critiques")
    text = models.TextField()
    helpful_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"critique of {self.artwork} by {self.author}"


class Like(models.Model):
    artwork = models.ForeignKey(Artwork, on_delete=models.CASCADE, related_name="likes")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["artwork", "user"], name="like_once")]

    def __str__(self) -> str:
        return f"{self.user} likes {self.artwork}"
