"""The demo domain (the seeds' social art app): artworks, critiques, likes, announcements.

Its services call ``emit_event()`` the way any application would.
"""
