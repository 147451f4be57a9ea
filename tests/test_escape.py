"""The escaping filters and the render-time refusal of unescaped values (no MLflow needed).

Each filter is checked by the real parser of its language: Python's, PyYAML, json, bash,
markdown-it (CommonMark + GFM tables), packaging, and a Docker engine for Dockerfile labels.
"""

from __future__ import annotations

import ast
import json
import shlex
import subprocess
import uuid
from pathlib import Path

import jinja2
import pytest
import yaml
from markdown_it import MarkdownIt
from packaging.requirements import Requirement

from deployctl import escape
from deployctl.errors import UsageError
from deployctl.escape import UnescapedValue
from deployctl.render import environment, render_layers

CORPUS = [
    "plain",
    "",
    'x" + str(__import__("os").system("touch pwned")) + "',
    "x' + str(__import__('os').system('touch pwned')) + '",
    '"""',
    "'''",
    "back\\slash",
    "trailing\\",
    "line\nbreak",
    "cr\rlf\r\n",
    "tab\tx",
    "nul\x00byte",
    "del\x7f",
    "nel\x85",
    "ls\u2028ps\u2029",
    "bom\ufeff",
    "x²",
    "名前",
    "😀 emoji",
    "$(touch pwned) ${HOME} $HOME `id`",
    "'; touch pwned; echo '",
    "{{ x }} {% if %}",
    "#hash",
    "- item",
    "a: b",
    "key: value\n- evil",
    "*emph* _under_ [link](javascript:alert(1)) <script>alert(1)</script> &amp;",
    "a|b\\|c",
    "``` fence",
    "true",
    "null",
    "123",
    "1e3",
    " leading and trailing ",
    "x" * 500,
]


def visible(text: str) -> str:
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


@pytest.mark.parametrize("value", CORPUS)
def test_py_is_one_literal_that_evaluates_back(value: str) -> None:
    literal = escape.py(value)
    assert "\n" not in literal and "\r" not in literal
    assert ast.literal_eval(literal) == value
    tree = ast.parse(f"x = {literal}\ny = [{literal}, {literal}]\n")  # one expression, any position
    assert isinstance(tree.body[0], ast.Assign) and isinstance(tree.body[0].value, ast.Constant)


def test_py_writes_numbers_bools_none_and_nested_data() -> None:
    data = {"a": [1, 2.5, True, None], "b'": {"c": "d\n"}}
    assert ast.literal_eval(escape.py(data)) == data
    with pytest.raises(ValueError):
        escape.py(float("nan"))
    with pytest.raises(TypeError):
        escape.py(object())


@pytest.mark.parametrize("value", CORPUS)
def test_yaml_value_is_one_ascii_line_that_loads_back(value: str) -> None:
    node = escape.yaml_value(value)
    assert node.isascii() and node.isprintable()
    assert yaml.safe_load(f"key: {node}\nother: 1\n") == {"key": value, "other": 1}
    assert yaml.safe_load(f"{node}: 1\n") == {value: 1}  # also as a key
    assert yaml.safe_load(f"- {node}\n") == [value]


def test_yaml_value_keeps_types_and_block_mappings_round_trip() -> None:
    data = {"n": 3, "f": 1e20, "t": True, "none": None, "list": ["a", 1], "yes": "no"}
    assert yaml.safe_load(f"x: {escape.yaml_value(data)}") == {"x": data}
    labels = {value: value for value in CORPUS if value}
    block = escape.yaml_block({"name": "svc", "labels": labels, "true": "x"}, 2)
    assert yaml.safe_load(f"metadata:\n  {block}\nspec: 1\n") == {
        "metadata": {"name": "svc", "labels": labels, "true": "x"},
        "spec": 1,
    }
    assert all(line.isascii() for line in block.splitlines())


@pytest.mark.parametrize("value", CORPUS)
def test_json_value_is_ascii_json(value: str) -> None:
    assert json.loads(escape.json_value(value)) == value and escape.json_value(value).isascii()


@pytest.mark.parametrize("value", CORPUS)
def test_sh_quotes_one_word_that_bash_gives_back(value: str) -> None:
    word = escape.shell(value)
    assert "\n" not in word and "\r" not in word
    if "\x00" in value:  # no shell can pass a NUL in an argument
        return
    out = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, check=True).stdout
    assert out.decode("utf-8", "surrogateescape") == value


def test_sh_joins_a_command_line() -> None:
    argv = ["gcloud", "deploy", "it's", "$(touch pwned)"]
    assert shlex.split(escape.shell(argv)) == argv


MD = MarkdownIt("commonmark").enable("table")


def inline_text(tokens: list) -> str:  # type: ignore[type-arg]
    return "".join(t.content for t in tokens if t.type in ("text", "code_inline"))


@pytest.mark.parametrize("value", CORPUS)
def test_md_stays_one_literal_table_cell(value: str) -> None:
    source = f"| a | b |\n|---|---|\n| {escape.markdown(value)} | end |\n"
    tokens = MD.parse(source)
    cells = [t for t in tokens if t.type == "inline"]
    assert len(cells) == 4, source  # two header cells, two body cells: no new cell, no new row
    body = cells[2].children or []
    assert {t.type for t in body} <= {"text", "softbreak"} and cells[3].content == "end"
    assert inline_text(body) == visible(value).strip()


