"""Escaping filters: the only way a value reaches a generated code or config file.

Everything a registry or a model directory says (names, columns, class labels, descriptions,
tags, requirements, paths) is data. The Jinja environment (`deployctl.render`) refuses to print a
plain `str` (or a bool, float or None) into a code or config file: a value must come out of one
of these filters, which return a marker type (`Escaped` subclass) naming the language it is safe
in, and a file accepts only the markers of its own language. Plain ints are printed as they are
(`str(int)` is digits and a sign, inert in every language we write); `bool` is not an int here.

Each filter's output is one line (a line break in a value is escaped, never emitted), so a value
can neither end a comment, nor open a new instruction, key, package line or table row.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import string
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import yaml


class UnescapedValue(Exception):
    """A template prints a value without the filter its file's language needs: a template bug."""


class Escaped(str):
    """A string made safe for one output language by a filter of this module."""

    language: ClassVar[str] = ""


class Py(Escaped):
    """A Python literal (repr): safe in any expression position of a .py file."""

    language = "python"


class Yaml(Escaped):
    """A YAML flow node (double-quoted ASCII scalars) or a block mapping checked by a round trip."""

    language = "yaml"


class Json(Escaped):
    """A JSON value (ASCII, no NaN)."""

    language = "json"


class Toml(Escaped):
    """A TOML basic string, or an array of them, on one line (pyproject.toml)."""

    language = "toml"


class Docker(Escaped):
    """A double-quoted Dockerfile word for ARG, ENV and LABEL values: `"`, `\\`, `$` escaped."""

    language = "dockerfile"


class Markdown(Escaped):
    """Markdown inline text or a code span that no value can break out of."""

    language = "markdown"


class Shell(Escaped):
    """One POSIX shell word or command line, quoted (for commands shown in READMEs)."""

    language = "shell"


class Requirement(Escaped):
    """One PEP 508 requirement line, as `packaging` parses and prints it."""

    language = "requirements"


class Token(Escaped):
    """An inert word ([A-Za-z0-9] then [A-Za-z0-9._+-]): no quote, space, `$`, `#`, `:` or line
    break, so it can stand in a comment, a docstring or a command in any language. It is a check,
    not an escaper: a value that is not such a word is refused."""

    language = "token"


TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def _plain(value: Any) -> Any:
    """Context data as plain JSON-like types (str subclasses become str), or TypeError."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no literal in every language we write")
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    raise TypeError(f"{type(value).__name__} values cannot be escaped; hand templates plain data")


# -- Python ----------------------------------------------------------------------------------------


def py(value: Any) -> Py:
    """`value` as a Python literal. repr() of a str escapes quotes, backslashes, line breaks and
    every non-printable character, so the literal is one token whatever the string holds."""
    return Py(_py(_plain(value)))


def _py(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_py(k)}: {_py(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and "'" not in value and '"' not in value:
        return '"' + repr(value)[1:-1] + '"'  # the same literal in the quotes ruff prefers
    return repr(value)


# -- YAML ------------------------------------------------------------------------------------------

_YAML_ESCAPES = {'"': '\\"', "\\": "\\\\"}


def yaml_scalar(text: str) -> str:
    """A double-quoted YAML scalar in printable ASCII, valid in YAML 1.1 and 1.2.

    Not JSON: JSON writes a character beyond U+FFFF as a surrogate pair, which YAML parsers read
    as two broken characters; YAML's own \\U escape keeps it whole.
    """
    out = []
    for char in text:
        code = ord(char)
        if char in _YAML_ESCAPES:
            out.append(_YAML_ESCAPES[char])
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def yaml_value(value: Any) -> Yaml:
    """`value` as one YAML flow node: a quoted scalar, a number, true/false/null, [...] or {...}."""
    return Yaml(_yaml(_plain(value)))


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is bool:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        # YAML 1.1 (PyYAML) reads 1e+20 as a string: its floats need a dot in the mantissa
        return text.replace("e", ".0e") if "e" in text and "." not in text else text
    if isinstance(value, str):
        return yaml_scalar(value)
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return "{" + ", ".join(f"{yaml_scalar(str(k))}: {_yaml(v)}" for k, v in value.items()) + "}"


def yaml_block(value: Mapping[str, Any], indent: int = 0) -> Yaml:
    """A mapping in block style, for `key:\n  {{ mapping | yaml_block(2) }}` at that indentation.

    One `key: value` per line, values as `yaml` writes them, nested mappings indented. The result
    is parsed back at the indentation it will sit at and must give the same data, else this is a
    bug and raises.
    """
    data = _plain(value)
    if not isinstance(data, dict) or not data:
        raise UnescapedValue(f"yaml_block needs a non-empty mapping, got {type(value).__name__}")
    text = ("\n" + " " * indent).join(_block(data))
    if yaml.safe_load("x:\n" + " " * max(indent, 1) + text) != {"x": data}:
        raise UnescapedValue(f"yaml_block could not write {data!r} so that it reads back the same")
    return Yaml(text)


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9._/-]*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def _key(key: Any) -> str:
    text = str(key)
    plain = _PLAIN_KEY.fullmatch(text) and text.lower() not in _YAML_WORDS
    return text if plain else yaml_scalar(text)


def _block(data: dict[Any, Any]) -> list[str]:
    lines = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            lines.append(f"{_key(key)}:")
            lines += ["  " + line for line in _block(value)]
        else:
            lines.append(f"{_key(key)}: {_yaml(value)}")
    return lines


# -- JSON ------------------------------------------------------------------------------------------


def json_value(value: Any) -> Json:
    return Json(json.dumps(_plain(value), ensure_ascii=True, allow_nan=False))


# -- TOML ------------------------------------------------------------------------------------------


def toml(value: Any) -> Toml:
    """A string (or a list of strings) as TOML basic strings. JSON's ASCII string escapes (\\", \\\\,
    \\n, \\uXXXX...) are TOML's, so json.dumps writes a TOML string that no value can break out of."""
    plain = _plain(value)
    items = plain if isinstance(plain, list) else [plain]
    if not all(isinstance(item, str) for item in items):
        raise UnescapedValue(f"toml escapes strings and lists of strings, got {value!r}")
    text = [json.dumps(item, ensure_ascii=True) for item in items]
    return Toml("[" + ", ".join(text) + "]" if isinstance(plain, list) else text[0])


