"""A runnable copy of the project and one-key params edits: shared by the benchmark and the tests, which both
run the pipeline in a scratch copy."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore")


def copy_project(dest: Path, folders: tuple[str, ...] = ("stages",)) -> Path:
    """A runnable copy of the project (the code folders, dvc.yaml, params) in its own git repository, no data."""
    dest.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in PROJECT_FILES:
        shutil.copy(ROOT / name, dest / name)
    (dest / ".dvc").mkdir(exist_ok=True)
    shutil.copy(ROOT / ".dvc" / "config", dest / ".dvc" / "config")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def dvc_env() -> dict[str, str]:
    """The environment for running `dvc` (and the stages' `python`) in a copy: this interpreter's bin first on
    PATH, so both resolve to the virtualenv the caller runs in; no usage analytics."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                DVC_NO_ANALYTICS="1")


def set_param(project: Path, dotted: str, value) -> None:
    """Change one key of params.yaml in place, keeping the rest of the file (comments included) as it is."""
    path = project / "params.yaml"
    section, key = dotted.split(".")
    lines = path.read_text().splitlines()
    in_section = False
    for i, line in enumerate(lines):
        if re.match(r"^\S", line):
            in_section = line.startswith(f"{section}:")
        elif in_section and re.match(rf"^\s+{key}:", line):
            indent = line[: len(line) - len(line.lstrip())]
            lines[i] = f"{indent}{key}: {json.dumps(value) if not isinstance(value, str) else value}"
            break
    else:
        raise KeyError(dotted)
    path.write_text("\n".join(lines) + "\n")
