"""Versioned prompt templates: ``name@version``, Jinja2 over product fields, sandboxed.

Templates live in ``prompts/<name>@<version>.j2``. A version is immutable once used: every
request stores the template's content hash, and planning a sweep refuses a template whose
hash differs from the one recorded for the same ``name@version`` (bump the version instead), so
results are always traceable to the exact words that produced them.

Prompt folders are shared, so a template is untrusted code. It renders in Jinja2's
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (no ``__class__``/``__globals__`` walks to
``os``, no mutation of what it is given), over a context of plain data only: the product's text
fields and attributes and its latest analysis, nothing else (no environment, no Python objects).
String and list repetition is bounded, and so is the rendered text. The rendered prompt then
goes through :func:`pixellab.redact.redact`, like every message we store: a key pasted into a
product description reaches neither the provider nor the ledger. A prompt id is a name and a
version, never a path: ``../outside@1`` is refused, and so is a template file whose real path
(symlinks followed) lies outside the prompts folder.
"""

from __future__ import annotations

import functools
import hashlib
import operator
import os
import re
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pixellab.errors import ConfigError
from pixellab.redact import redact
from pixellab.settings import current as current_settings

MAX_PROMPT_CHARS = 20_000
"""The longest rendered prompt we send (providers' own limits are lower: gpt-image 32k tokens,
Flux ~512 tokens); a template that renders more is refused, not truncated."""

MAX_REPEAT = 10_000
"""The most a template may repeat a string or list with ``*`` (``'x' * 10**9`` is a memory bomb)."""

MAX_STEPS = 100_000
"""Template lines a render may execute (loop iterations included): a prompt takes dozens, and
three nested loops over ``range(1000)`` would take a billion. Counted, not timed, so the bound
holds the same on a loaded machine."""

MAX_TEMPLATE_BYTES = 64 * 1024
"""A prompt template is a paragraph."""

_PART = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}"
_PROMPT_ID = re.compile(rf"(?P<name>{_PART})@(?P<version>{_PART})")


class _PromptSandbox(ImmutableSandboxedEnvironment):
    """The sandbox with ``*`` and ``**`` bounded: the stock sandbox lets a template build a
    string of any size."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, int | float) and abs(right) > 64:
                raise jinja2.sandbox.SecurityError("an exponent over 64 is not allowed")
            return operator.pow(left, right)
        for times, repeated in ((left, right), (right, left)):
            if (isinstance(times, int) and isinstance(repeated, str | list | tuple)
                    and times * max(1, len(repeated)) > MAX_REPEAT):
                raise jinja2.sandbox.SecurityError(
                    f"repeating a {type(repeated).__name__} to over {MAX_REPEAT} items is not "
                    "allowed")
        return operator.mul(left, right)


_ENV = _PromptSandbox(undefined=jinja2.StrictUndefined, autoescape=False,
                      keep_trailing_newline=False)
# Only the sandbox's bounded range: lipsum(10**6), cycler, joiner and namespace are not prompts.
_ENV.globals = {"range": _ENV.globals["range"]}


def _within_steps(template: jinja2.Template, context: dict[str, Any], filename: str) -> str:
    """``template.render(context)``, stopped after :data:`MAX_STEPS` template lines. The line
    events of the template's own code (its compiled module carries the template's file name)
    are counted with a trace function; any tracer already set is restored afterwards."""
    left = MAX_STEPS

    def count(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal left
        if event == "line":
            left -= 1
            if left < 0:
                raise jinja2.sandbox.SecurityError(
                    f"the template runs over {MAX_STEPS} steps (loops too large)")
        return count

    def enter(frame: FrameType, event: str, arg: Any) -> Any:
        return count if frame.f_code.co_filename == filename else None

    previous = sys.gettrace()
    sys.settrace(enter)
    try:
        return template.render(context)
    finally:
        sys.settrace(previous)


@dataclass(frozen=True)
class Prompt:
    name: str
    version: str
    template: str
    path: Path

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:16]

    def render(self, fields: Mapping[str, Any], analysis: Mapping[str, Any] | None = None
               ) -> str:
        """The prompt for one product: ``fields`` (a product's :meth:`Product.fields`) and its
        latest ``analysis`` (or None), redacted. Raises :class:`ConfigError` naming the
        template and its line when the template fails or reaches outside its context."""
        context = {**_plain(dict(fields)), "analysis": _plain(dict(analysis)) if analysis
                   else None}
        compiled = _compile(self.template, self.path)
        try:
            text = _within_steps(compiled, context, str(self.path)).strip()
        except jinja2.TemplateError as exc:
            raise ConfigError(f"line {_template_line(exc, self.path)}: cannot render: "
                              f"{_one_line(exc)}", path=str(self.path)) from None
        except (ArithmeticError, ValueError, TypeError, RecursionError, MemoryError) as exc:
            raise ConfigError(f"line {_template_line(exc, self.path)}: cannot render: "
                              f"{type(exc).__name__}: {_one_line(exc)}",
                              path=str(self.path)) from None
        if len(text) > MAX_PROMPT_CHARS:
            raise ConfigError(f"renders {len(text)} characters, over the {MAX_PROMPT_CHARS} "
                              "limit", path=str(self.path))
        return redact(text) or ""


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` as plain data (str, numbers, bools, None, lists and dicts of them): what a
    template may see. Anything else becomes its text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if depth > 8:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v, depth + 1) for v in value]
    return str(value)


@functools.lru_cache(maxsize=256)
def _compile(source: str, path: Path) -> jinja2.Template:
    """The compiled template (cached: a sweep renders one template per product)."""
    try:
        code = _ENV.compile(source, name=path.name, filename=str(path))
        return _ENV.template_class.from_code(_ENV, code, _ENV.make_globals(None), None)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"line {exc.lineno}: template syntax error: {_one_line(exc)}",
                          path=str(path)) from None


def _template_line(exc: BaseException, path: Path) -> str:
    """The template line an error was raised on (Jinja2 maps its frames to the template)."""
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__)
             if frame.filename == str(path)]
    return str(lines[-1]) if lines else "?"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "message", None) or exc).split())[:300]


def prompts_dir() -> Path:
    return current_settings().prompts


def load_prompt(prompt_id: str, folder: str | os.PathLike[str] | None = None) -> Prompt:
    """Load ``name@version`` from ``folder`` (default ``$PIXELLAB_PROMPTS`` or ``./prompts``).

    Names and versions are letters, digits, ``_``, ``-`` and ``.`` (not leading); the file's
    real path must lie inside the folder."""
    match = _PROMPT_ID.fullmatch(prompt_id)
    if match is None or ".." in prompt_id:
        raise ConfigError(f"prompt id {prompt_id!r} must look like name@version (letters, "
                          "digits, '_', '-', '.'; no paths)")
    root = Path(folder or prompts_dir())
    path = root / f"{prompt_id}.j2"
    if not path.is_file():
        raise ConfigError(f"prompt {prompt_id!r} not found", path=str(path))
    if not path.resolve().is_relative_to(root.resolve()):
        raise ConfigError(f"prompt {prompt_id!r} is a link to a file outside {root}; prompts "
                          "must live in the prompts folder", path=str(path))
    try:
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            raise ConfigError(f"is over {MAX_TEMPLATE_BYTES // 1024} KiB; a prompt template is "
                              "a paragraph", path=str(path))
        template = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {type(exc).__name__}", path=str(path)) from None
    _compile(template, path)
    return Prompt(name=match["name"], version=match["version"], template=template, path=path)