# -- Dockerfile ------------------------------------------------------------------------------------


def docker(value: Any) -> Docker:
    """A double-quoted word for a Dockerfile ARG default, ENV or LABEL key or value.

    JSON escaping with `$` escaped too, so the builder expands no variable, and every
    non-printable character (a line break, U+2028...) escaped, so the value stays on its line.
    Docker un-escapes `\\"`, `\\\\` and `\\$` inside double quotes and keeps any other backslash,
    so the label holds the value itself, a line break shown as the two characters \\n. Never put
    a value in RUN.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UnescapedValue(f"a Dockerfile word must be a str or an int, got {type(value).__name__}")
    quoted = _visible(json.dumps(str(value), ensure_ascii=False))
    return Docker(quoted.replace("$", "\\$"))


# -- Markdown --------------------------------------------------------------------------------------

# Characters that can open or close a Markdown (CommonMark + GFM) construct anywhere in a line;
# the rest of ASCII punctuation (. - + = : / ...) only matters at the start of a line.
_MD_SPECIAL = set("\\`*_[]<>|#!~(){}&^")


def _visible(text: str) -> str:
    """Line breaks and other non-printable characters as their escape (\\n, \\x00, \\u2028)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def markdown(value: Any) -> Markdown:
    """Inline Markdown text, also inside a table cell: line breaks are shown as escapes, and
    every character that could start emphasis, a link, HTML, an entity, a code span or a new
    cell is backslash-escaped (CommonMark allows it for all ASCII punctuation; GFM tables keep
    `\\|` in the cell), as is a leading punctuation character (a list, a heading)."""
    text = _visible(str(_plain(value)))
    escaped = "".join("\\" + c if c in _MD_SPECIAL else c for c in text)
    if escaped and escaped[0] in string.punctuation and escaped[0] != "\\":
        escaped = "\\" + escaped
    return Markdown(escaped)


def markdown_python(value: Any) -> Markdown:
    """`value` as a Python literal (as `py`) inside a fenced Python block of a Markdown file, where
    it must stay runnable as written: a backtick, only ever inside a string literal, is written
    as the escape \\x60 so that no run of them can close the fence."""
    return Markdown(_py(_plain(value)).replace("`", "\\x60"))


def markdown_code(value: Any) -> Markdown:
    """A code span for prose (not for table cells: a `|` would split the cell there).

    The fence is one backtick longer than the longest run inside, padded with spaces, so the
    value cannot close it; line breaks are shown as escapes.
    """
    text = _visible(str(_plain(value)))
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith(("`", " ")) or text.endswith(("`", " ")) or not text else ""
    return Markdown(f"{fence}{pad}{text}{pad}{fence}")


