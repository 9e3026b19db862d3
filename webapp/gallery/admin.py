from django.contrib import admin

from webapp.gallery.models import Artwork, Critique, Like

admin.site.register(Artwork)
admin.site.register(Critique)
admin.site.register(Like)
