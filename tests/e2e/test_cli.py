"""The CLI frame through the real binary: --version, --help of every subcommand, usage errors,
`wsig help exit-codes`, NO_COLOR, and completions that name every subcommand and flag."""
import pathlib
import re

import pytest

from conftest import ROOT, run_wsig

SUBCOMMANDS = ["serve", "send", "listen", "sign", "verify", "bench"]


def project_version():
    text = (ROOT / "CMakeLists.txt").read_text()
    return re.search(r"project\(wsig VERSION ([0-9.]+)", text).group(1)


def test_version_is_the_project_version():
    for flag in ("--version", "-V"):
        r = run_wsig(flag)
        assert r.returncode == 0
        assert r.stdout == f"wsig {project_version()}\n"


def test_no_subcommand_prints_help_and_exits_2():
    r = run_wsig()
    assert r.returncode == 2
    assert "Usage: wsig" in r.stdout + r.stderr


@pytest.mark.parametrize("args", [["--bogus"], ["frobnicate"], ["sign", "--nope"], ["verify"],
                                  ["sign", "x", "--new", "--secret", "k"]])
def test_usage_errors_exit_2_never_cli11_codes(args):
    r = run_wsig(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip() != ""
    assert r.stdout == ""


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_every_subcommand_has_help_with_examples(sub):
    r = run_wsig(sub, "--help")
    assert r.returncode == 0, r.stderr
    assert f"Usage: wsig {sub}" in r.stdout
    assert "Examples:" in r.stdout
    r2 = run_wsig("help", sub)
    assert r2.returncode == 0
    assert r2.stdout == r.stdout


def test_help_exit_codes_lists_every_code():
    r = run_wsig("help", "exit-codes")
    assert r.returncode == 0
    codes = [int(m) for m in re.findall(r"^\s+(\d+)\s", r.stdout, re.M)]
    assert codes == [0, 1, 2, 65, 66, 67, 69, 76, 77, 78, 99, 124, 130, 143]


def test_help_unknown_topic_is_a_usage_error():
    r = run_wsig("help", "nonsense")
    assert r.returncode == 2
    assert "nonsense" in r.stderr


def test_no_color_keeps_diagnostics_plain():
    r = run_wsig("verify", "nope", "--secret", "k", env={"NO_COLOR": "1"})
    assert r.returncode == 1
    assert "\x1b[" not in r.stderr


def flags_in_help(sub):
    text = run_wsig(sub, "--help").stdout
    return sorted(set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text.split("Examples:")[0])) - {"--help"})


def test_help_of_the_root_lists_every_subcommand():
    text = run_wsig("--help").stdout
    for sub in SUBCOMMANDS + ["help"]:
        assert re.search(rf"^\s+{sub}\s", text, re.M), sub


@pytest.mark.parametrize("completion", ["wsig.bash", "_wsig", "wsig.fish"])
def test_completions_name_every_subcommand_and_flag(completion):
    text = (ROOT / "completions" / completion).read_text()
    missing = []
    for sub in SUBCOMMANDS:
        if not re.search(rf"\b{sub}\b", text):
            missing.append(sub)
        for flag in flags_in_help(sub):
            name = flag[2:]
            # fish writes flags as `-l name`; bash and zsh write them as --name.
            if flag not in text and not re.search(rf"-l {re.escape(name)}\b", text):
                missing.append(f"{sub} {flag}")
    assert missing == [], f"{completion} lacks: {missing}"


def test_man_page_names_every_subcommand_and_flag():
    text = (ROOT / "doc" / "wsig.1").read_text().replace("\\-", "-")
    missing = [f"{sub} {flag}" for sub in SUBCOMMANDS for flag in flags_in_help(sub) if flag not in text]
    assert missing == []


def test_generated_docs_are_up_to_date():
    """Completions and the man page are generated from --help; a new flag needs `scripts/gen-docs`."""
    import subprocess
    from conftest import WSIG
    r = subprocess.run(["/usr/bin/python3", str(ROOT / "scripts" / "gen-docs"), WSIG, "--check"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def bash_complete(line):
    import subprocess
    words = line.split(" ")
    script = (f"source {ROOT / 'completions' / 'wsig.bash'}\n"
              f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
              "_wsig; printf '%s\\n' \"${COMPREPLY[@]}\"")
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=10).stdout.split()


def test_bash_completion_completes_subcommands_and_flags():
    assert bash_complete("wsig ver") == ["verify"]
    assert bash_complete("wsig sign --sec") == ["--secret-file", "--secret"]
    assert bash_complete("wsig help exit") == ["exit-codes"]
