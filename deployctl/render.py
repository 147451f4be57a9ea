"""Rendering: template layers -> files in an artifact dir. It only writes files (no Docker, no network).

Templates live in the top-level `templates/` folder, shipped in the wheel as `deployctl/templates`.
Each target names the layers it is made of (e.g. runtime + fastapi + docker); later layers add
files or replace earlier ones. Files ending in `.j2` are rendered with StrictUndefined (a missing
variable is a bug, never an empty string); every other file is copied verbatim.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jinja2

from deployctl.errors import UsageError


def templates_root() -> Path:
    packaged = Path(__file__).parent / "templates"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "templates"


def environment(search_path: list[Path]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in search_path]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["tojson"] = _tojson
    return env


def _tojson(value: Any) -> str:
    import json

    return json.dumps(value)


def render_layers(
    layers: tuple[str, ...], context: dict[str, Any], out: Path, override: Path | None = None
) -> list[Path]:
    """Render every layer into `out`; a file in the user's override folder wins over ours."""
    bases = [b for b in (templates_root(), override) if b is not None]
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


def _write(env: jinja2.Environment, base: Path, src: Path, dest: Path, context: dict[str, Any]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix != ".j2":
        shutil.copyfile(src, dest)
    else:
        name = src.relative_to(base).as_posix()
        dest.write_text(env.get_template(name).render(**context))
    shutil.copymode(src, dest)
