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

from django.template import Context
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
    inner = getattr(template, "template", None)
    if isinstance(inner, DjangoTemplate):
        return inner.render(Context(dict(context), autoescape=False))
    return str(template.render(dict(context)))
