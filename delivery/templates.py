"""Rendering plain-text templates: titles, in-app bodies, email subjects and email text.

A ``.txt`` template's output is not HTML, so it must not be HTML-escaped:
with Django's default autoescaping, ``Tom & Jerry`` would arrive in a subject
as ``Tom &amp; Jerry`` and ``alice's`` as ``alice&#x27;s``. :func:`text_render`
renders a Django-language template with autoescaping off, whatever the
engine's ``autoescape`` option; ``.html`` templates keep rendering through
:func:`django.template.loader.render_to_string`, escaped. The project needs no
extra template engine for it. A template of another engine (Jinja2) renders
with that engine's own escaping rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.template import Context, TemplateDoesNotExist
from django.template import Template as DjangoTemplate
from django.template.loader import get_template, select_template


def text_render(template_names: str | Sequence[str], context: Mapping[str, Any]) -> str:
    """The first of ``template_names`` that exists, rendered with ``context`` and no HTML escaping.

    ``template_names`` is one name or a list tried in order (as
    :func:`~django.template.loader.select_template`). The output is not
    stripped. Raises ``TemplateDoesNotExist`` when none exists and
    ``TemplateSyntaxError`` (or any error the template raises) otherwise.
    """
    if isinstance(template_names, str):
        template = get_template(template_names)
    else:
        template = select_template(list(template_names))
    return _rendered(template, context)


def text_render_optional(template_name: str, context: Mapping[str, Any]) -> str | None:
    """:func:`text_render` of ``template_name`` if it exists, else ``None``.

    Only the look-up may find nothing: a template that exists and fails
    while rendering (an ``{% include %}`` of a missing template, a filter
    that raises) raises as :func:`text_render` does.
    """
    try:
        template = get_template(template_name)
    except TemplateDoesNotExist:
        return None
    return _rendered(template, context)


def _rendered(template: Any, context: Mapping[str, Any]) -> str:
    """A loaded template (a backend's wrapper) rendered with ``context``: a Django-language one without escaping."""
    inner = getattr(template, "template", None)
    if isinstance(inner, DjangoTemplate):
        return inner.render(Context(dict(context), autoescape=False))
    return str(template.render(dict(context)))