# -- shell -----------------------------------------------------------------------------------------


def shell(value: Any) -> Shell:
    """One shell word (a str) or a command line (a list of words), quoted for POSIX shells.

    A word with a line break or another non-printable character is written in bash's $'...'
    quoting, so the command stays on one line (and inside a Markdown code block).
    """
    words = value if isinstance(value, (list, tuple)) else [value]
    return Shell(" ".join(_shell_word(str(_plain(w))) for w in words))


def _shell_word(word: str) -> str:
    if word.isprintable():
        return shlex.quote(word)
    body = "".join(
        "\\" + c if c in "\\'" else c if c.isprintable() else "".join(f"\\x{b:02x}" for b in c.encode())
        for c in word
    )
    return f"$'{body}'"  # \xHH: the UTF-8 bytes, whatever the shell's locale


# -- requirements.txt ------------------------------------------------------------------------------


def requirement(value: Any) -> Requirement:
    """A PEP 508 requirement, printed as `packaging` prints it; anything else is refused."""
    from packaging.requirements import InvalidRequirement
    from packaging.requirements import Requirement as Parsed

    if not isinstance(value, str):
        raise UnescapedValue(f"a requirement must be a str, got {type(value).__name__}")
    try:
        return Requirement(str(Parsed(value)))
    except InvalidRequirement as exc:
        raise UnescapedValue(f"{value!r} is not a PEP 508 requirement ({exc})") from None


# -- inert words -----------------------------------------------------------------------------------


def token(value: Any) -> Token:
    text = str(value) if type(value) is int else value
    if not isinstance(text, str) or not TOKEN.fullmatch(text):
        raise UnescapedValue(
            f"{value!r} is not an inert word (letters, digits, . _ + -); escape it for the file's "
            "language instead of printing it as a token"
        )
    return Token(text)


FILTERS: dict[str, Callable[..., Escaped]] = {
    "py": py,
    "yaml": yaml_value,
    "yaml_block": yaml_block,
    "json": json_value,
    "tojson": json_value,
    "docker": docker,
    "toml": toml,
    "md": markdown,
    "md_code": markdown_code,
    "md_py": markdown_python,
    "sh": shell,
    "req": requirement,
    "token": token,
}

# What each kind of output file accepts, besides plain ints.
ACCEPTS: dict[str, tuple[type[Escaped], ...]] = {
    "python": (Py, Token),
    "yaml": (Yaml, Token),
    "json": (Json,),
    "dockerfile": (Docker, Token),
    "toml": (Toml, Token),
    "requirements": (Requirement, Token),
    "markdown": (Markdown, Shell, Token),
    "shell": (Shell, Token),
    "text": (Token,),
}
FILTERS_FOR = {
    "python": "py",
    "yaml": "yaml, yaml_block",
    "json": "json",
    "dockerfile": "docker (ARG/ENV/LABEL values only, never in RUN)",
    "toml": "toml",
    "requirements": "req",
    "markdown": "md, md_code, md_py (in a fenced Python block), sh",
    "shell": "sh",
    "text": "token",
}


def kind_of(path: str) -> str:
    """The language of an output file, from its name (a template's name without `.j2`)."""
    name = path.removesuffix(".j2").rsplit("/", 1)[-1]
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name.lstrip(".") else ""
    if suffix in ("py", "pyi"):
        return "python"
    if suffix in ("yaml", "yml"):
        return "yaml"
    if suffix == "json":
        return "json"
    if suffix == "toml":
        return "toml"
    if name == "Dockerfile" or name.startswith("Dockerfile.") or suffix == "dockerfile":
        return "dockerfile"
    if name.startswith("requirements") and suffix == "txt":
        return "requirements"
    if suffix in ("md", "markdown"):
        return "markdown"
    if suffix in ("sh", "bash"):
        return "shell"
    return "text"


def check_output(value: Any, template: str) -> Any:
    """What a template may print into `template`'s file: the file's own markers and plain ints."""
    kind = kind_of(template)
    if isinstance(value, ACCEPTS[kind]) or type(value) is int:
        return value
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    marker = f" (escaped for {value.language})" if isinstance(value, Escaped) else ""
    raise UnescapedValue(
        f"{template} prints the {type(value).__name__} {shown}{marker} into a {kind} file without "
        f"its escaping filter. Pass it through {FILTERS_FOR[kind]}: values from a registry or a "
        "model directory are data, never code (this is a bug in the template)."
    )
