"""Rendering: template layers -> files in an artifact dir. It only writes files (no Docker, no network).

Templates live in the top-level `templates/` folder, shipped in the wheel as `deployctl/templates`.
Each target names the layers it is made of (e.g. runtime + fastapi + docker); later layers add
files or replace earlier ones. A layer's files are looked up in three places, later ones winning:
the built-in templates, the target's own folder (`Target.templates`, how a third-party target
ships its layers), and the user's `--templates` folder. Files ending in `.j2` are rendered with
StrictUndefined (a missing variable is a bug, never an empty string); every other file is copied
verbatim.

The trust boundary: a template can print a value only through the escaping filter of its file's
language (`deployctl.escape`: `py`, `yaml`, `docker`, `md`, `req`...), or an int. A plain string
printed raw into a .py, YAML, Dockerfile, requirements.txt, JSON or README fails the render.
"""

from __future__ import annotations

import functools
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2

from deployctl.errors import UsageError
from deployctl.escape import FILTERS, UnescapedValue, check_output


def templates_root() -> Path:
    packaged = Path(__file__).parent / "templates"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "templates"


# `name#N`: the template `name` looked up from the Nth folder of the search path down (see join_path)
DEPTH = "#"


def _split(name: str) -> tuple[str, int]:
    base, sep, depth = name.rpartition(DEPTH)
    return (base, int(depth)) if sep and depth.isdigit() else (name, 0)


class LayeredLoader(jinja2.BaseLoader):
    """The folders of the search path, first one winning, where `name#N` starts the lookup at the
    Nth folder: how an override reaches the file it replaces."""

    def __init__(self, search_path: list[Path]) -> None:
        self.search_path = search_path

    def find(self, name: str, start: int) -> tuple[int, Path]:
        for depth, folder in enumerate(self.search_path[start:], start):
            path = folder / name
            if path.is_file():
                return depth, path
        raise jinja2.TemplateNotFound(name)

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        _, path = self.find(*_split(template))
        mtime = path.stat().st_mtime
        return path.read_text(), str(path), lambda: path.stat().st_mtime == mtime


class LayeredEnvironment(jinja2.Environment):
    def join_path(self, template: str, parent: str) -> str:
        """A template that extends (or includes) its own name gets the next file of that name down
        the search path (an override extending the built-in it replaces), not itself again."""
        name, start = _split(parent)
        if template != name or not isinstance(self.loader, LayeredLoader):
            return template
        depth, _ = self.loader.find(name, start)
        return f"{name}{DEPTH}{depth + 1}"


def environment(search_path: list[Path]) -> jinja2.Environment:
    env = LayeredEnvironment(
        loader=LayeredLoader(search_path),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        finalize=_finalize,
    )
    env.filters.update({name: _strict(f) for name, f in FILTERS.items()})
    return env


def _strict(escaper: Callable[..., Any]) -> Callable[..., Any]:
    """A missing variable given to a filter is still an error (StrictUndefined), not a value."""

    @functools.wraps(escaper)
    def escape(value: Any, *args: Any) -> Any:
        if isinstance(value, jinja2.Undefined):
            str(value)  # raises UndefinedError
        return escaper(value, *args)

    return escape


@jinja2.pass_context
def _finalize(context: jinja2.runtime.Context, value: Any) -> Any:
    """Every `{{ ... }}` goes through here: only escaped values (or ints) reach the file."""
    if isinstance(value, jinja2.Undefined):
        return value  # StrictUndefined raises when printed
    return check_output(value, _split(context.name or "")[0])


def check_templates_dir(override: Path | None) -> None:
    """--templates must name a folder: a typo would otherwise render the built-ins silently."""
    if override is not None and not override.is_dir():
        raise UsageError(
            f"--templates {override}: no such folder.",
            "Give a folder laid out like deployctl's templates/, e.g. DIR/fastapi/README.md.j2.",
        )


def render_layers(
    layers: tuple[str, ...],
    context: dict[str, Any],
    out: Path,
    override: Path | None = None,
    target_templates: Path | None = None,
) -> list[Path]:
    """Render every layer into `out`: built-in files, then the target's own folder, then the user's
    override folder, a later file winning over an earlier one of the same path."""
    bases = [b for b in (templates_root(), target_templates, override) if b is not None]
    env = environment(list(reversed(bases)))  # so {% extends %} also finds the override first
    written: list[Path] = []
    for layer in layers:
        sources: dict[Path, tuple[Path, Path]] = {}
        for base in bases:
            for src in sorted(p for p in (base / layer).rglob("*") if p.is_file()):
                rel = src.relative_to(base / layer)
                if "__pycache__" not in rel.parts:
                    sources[rel.with_suffix("") if rel.suffix == ".j2" else rel] = (base, src)
        for rel, (base, src) in sources.items():
            _write(env, base, src, out / rel, context)
            written.append(out / rel)
    if not written:
        raise UsageError(f"No templates found for layers {layers}.")
    return sorted(set(written))


def _where(exc: jinja2.TemplateError, src: Path) -> str:
    """file:line of a template error: a syntax error knows it, a render error's traceback has it."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"{exc.filename or src}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(".j2")]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else str(src)


def _write(env: jinja2.Environment, base: Path, src: Path, dest: Path, context: dict[str, Any]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix != ".j2":
        shutil.copyfile(src, dest)
    else:
        name = src.relative_to(base).as_posix()
        try:
            text = env.get_template(name).render(**context)
        except UnescapedValue as exc:
            if base == templates_root():
                raise  # our template: a bug, with its traceback
            raise UsageError(
                f"Your template {src} prints a value without escaping it: {exc}",
                "Print every value through the filter of the file's language (see deployctl/escape.py).",
            ) from exc
        except jinja2.TemplateError as exc:
            if base == templates_root():
                raise
            raise UsageError(
                f"Your template {_where(exc, src)} does not render: {type(exc).__name__}: {exc.message}",
                "Fix it (Jinja syntax; the variables are those the built-in templates use), or remove "
                "it to use deployctl's.",
            ) from None
        dest.write_text(text)
    shutil.copymode(src, dest)
