"""The Dockerfile, tested without a Docker engine: what it declares, and its install steps run for real.

``test_dockerfile_install_steps_work_in_a_clean_venv`` copies exactly the files the build stage COPYs into an
empty directory, creates a fresh virtual environment and runs the Dockerfile's own ``pip install .`` there;
then the installed ``vllm-scaler serve --help`` must work and the gRPC stubs must import from the installed
package (from a directory outside the repository, so the source tree cannot stand in for it).

Offline: the new virtual environment sees the site-packages of the interpreter running the tests (a ``.pth``
file), where the dependencies are installed, and pip runs with ``--no-index --no-build-isolation``, so it still
resolves and checks every dependency of pyproject.toml but downloads nothing; the build backend is that
environment's setuptools. The image's build has network and fetches the same requirements.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from deploy_render import DEPLOY, REPO, find, render, renderer

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str, int]]:
    """(INSTRUCTION, arguments, stage index) for each Dockerfile line, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out, stage = [], -1
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, args = line.partition(" ")
        if word.upper() == "FROM":
            stage += 1
        out.append((word.upper(), args.strip(), stage))
    return out


def test_dockerfile_is_multi_stage_slim_python_311_non_root() -> None:
    ins = instructions()
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for w, a, _ in ins if w == "ARG" and "=" in a}
    froms = [a for w, a, _ in ins if w == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS build")
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", args["PYTHON_IMAGE"]), args["PYTHON_IMAGE"]
    final = [(w, a) for w, a, s in ins if s == 1]
    users = [a for w, a in final if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    uid = int(users[-1].split(":")[0])
    pod = find(render(DEPLOY / "base"), "Deployment", "vllm-scaler")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == uid
    assert ("ENTRYPOINT", '["vllm-scaler"]') in final and ("CMD", '["serve"]') in final
    # The final stage gets only the virtual environment, never the sources or a compiler.
    assert [a for w, a in final if w == "COPY"] == ["--from=build /opt/vllm-scaler /opt/vllm-scaler"]


@pytest.mark.skipif(renderer() is None, reason="needs kustomize to read deploy/base's ports")
def test_exposed_ports_are_the_ones_deploy_uses() -> None:
    exposed = {int(p) for w, a, _ in instructions() if w == "EXPOSE" for p in a.split()}
    container = find(render(DEPLOY / "base"), "Deployment", "vllm-scaler")["spec"]["template"]["spec"][
        "containers"][0]
    assert exposed == {p["containerPort"] for p in container["ports"]}


def build_stage_steps() -> tuple[list[list[str]], str]:
    """The build stage's COPY sources (from the context) and its `pip install` command line."""
    copies, install = [], None
    for word, args, stage in instructions():
        if stage != 0:
            continue
        if word == "COPY":
            *sources, _dest = shlex.split(args)
            copies.append(sources)
        if word == "RUN" and " install " in f" {args} " and "pip" in args:
            install = args
    assert install is not None, "the build stage has no pip install step"
    return copies, install


def test_the_install_step_is_the_readme_one() -> None:
    _, install = build_stage_steps()
    assert shlex.split(install)[1:] == ["install", "."], install
    # The README installs the same project directory (its quickstart adds the `plot` extra for --plot).
    assert re.search(r"pip install (-q )?'?\.(\[[\w,]+\])?'?", (REPO / "README.md").read_text())


def offline_build_backend() -> str | None:
    """Why an offline, non-isolated build cannot run here, or None."""
    try:
        import setuptools
    except ImportError:
        return "setuptools is not installed in the test environment"
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    if (major, minor) < (70, 1):
        try:
            import wheel  # noqa: F401  (bdist_wheel before setuptools 70.1)
        except ImportError:
            return (f"setuptools {setuptools.__version__} needs the `wheel` package to build offline; "
                    "install setuptools>=70.1 in the test environment")
    return None


@pytest.mark.slow
def test_dockerfile_install_steps_work_in_a_clean_venv(tmp_path: Path) -> None:
    reason = offline_build_backend()
    if reason:
        pytest.skip(reason)
    copies, install = build_stage_steps()
    src = tmp_path / "src"
    src.mkdir()
    for sources in copies:
        for name in sources:
            origin = REPO / name
            if origin.is_dir():
                shutil.copytree(origin, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(origin, src / name)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    # Let the fresh environment see the dependencies installed where the tests run (no download).
    env_site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    parent = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    (Path(env_site) / "_test_parent_env.pth").write_text("\n".join(sorted(parent)) + "\n")
    argv = shlex.split(install)
    assert Path(argv[0]).name == "pip"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    # Same command, run with this interpreter's pip against the fresh environment (offline: see module doc).
    cmd = [sys.executable, "-m", "pip", "--python", str(py), *argv[1:], "--no-index", "--no-build-isolation"]
    proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    cli = env_dir / "bin" / "vllm-scaler"
    assert cli.exists(), "the console script `vllm-scaler` was not installed"
    helped = subprocess.run([str(cli), "serve", "--help"], cwd=outside, capture_output=True, text=True,
                            timeout=60, env=env)
    assert helped.returncode == 0, helped.stderr[-3000:]
    assert "usage: vllm-scaler serve" in helped.stdout
    probe = ("import scaler._proto.externalscaler_pb2_grpc as m, scaler; "
             "print(m.__file__); print(scaler.__file__)")
    imported = subprocess.run([str(py), "-c", probe], cwd=outside, capture_output=True, text=True, timeout=60,
                              env=env)
    assert imported.returncode == 0, imported.stderr[-3000:]
    for path in imported.stdout.split():
        assert Path(path).resolve().is_relative_to(env_dir.resolve()), f"imported from {path}, not the venv"
