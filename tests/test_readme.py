"""README.md is generated from nbs/index.ipynb (`cxrlab readme`); .ci/run runs the README's test command.

`.ci/run` is executed for real, in a throw-away git repository holding a copy of it, the README and the
.gitignore, with stand-ins on PATH for every program the README's commands call (python3 -m venv, pip, nbdev_*,
pytest): each stand-in only appends its command line to a log. The log must show that .ci/run ran the install part,
`pip check`, the export/clean sync check and then the README's test command itself, word for word.
"""
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from cxrlab.report import readme_text

ROOT = Path(__file__).resolve().parents[1]

STAND_INS = {  # program -> bash body; "$CALLS" is the log, every call appends one line
    'python3': '''if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"
  printf 'echo activate >> "$CALLS"\\ndeactivate() { echo deactivate >> "$CALLS"; }\\n' > "$3/bin/activate"; fi
echo "python3 $*" >> "$CALLS"''',
    'pip': 'echo "pip $*" >> "$CALLS"',
    'nbdev_export': 'echo "nbdev_export $*" >> "$CALLS"; if [ -n "${DIRTY_EXPORT:-}" ]; then echo changed >> tracked.txt; fi',
    'nbdev_clean': 'echo "nbdev_clean $*" >> "$CALLS"',
    'nbdev_test': 'echo "nbdev_test $* OMP_NUM_THREADS=${OMP_NUM_THREADS:-}" >> "$CALLS"',
    'pytest': 'echo "pytest $* OMP_NUM_THREADS=${OMP_NUM_THREADS:-}" >> "$CALLS"',
    'cxrlab': 'echo "cxrlab $*" >> "$CALLS"',
}


def block_after(readme: str, marker: str) -> str:
    "The bash block after an HTML comment marker, parsed here independently of .ci/run."
    rest = readme.split(f'<!-- {marker} -->', 1)[1]
    return rest.split('```bash', 1)[1].split('```', 1)[0].strip()


def logged_calls(command: str) -> list[str]:
    "What the stand-ins log when `command` (a && chain) runs: one line per program called."
    out = []
    for part in command.split('&&'):
        words, env = shlex.split(part), {}
        while words and re.fullmatch(r'[A-Za-z_]\w*=.*', words[0]):  # leading VAR=value assignments
            key, value = words.pop(0).split('=', 1); env[key] = value
        if words[0] == '.': out.append('activate'); continue
        line = ' '.join(words)
        if words[0] in ('nbdev_test', 'pytest'): line += f" OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', '1')}"
        out.append(line)
    return out


def run_ci(tmp_path: Path, readme: str, **env):
    "Run a copy of .ci/run in a fresh git repo holding `readme`; return (process, logged calls)."
    repo, bin_dir, calls = tmp_path/'repo', tmp_path/'bin', tmp_path/'calls.log'
    (repo/'.ci').mkdir(parents=True); bin_dir.mkdir()
    (repo/'.ci'/'run').write_bytes((ROOT/'.ci'/'run').read_bytes())
    (repo/'README.md').write_text(readme)
    (repo/'.gitignore').write_bytes((ROOT/'.gitignore').read_bytes())
    (repo/'tracked.txt').write_text('a tracked file\n')
    for name, body in STAND_INS.items():
        p = bin_dir/name
        p.write_text('#!/usr/bin/env bash\n' + body + '\n')
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    git_env = dict(GIT_AUTHOR_NAME='t', GIT_AUTHOR_EMAIL='t@t', GIT_COMMITTER_NAME='t', GIT_COMMITTER_EMAIL='t@t')
    for cmd in (['git', 'init', '-q'], ['git', 'add', '-A'], ['git', 'commit', '-qm', 'fixture']):
        subprocess.run(cmd, cwd=repo, check=True, env={**os.environ, **git_env})
    full_env = {k: v for k, v in os.environ.items() if k not in ('VIRTUAL_ENV', 'CXRLAB_KEEP_VENV', 'OMP_NUM_THREADS')}
    full_env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", CALLS=str(calls), **git_env, **env)
    proc = subprocess.run(['bash', str(repo/'.ci'/'run')], cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=120)
    return proc, ([line.rstrip() for line in calls.read_text().splitlines()] if calls.exists() else [])


def test_readme_matches_index():
    assert (ROOT / "README.md").read_text() == readme_text(ROOT / "nbs" / "index.ipynb"), \
        "README.md is out of sync with nbs/index.ipynb: run `cxrlab readme`"


def test_ci_runs_the_readme_test_command(tmp_path):
    readme = (ROOT/'README.md').read_text()
    test_cmd = block_after(readme, 'test-command')
    install = test_cmd.split('&& OMP_NUM_THREADS=1 nbdev_test')[0]
    assert install != test_cmd, "the README test command must run nbdev_test after its install part"
    proc, calls = run_ci(tmp_path, readme)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"README test command: {test_cmd}" in proc.stdout
    expected = (logged_calls(install) + ['pip check', 'activate', 'nbdev_export', 'nbdev_clean', 'deactivate']
                + logged_calls(test_cmd))
    assert calls == expected, f"\nran:      {calls}\nexpected: {expected}"


def test_ci_runs_whatever_the_readme_says(tmp_path):
    "A different test command in the README is what .ci/run runs: the command is read, not hard-coded."
    readme = (ROOT/'README.md').read_text()
    old = block_after(readme, 'test-command')
    new = old.replace('pytest -q tests', 'pytest -q tests -k smoke -x')
    proc, calls = run_ci(tmp_path, readme.replace(old, new))
    assert proc.returncode == 0, proc.stderr
    assert calls[-1] == 'pytest -q tests -k smoke -x OMP_NUM_THREADS=1'


@pytest.mark.parametrize('marker', ['test-command', 'main-command'])
def test_ci_fails_without_a_readme_command(marker, tmp_path):
    readme = (ROOT/'README.md').read_text().replace(f'<!-- {marker} -->', '<!-- removed -->')
    proc, calls = run_ci(tmp_path, readme)
    assert proc.returncode == 2 and f"README.md has no {marker.split('-')[0]} command block" in proc.stderr
    assert calls == []


def test_ci_fails_when_export_changes_the_tree(tmp_path):
    proc, calls = run_ci(tmp_path, (ROOT/'README.md').read_text(), DIRTY_EXPORT='1')
    assert proc.returncode == 1 and 'changed the tree' in proc.stderr and 'tracked.txt' in proc.stderr
    assert not any(c.startswith(('nbdev_test', 'pytest')) for c in calls)  # no test ran on an out-of-sync tree


def test_quickstart_has_exactly_two_commands():
    quick = (ROOT / "README.md").read_text().split("## Quickstart")[1].split("\n## ")[0]
    assert quick.count("```bash") == 2
