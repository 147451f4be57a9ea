"""Writing an artifact into `--out`: check the place, plan, then install (plan vs execute).

`generate` renders into a staging folder first. Only then is `--out` touched, and only as planned:
- a file an earlier `generate` wrote here (its sha256 is in the manifest's `files`) and that still
  holds what it wrote is replaced, or removed when the new generation no longer produces it;
- a generated file the user edited is kept, and reported (the new manifest records the new
  hash, so `deployctl build` reports it as edited);
- any other file in the way is the user's: nothing is written, and the error lists them;
- `model/` is replaced as a unit, only when it holds exactly what generate wrote;
- build outputs (`.venv`, `dist`, ...) are never touched.
Every path read from a manifest must stay inside `--out`, else the manifest is refused.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from deployctl.errors import DeployctlError, UsageError
from deployctl.manifest import BUILD_OUTPUTS, MANIFEST, Manifest, recorded_files, sha256, write_manifest

MODEL_DIR = "model"
VIRTUAL_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))
SHOWN = 12  # paths listed in one message
ELSEWHERE = "Choose a directory of its own for the artifact, e.g. --out build/api."


class OutDirError(DeployctlError):
    """--out cannot be written as asked (a user file in the way, a tampered manifest, ...)."""


@dataclass
class Previous:
    """What an earlier `generate` recorded in `--out` (its manifest's `files`, checked)."""

    files: dict[str, str]


@dataclass
class Plan:
    """What installing the staged artifact into `out` will do; nothing is written before `install`."""

    out: Path
    stage: Path
    hashes: dict[str, str]  # the new manifest's `files`: every staged file and its sha256
    write: list[str] = field(default_factory=list)  # new, or replacing an unmodified generated file
    replaced: list[str] = field(default_factory=list)  # the part of `write` that replaces a file
    kept_edited: list[str] = field(default_factory=list)  # generated, edited, generated again: kept
    remove: list[str] = field(default_factory=list)  # generated, unmodified, no longer generated
    kept_orphans: list[str] = field(default_factory=list)  # generated, edited, no longer generated
    replace_model: bool = False  # `model/` exists and holds exactly what generate wrote
    model_changed: bool = False  # ... and the new model/ differs from it

    def notes(self) -> list[str]:
        """What --force did, for the CLI to print (stderr)."""
        notes = []
        if self.replaced or self.model_changed:
            what = ([f"{MODEL_DIR}/"] if self.model_changed else []) + self.replaced
            notes.append(f"replaced {len(what)} unmodified generated file(s): {_show(what)}")
        if self.remove:
            notes.append(
                f"removed {len(self.remove)} unmodified generated file(s) no longer produced: "
                f"{_show(self.remove)}"
            )
        if self.kept_edited:
            notes.append(
                f"kept {len(self.kept_edited)} file(s) you edited since generate (not updated; "
                f"`deployctl build` reports them): {_show(self.kept_edited)}"
            )
        if self.kept_orphans:
            notes.append(
                f"kept {len(self.kept_orphans)} edited file(s) this target no longer generates; they are "
                f"yours now: {_show(self.kept_orphans)}"
            )
        return notes


def _show(paths: list[str]) -> str:
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return ", ".join(paths[:SHOWN]) + more


def check_out_dir(out: Path, force: bool) -> Previous | None:
    """Refuse an `--out` that cannot or must not be written, before anything is resolved.

    Returns what an earlier generate recorded there (None for a new or non-artifact directory).
    """
    try:
        return _check_out_dir(out, force)
    except OSError as exc:
        raise UsageError(
            f"Cannot use --out {out}: {exc.strerror or exc}.", "Choose a directory you can write to."
        ) from None


def _check_out_dir(out: Path, force: bool) -> Previous | None:
    real = out.resolve()
    for special in VIRTUAL_FILESYSTEMS:
        if real == special or special in real.parents:
            raise UsageError(
                f"--out {out} is inside {special}, a virtual filesystem of the kernel, not for files.",
                ELSEWHERE,
            )
    if real == Path(real.anchor):
        raise UsageError(
            f"--out {out} is the root of the filesystem.",
            ELSEWHERE,
        )
    if real == _home():
        raise UsageError(
            f"--out {out} is your home directory; deployctl writes an artifact into a directory of its own.",
            ELSEWHERE,
        )
    existing = next(p for p in [out, *out.absolute().parents] if p.exists() or p.is_symlink())
    if not existing.is_dir():
        what = "a broken link" if existing.is_symlink() else "a file"
        where = f"is {what}" if existing == out else f"is under {existing}, which is {what}"
        raise UsageError(f"--out {out} {where}.", "Choose a directory path for --out.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(
            f"--out {out}: {existing} is not writable for you.", "Choose a directory you can write to."
        )
    if existing != out or not any(out.iterdir()):
        return None
    if not force:
        raise UsageError(
            f"--out {out} is not empty; deployctl never overwrites files without --force.",
            "Choose an empty or new directory, or pass --force to regenerate into it.",
        )
    previous = read_previous(out)
    cwd = Path.cwd().resolve()
    if previous is None and (real == cwd or real in cwd.parents):
        raise UsageError(
            f"--out {out} is {'the' if real == cwd else 'a parent of the'} current directory, holds files "
            f"and no {MANIFEST}: it is not an artifact, and --force only regenerates an artifact.",
            "Generate into a directory of its own, e.g. --out build/api.",
        )
    return previous


def _home() -> Path | None:
    try:
        return Path.home().resolve()
    except (RuntimeError, KeyError, OSError):  # no HOME and no passwd entry
        return None


def read_previous(out: Path) -> Previous | None:
    """The `files` of the manifest in `out`, every path checked to stay inside `out`."""
    file = out / MANIFEST
    if not file.exists() and not file.is_symlink():
        return None
    refuse = f"Delete {file} (and the files it lists) or generate into a new directory."
    if file.is_symlink() or not file.is_file():
        raise OutDirError(f"{file} is not a regular file, so it is no manifest deployctl wrote.", refuse)
    try:
        files = recorded_files(file)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise OutDirError(
            f"{file} is not a valid deployctl manifest ({type(exc).__name__}: {exc}), so --force cannot "
            "tell which files deployctl wrote.",
            refuse,
        ) from None
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise OutDirError(f"{file} has no valid `files` table.", refuse)
    bad = [rel for rel in files if not _inside(out, rel)]
    if bad:
        raise OutDirError(
            f"{file} lists path(s) that lead outside --out {out} (a `..`, an absolute path, a link on the "
            f"way) or into what generate never writes: {_show(_named(out, bad))}. deployctl refuses this "
            "manifest and touches none of its files.",
            f"The manifest was edited, or a directory in the artifact was replaced by a link. {refuse}",
        )
    return Previous(dict(files))


def _named(out: Path, paths: list[str]) -> list[str]:
    """The paths as the user should see them: under a link, the first one and the link
    (`app/server.py (through the link app)`), not every file the manifest lists under it."""
    named: dict[str, str] = {}
    for rel in paths:
        links = [p for p in reversed(PurePosixPath(rel).parents) if p.parts and (out / p).is_symlink()]
        key = links[0].as_posix() if links else rel
        named.setdefault(key, f"{rel} (through the link {key})" if links else rel)
    return list(named.values())


def _inside(out: Path, rel: str) -> bool:
    """`rel` names a generated file inside `out`: relative, no `..`, no link leading out."""
    path = PurePosixPath(rel)
    if not rel or "\\" in rel or "\0" in rel or path.is_absolute() or rel.startswith("~"):
        return False
    if any(part in ("..", ".", "") for part in rel.split("/")):
        return False
    if path.parts[0] in BUILD_OUTPUTS or rel == MANIFEST:
        return False
    root = out.resolve()
    target = (out / rel).resolve()
    return root in target.parents


def plan_install(out: Path, stage: Path, previous: Previous | None) -> Plan:
    """Compare the staged artifact with `out`; raise, listing them, if user files are in the way."""
    staged = {p.relative_to(stage).as_posix(): p for p in sorted(stage.rglob("*")) if p.is_file()}
    plan = Plan(out, stage, {rel: sha256(p) for rel, p in staged.items()})
    prev = previous.files if previous else {}
    conflicts: list[str] = []
    for rel, digest in plan.hashes.items():
        if rel.startswith(f"{MODEL_DIR}/"):
            continue
        dest = out / rel
        blocked = _blocking_parent(out, rel)
        if blocked:
            conflicts.append(blocked)
        elif dest.is_symlink() or (dest.exists() and not dest.is_file()):
            if rel in prev and dest.is_symlink():
                plan.kept_edited.append(rel)
            else:
                conflicts.append(f"{rel} (a {'link' if dest.is_symlink() else 'directory'})")
        elif not dest.exists():
            plan.write.append(rel)
        elif rel not in prev:
            conflicts.append(rel)
        else:
            current = sha256(dest)
            if current == prev[rel]:
                if current != digest:
                    plan.write.append(rel)
                    plan.replaced.append(rel)
            elif current != digest:
                plan.kept_edited.append(rel)
    for rel, digest in prev.items():
        if rel in plan.hashes or rel.startswith(f"{MODEL_DIR}/"):
            continue
        dest = out / rel
        if dest.is_symlink() or (dest.exists() and not dest.is_file()):
            plan.kept_orphans.append(rel)
        elif dest.is_file():
            (plan.remove if sha256(dest) == digest else plan.kept_orphans).append(rel)
    if conflicts:
        raise OutDirError(
            f"--out {out} holds {len(conflicts)} file(s) that deployctl did not write, where it would write "
            f"its own: {_show(conflicts)}. Nothing was written.",
            "Move them away or generate into another directory: --force only replaces files an earlier "
            "`deployctl generate` wrote there and you have not changed.",
        )
    plan.replace_model = _check_model_dir(out, prev)
    old_model = {rel: digest for rel, digest in prev.items() if rel.startswith(f"{MODEL_DIR}/")}
    new_model = {rel: digest for rel, digest in plan.hashes.items() if rel.startswith(f"{MODEL_DIR}/")}
    plan.model_changed = plan.replace_model and old_model != new_model
    return plan


def _blocking_parent(out: Path, rel: str) -> str | None:
    """A parent of `out/rel` that is a file or a link (writing through a link could leave `out`)."""
    parts = PurePosixPath(rel).parts[:-1]
    for i in range(1, len(parts) + 1):
        parent = out.joinpath(*parts[:i])
        if parent.is_symlink():
            return f"{'/'.join(parts[:i])} (a link, where deployctl writes a directory)"
        if parent.exists() and not parent.is_dir():
            return f"{'/'.join(parts[:i])} (a file, where deployctl writes a directory)"
    return None


def _check_model_dir(out: Path, prev: dict[str, str]) -> bool:
    """True when `out/model` exists and holds exactly what generate wrote; raise when it holds more."""
    model = out / MODEL_DIR
    if not model.exists() and not model.is_symlink():
        return False
    hint = (
        f"deployctl replaces {MODEL_DIR}/ as a whole, so it must hold only what generate wrote. Move your "
        f"files out of {MODEL_DIR}/ (or restore the edited ones), or generate into another directory."
    )
    if model.is_symlink() or not model.is_dir():
        raise OutDirError(f"{model} is not a directory deployctl wrote (a file or a link).", hint)
    differs: list[str] = []
    for dirpath, dirnames, filenames in os.walk(model, followlinks=False):
        for entry in sorted([*dirnames, *filenames]):
            path = Path(dirpath) / entry
            rel = path.relative_to(out).as_posix()
            if path.is_symlink():
                differs.append(f"{rel} (a link)")
            elif path.is_dir():
                continue
            elif rel not in prev:
                differs.append(f"{rel} (not written by deployctl)")
            elif not path.is_file() or sha256(path) != prev[rel]:
                differs.append(f"{rel} (edited)")
    if differs:
        raise OutDirError(
            f"{model} does not hold exactly what deployctl wrote: {_show(differs)}. Nothing was written.",
            hint,
        )
    return True


def install(plan: Plan, manifest: Manifest) -> None:
    """Execute the plan: the only step of `generate` that writes into `--out`."""
    out, stage = plan.out, plan.stage
    try:
        out.mkdir(parents=True, exist_ok=True)
        model = out / MODEL_DIR
        if plan.replace_model:
            shutil.rmtree(model)
        for rel in plan.remove:
            (out / rel).unlink()
            _prune_empty_parents(out, out / rel)
        for rel in [*plan.write, *(r for r in plan.hashes if r.startswith(f"{MODEL_DIR}/"))]:
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_symlink() or dest.exists():
                dest.unlink()  # never write through whatever is there
            shutil.copyfile(stage / rel, dest)
            shutil.copymode(stage / rel, dest)
        write_manifest(out, manifest)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise DeployctlError(
            f"Could not write the artifact into {out}{where}: {exc.strerror or exc}.",
            "Check the directory is writable and has space, then run generate again with --force.",
        ) from None


def _prune_empty_parents(out: Path, path: Path) -> None:
    parent = path.parent
    while parent != out and out in parent.parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
