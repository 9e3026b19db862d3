"""The REST API (DRF): a user's notifications, unread count, mark read."""