@pytest.mark.parametrize("value", CORPUS)
def test_md_code_is_one_code_span(value: str) -> None:
    tokens = MD.parse(f"see {escape.markdown_code(value)} here\n")
    children = tokens[1].children or []
    assert [t.type for t in children] == ["text", "code_inline", "text"]
    assert children[1].content.strip() == visible(value).strip() or not value.strip()


def test_req_takes_pep_508_lines_only() -> None:
    for line in [
        "numpy==2.0.0",
        "scikit-learn>=1.5; python_version > '3.9'",
        "pkg @ https://x.example/p.whl",
    ]:
        assert Requirement(escape.requirement(line)) == Requirement(line)
    for bad in ["numpy\n--index-url https://evil", "-e .", "git+https://github.com/a/b", "x y z", ""]:
        with pytest.raises(UnescapedValue):
            escape.requirement(bad)


def test_token_accepts_inert_words_only() -> None:
    assert escape.token("fraud-detector") == "fraud-detector" and escape.token(3) == "3"
    for bad in ["a b", "a\nb", "$x", "-flag", "a#b", "a:b", "", "é", True]:
        with pytest.raises(UnescapedValue):
            escape.token(bad)


# -- the environment refuses what no filter escaped ------------------------------------------------


def render(name: str, source: str, **context: object) -> str:
    env = environment([])
    env.loader = jinja2.DictLoader({name: source})
    return env.get_template(name).render(**context)


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("app/server.py.j2", "title = {{ model.name }}"),
        ("app/server.py.j2", "title = '{{ model.name }}'"),
        ("app/server.py.j2", "title = {{ model.name | yaml }}"),  # the wrong language
        ("app/server.py.j2", "title = {{ model.name | py ~ '' }}"),  # a str again after ~
        ("k8s/deployment.yaml.j2", "name: {{ model.name }}"),
        ("k8s/deployment.yaml.j2", "name: {{ model.name | json }}"),
        ("docker/Dockerfile.j2", "LABEL a={{ model.name }}"),
        ("runtime/requirements.txt.j2", "{{ model.name }}"),
        ("lambda/events/predict.json.j2", '{"a": "{{ model.name }}"}'),
        ("_base/README.md.j2", "# {{ model.name }}"),
        ("gcf/.gcloudignore.j2", "{{ model.name }}"),
        ("app/server.py.j2", "flag = {{ flag }}"),  # bools, floats and None need a filter too
        ("app/server.py.j2", "ratio = {{ ratio }}"),
        ("app/server.py.j2", "x = {{ none }}"),
    ],
)
def test_a_raw_value_in_a_code_or_config_file_is_a_bug(name: str, source: str) -> None:
    with pytest.raises(UnescapedValue, match=r"without its escaping filter.*data, never code"):
        render(name, source, model={"name": "fraud"}, flag=True, ratio=0.5, none=None)


def test_escaped_values_and_ints_pass() -> None:
    out = render("a.py.j2", "x = {{ n }} + {{ s | py }}  # {{ t | token }}", n=3, s="it's", t="v1.0")
    assert out == 'x = 3 + "it\'s"  # v1.0'
    with pytest.raises(jinja2.UndefinedError):  # still strict
        render("a.py.j2", "{{ missing | py }}")


def test_our_template_printing_a_raw_value_fails_generate_as_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = tmp_path / "templates" / "bad"
    layer.mkdir(parents=True)
    (layer / "app.py.j2").write_text("NAME = '{{ model.name }}'\n")
    monkeypatch.setattr("deployctl.render.templates_root", lambda: tmp_path / "templates")
    with pytest.raises(UnescapedValue, match=r"bad/app\.py\.j2 prints the str 'fraud'"):
        render_layers(("bad",), {"model": {"name": "fraud"}}, tmp_path / "out")


def test_a_user_template_printing_a_raw_value_is_a_usage_error(tmp_path: Path) -> None:
    override = tmp_path / "overrides"
    (override / "runtime").mkdir(parents=True)
    (override / "runtime" / "extra.py.j2").write_text("NAME = '{{ name }}'\n")
    from tests.test_render import fixed_context

    with pytest.raises(UsageError, match=r"Your template .*extra\.py\.j2 prints a value without escaping"):
        render_layers(("runtime",), fixed_context("fastapi"), tmp_path / "out", override)


@pytest.mark.docker
def test_docker_labels_hold_the_values_a_real_engine_reads(tmp_path: Path) -> None:
    """A FROM-scratch image with one LABEL per corpus value: the engine parses our quoting."""
    import docker

    values = {f"v{i}": value for i, value in enumerate(CORPUS) if "\x00" not in value}
    lines = ["FROM scratch", "LABEL \\"]
    items = list(values.items())
    for i, (key, value) in enumerate(items):
        lines.append(
            f"    {escape.docker(key)}={escape.docker(value)}" + (" \\" if i < len(items) - 1 else "")
        )
    lines.append('CMD ["x"]')
    (tmp_path / "Dockerfile").write_text("\n".join(lines) + "\n")
    client = docker.from_env()
    tag = f"deployctl-escape-test:{uuid.uuid4().hex[:8]}"
    image, _ = client.images.build(path=str(tmp_path), tag=tag, rm=True)
    try:
        labels = image.labels
    finally:
        client.images.remove(tag, force=True)
    assert set(labels) == set(values)
    for key, value in values.items():  # the value itself; only non-printables stay escaped
        assert labels[key] == visible(value), key
