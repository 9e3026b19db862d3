"""Delivery methods: a small interface, a registry, and the built-ins.

Methods know nothing of Celery or of notiflow's models: they receive frozen,
JSON-safe :class:`~delivery.base.Message` objects and return one
:class:`~delivery.base.DeliveryResult` per message.
"""
