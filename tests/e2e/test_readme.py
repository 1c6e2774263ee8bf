"""The README's examples run as written: each ```sh block after a `<!-- readme-test: NAME -->`
marker is executed with bash, `wsig` being the binary under test, in a fresh directory."""
import os
import pathlib
import re
import subprocess

import pytest

from conftest import ROOT, WSIG

BLOCK = re.compile(r"<!-- readme-test: ([a-z0-9-]+) -->\s*```sh\n(.*?)```", re.S)
BLOCKS = dict(BLOCK.findall((ROOT / "README.md").read_text()))


def test_the_readme_has_tested_blocks():
    assert {"ci-story", "signal-route"} <= set(BLOCKS)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_readme_block_runs(name, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "wsig").symlink_to(pathlib.Path(WSIG).resolve())
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    env.pop("WSIG_SECRET", None)
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", BLOCKS[name]], cwd=work, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    if name == "ci-story":
        assert r.stdout == '{"delivered":1}\nhello\n'
    elif name == "signal-route":
        assert re.fullmatch(r"[0-9a-f]{8}: hello\n", r.stdout), r.stdout
