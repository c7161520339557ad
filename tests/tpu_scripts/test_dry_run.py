"""Tests for tpu_scripts/*.sh without a TPU or a Google Cloud account.

* `--dry-run` prints exactly the gcloud commands a script would run, one per line; the lines
  are asserted verbatim, and parsed back with bash (as a user pasting them would) to check the
  quoting.
* A fake `gcloud` first on PATH records every call: dry runs and refused commands must never
  call it, real runs must call it with exactly the argv the dry run printed.
* The commands sent to the workers (install, train, stop) are executed locally in a sandbox
  $HOME with a fake interpreter / fake `flaxlm`, so the quoting of overrides, the nohup/pid
  handling and stop are exercised for real.
* `shellcheck` must be clean.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = REPO / "tpu_scripts"
SCRIPTS = ["create.sh", "install.sh", "train.sh", "logs.sh", "stop.sh", "delete.sh", "supervise.sh"]

NAME, ZONE, PROJECT = "my-tpu", "us-central2-b", "my-proj"
TARGET = ["--name", NAME, "--zone", ZONE, "--project", PROJECT]
LOC = f"--zone={ZONE} --project={PROJECT}"
SSH_ALL = f"gcloud compute tpus tpu-vm ssh {NAME} {LOC} --worker=all --command="


@pytest.fixture
def fake_gcloud(tmp_path):
    """A `gcloud` on PATH that appends its argv (JSON) to a file; returns (env, calls())."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    log = tmp_path / "gcloud_calls.jsonl"
    gcloud = bindir / "gcloud"
    gcloud.write_text(f"#!{sys.executable}\n"
                      "import json, sys\n"
                      f"with open({str(log)!r}, 'a') as f:\n"
                      "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n")
    gcloud.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TPU_", "FLAXLM_"))}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["TMPDIR"] = str(tmp_path)

    def calls() -> list[list[str]]:
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    return env, calls


def run(script: str, *args: str, env: dict, expect_rc: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(SCRIPTS_DIR / script), *args], env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == expect_rc, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def dry(script: str, *args: str, env: dict) -> list[str]:
    """Dry-run lines (stdout), after checking that gcloud was not called."""
    proc = run(script, "--dry-run", *args, env=env)  # first: args may end with "-- ..."
    return proc.stdout.splitlines()


def bash_words(line: str) -> list[str]:
    """Split a printed command line exactly as bash would when it is pasted."""
    out = subprocess.run(
        ["bash", "-c", 'eval "set -- $1"; printf "%s\\0" "$@"', "_", line],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    return out.split("\0")[:-1]


def remote_command(line: str) -> str:
    words = bash_words(line)
    (cmd, ) = [w for w in words if w.startswith("--command=")]
    return cmd[len("--command="):]


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(proc.args[0].rsplit("/", 1)[-1] + ": error: "), lines[0]
    for needle in needles:
        assert needle in lines[0]


# --------------------------------------------------------------------------------------------
# create.sh


@pytest.mark.parametrize(
    "accelerator,version",
    [
        ("v4-8", "tpu-ubuntu2204-base"),
        ("v4-32", "tpu-ubuntu2204-base"),
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v5p-8", "v2-alpha-tpuv5"),
        ("v6e-8", "v2-alpha-tpuv6e"),
    ],
)
def test_create_picks_runtime_version_per_generation(fake_gcloud, accelerator, version):
    env, calls = fake_gcloud
    lines = dry("create.sh", *TARGET, "--accelerator", accelerator, env=env)
    assert lines == [
        f"gcloud compute tpus tpu-vm create {NAME} {LOC} "
        f"--accelerator-type={accelerator} --version={version}"
    ]
    assert calls() == []


def test_create_queued_spot_with_passthrough(fake_gcloud):
    env, calls = fake_gcloud
    lines = dry(
        "create.sh",
        *TARGET,
        "--accelerator=v5litepod-16",
        "--queued",
        "--spot",
        "--",
        "--network=my net",
        env=env,
    )
    assert lines == [
        f"gcloud compute tpus queued-resources create {NAME} {LOC} --node-id={NAME} "
        "--accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite --spot "
        "--network=my\\ net"
    ]
    assert bash_words(lines[0])[-1] == "--network=my net"
    assert calls() == []


def test_create_from_environment_and_runtime_override(fake_gcloud):
    env, _ = fake_gcloud
    env = {**env, "TPU_NAME": "env-tpu", "TPU_ZONE": "europe-west4-a", "TPU_ACCELERATOR": "v4-8"}
    # No project: gcloud's configured default is used, so no --project flag.
    assert dry("create.sh", env=env) == [
        "gcloud compute tpus tpu-vm create env-tpu --zone=europe-west4-a "
        "--accelerator-type=v4-8 --version=tpu-ubuntu2204-base"
    ]
    # Flags win over the environment.
    assert dry("create.sh", "--name", "flag-tpu", "--runtime-version", "v2-alpha-tpuv6e",
               "--accelerator", "v6e-16", env=env) == [
                   "gcloud compute tpus tpu-vm create flag-tpu --zone=europe-west4-a "
                   "--accelerator-type=v6e-16 --version=v2-alpha-tpuv6e"
               ]


def test_create_rejects_unknown_accelerator(fake_gcloud):
    env, calls = fake_gcloud
    proc = run("create.sh", *TARGET, "--accelerator", "v9x-8", "--dry-run", env=env, expect_rc=2)
    assert_one_line_error(proc, "v9x-8")
    assert calls() == []


# --------------------------------------------------------------------------------------------
# Shared behaviour

MISSING = [
    ("create.sh", ["--zone", ZONE, "--accelerator", "v4-8"], "--name"),
    ("create.sh", ["--name", NAME, "--accelerator", "v4-8"], "--zone"),
    ("create.sh", ["--name", NAME, "--zone", ZONE], "--accelerator"),
    ("install.sh", ["--zone", ZONE], "--name"),
    ("train.sh", ["--name", NAME, "--zone", ZONE, "--workdir", "gs://b/x"], "--config"),
    ("train.sh", ["--name", NAME, "--zone", ZONE, "--config", "c.py"], "--workdir"),
    ("logs.sh", ["--name", NAME], "--zone"),
    ("stop.sh", ["--zone", ZONE], "--name"),
    ("delete.sh", ["--zone", ZONE, "--yes"], "--name"),
]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
@pytest.mark.parametrize("script,args,flag", MISSING)
def test_missing_required_flag_is_one_line_error(fake_gcloud, script, args, flag, dry_run):
    env, calls = fake_gcloud
    args = [*args, "--dry-run"] if dry_run else args
    proc = run(script, *args, env=env, expect_rc=2)
    assert_one_line_error(proc, f"missing {flag}")
    assert calls() == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_and_unknown_flag(fake_gcloud, script):
    env, calls = fake_gcloud
    proc = run(script, "--help", env=env)
    assert proc.stdout.startswith("Usage: " + script)
    assert "--dry-run" in proc.stdout and "--name" in proc.stdout
    assert_one_line_error(run(script, *TARGET, "--bogus", env=env, expect_rc=2), "--bogus")
    assert_one_line_error(run(script, "--name", "Bad_Name", "--zone", ZONE, env=env, expect_rc=2),
                          "invalid --name")
    assert_one_line_error(
        run(script, "--name", NAME, "--zone", "us-central2-b;id", env=env, expect_rc=2),
        "invalid --zone")
    assert calls() == []


@pytest.mark.parametrize(
    "script,args",
    [
        ("create.sh", ["--accelerator", "v4-8", "--queued"]),
        ("logs.sh", ["--worker", "1", "--no-follow"]),
        ("stop.sh", []),
        ("stop.sh", ["--vm"]),
        ("delete.sh", ["--yes", "--queued"]),
        ("train.sh", ["--workdir", "gs://b/r", "--config.a=x y"]),
    ],
)
def test_real_run_calls_gcloud_exactly_as_printed(fake_gcloud, tmp_path, script, args):
    env, calls = fake_gcloud
    if script == "train.sh":
        config = tmp_path / "base.py"
        config.write_text("def get_config():\n    return None\n")
        args = ["--config", str(config), *args]
    printed = [bash_words(line) for line in dry(script, *TARGET, *args, env=env)]
    assert calls() == []
    proc = run(script, *TARGET, *args, env=env)
    assert [["gcloud", *argv] for argv in calls()] == printed
    # Without --dry-run each command is echoed to stderr with "+ ", and nothing to stdout.
    assert proc.stdout == ""
    assert [l for l in proc.stderr.splitlines() if l.startswith("+ gcloud ")
            ] == ["+ " + line for line in dry(script, *TARGET, *args, env=env)]


# --------------------------------------------------------------------------------------------
# install.sh


def make_source(root: Path) -> Path:
    src = root / "src"
    for rel, text in {
            "setup.py": "from setuptools import setup\nsetup()\n",
            "setup.cfg": "[options]\ninstall_requires =\n    jax==0.10.2\n    torch==9.9.9\n",
            "flaxlm/__init__.py": "",
            "flaxlm/dist/keep.py": "",  # only top-level dist/ build/ are excluded
            "configs/base.py": "",
            ".git/config": "[remote]\nurl = https://user:TOKEN@example.com/x\n",
            ".venv/bin/python": "",
            "runs/demo/ckpt": "",
            "dist/flaxlm.whl": "",
            "flaxlm/__pycache__/x.pyc": "",
            ".env": "HF_TOKEN=secret\n",
            "sa-key.pem": "",
    }.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return src


def fake_python(bindir: Path, calls_log: Path) -> None:
    """`python3.11` whose `-m venv DIR` makes DIR/bin/python, a recorder of its argv."""
    bindir.mkdir(exist_ok=True)
    recorder = (f"#!{sys.executable}\nimport json, sys\n"
                f"open({str(calls_log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    py = bindir / "python3.11"
    py.write_text(f"#!{sys.executable}\nimport os, sys\n"
                  "assert sys.argv[1:3] == ['-m', 'venv'], sys.argv\n"
                  "venv = sys.argv[-1]\n"
                  "os.makedirs(os.path.join(venv, 'bin'), exist_ok=True)\n"
                  "p = os.path.join(venv, 'bin', 'python')\n"
                  f"open(p, 'w').write({recorder!r})\n"
                  "os.chmod(p, 0o755)\n")
    py.chmod(0o755)


def test_install_local_source(fake_gcloud, tmp_path):
    env, calls = fake_gcloud
    src = make_source(tmp_path)
    tar_line, scp_line, ssh_line = dry("install.sh", *TARGET, "--source", str(src), env=env)

    tar = bash_words(tar_line)
    assert tar[:4] == ["env", "COPYFILE_DISABLE=1", "tar", "-czf"]
    archive = tar[4]
    assert re.fullmatch(
        re.escape(str(tmp_path)) + r"/flaxlm-install\.\w+/flaxlm-src\.tar\.gz", archive)
    assert tar[-3:] == ["-C", str(src), "."]
    assert bash_words(scp_line) == [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "scp",
        archive,
        f"{NAME}:flaxlm-src.tar.gz",
        f"--zone={ZONE}",
        f"--project={PROJECT}",
        "--worker=all",
    ]
    assert scp_line == (f"gcloud compute tpus tpu-vm scp {archive} {NAME}:flaxlm-src.tar.gz "
                        f"{LOC} --worker=all")
    assert ssh_line.startswith(SSH_ALL)
    assert not Path(archive).parent.exists(), "dry run must clean up its temporary directory"
    assert calls() == []

    # Simulate the scp into a sandbox $HOME (run the printed tar writing there instead) ...
    home = tmp_path / "home"
    home.mkdir()
    tar[4] = str(home / "flaxlm-src.tar.gz")
    subprocess.run(tar, check=True, timeout=30)
    with tarfile.open(tar[4]) as tf:
        members = {m.removeprefix("./") for m in tf.getnames()}
    assert {"setup.py", "setup.cfg", "flaxlm/dist/keep.py", "configs/base.py"} <= members
    leaked = {
        m
        for m in members
        if m.split("/")[0] in {".git", ".venv", "runs", "dist", ".env", "sa-key.pem"}
        or "__pycache__" in m
    }
    assert not leaked

    # ... and run the worker's command there with a fake python3.11.
    pip_log = tmp_path / "pip_calls.jsonl"
    fake_python(tmp_path / "workerbin", pip_log)
    worker_env = {"HOME": str(home), "PATH": f"{tmp_path / 'workerbin'}:/usr/bin:/bin"}
    subprocess.run(["bash", "-c", remote_command(ssh_line)], cwd=home, env=worker_env, check=True,
                   timeout=30)
    pip_calls = [json.loads(l) for l in pip_log.read_text().splitlines()]
    assert pip_calls[:4] == [
        ["-m", "pip", "install", "-q", "--upgrade", "pip"],
        [
            "-m", "pip", "install", "-q", "--index-url", "https://download.pytorch.org/whl/cpu",
            "torch==9.9.9"
        ],
        ["-m", "pip", "uninstall", "-qq", "-y", "flaxlm"],
        ["-m", "pip", "install", "-q", f"flaxlm[tpu] @ file://{home}/flaxlm/src"],
    ]
    assert pip_calls[4][0] == "-c"
    assert (home / "flaxlm/src/setup.py").is_file()
    assert (home / "flaxlm/configs").is_dir() and (home / "flaxlm/logs").is_dir()
    assert not (home / "flaxlm-src.tar.gz").exists()


def test_install_git_url_source(fake_gcloud, tmp_path):
    env, calls = fake_gcloud
    url = "git+https://github.com/example/flaxlm.git@v0.1.0"
    (ssh_line, ) = dry("install.sh", *TARGET, "--source", url, "--python", "python3.11", env=env)
    assert ssh_line.startswith(SSH_ALL)
    assert "flaxlm\\\\\\[tpu\\\\\\]\\\\\\ @\\\\\\ " + url in ssh_line  # %q inside %q

    home = tmp_path / "home"
    home.mkdir()
    pip_log = tmp_path / "pip_calls.jsonl"
    fake_python(tmp_path / "workerbin", pip_log)
    worker_env = {"HOME": str(home), "PATH": f"{tmp_path / 'workerbin'}:/usr/bin:/bin"}
    subprocess.run(["bash", "-c", remote_command(ssh_line)], cwd=home, env=worker_env, check=True,
                   timeout=30)
    pip_calls = [json.loads(l) for l in pip_log.read_text().splitlines()]
    # No torch pin known for a URL: straight to the install.
    assert pip_calls[2] == ["-m", "pip", "install", "-q", f"flaxlm[tpu] @ {url}"]
    assert calls() == []


@pytest.mark.parametrize(
    "url",
    [
        "git+https://x-access-token:ghp_SECRETVALUE@github.com/o/flaxlm.git",
        "https://ghp_SECRETVALUE@github.com/o/flaxlm/archive/main.zip",
        "git+ssh://git:SECRETVALUE@github.com/o/flaxlm.git",
        "https://storage.googleapis.com/b/flaxlm.tar.gz?X-Goog-Signature=SECRETVALUE",
    ],
)
def test_install_refuses_credentials_in_url_without_echoing_them(fake_gcloud, url):
    env, calls = fake_gcloud
    for extra in (["--dry-run"], []):
        proc = run("install.sh", *TARGET, "--source", url, *extra, env=env, expect_rc=2)
        assert_one_line_error(proc, "refusing --source")
        assert "SECRETVALUE" not in proc.stderr + proc.stdout
    assert calls() == []


# --------------------------------------------------------------------------------------------
# train.sh, stop.sh, logs.sh

FAKE_FLAXLM = """#!/bin/sh
trap 'echo "got SIGTERM"; exit 143' TERM
python3=__PY__
# Written aside and renamed: the test polls for argv.json and must never read it half-written.
"$python3" -c 'import json, os, sys; p = os.path.expanduser("~/argv.json"); f = open(p + ".tmp", "w"); json.dump({"argv": sys.argv[1:], "libtpu": os.environ.get("LIBTPU_INIT_ARGS")}, f); f.close(); os.replace(p + ".tmp", p)' "$@"
echo "training step 1"
sleep 30 &
wait
"""


def test_train_quotes_overrides_and_runs_under_nohup(fake_gcloud, tmp_path):
    env, calls = fake_gcloud
    config = tmp_path / "my config.py"
    config.write_text("def get_config():\n    return None\n")
    args = [
        *TARGET,
        "--config",
        f"{config}:small",
        "--workdir",
        "gs://my-bucket/runs/a b",
        "--config.model.name=base model",
        "--config.optimizer.lr",
        "1e-3",
        "--config.flag",
        "--env",
        "LIBTPU_INIT_ARGS=--xla_a=1 --xla_b=2",
        "--",
        "--config.data.glob=gs://d/*.tfrecord",
    ]
    scp_line, ssh_line = dry("train.sh", *args, env=env)
    assert scp_line == (f"gcloud compute tpus tpu-vm scp {tmp_path}/my\\ config.py "
                        f"{NAME}:flaxlm/configs/my\\ config.py {LOC} --worker=all")
    assert ssh_line.startswith(SSH_ALL)
    # The override with a space, quoted for the worker's shell and again for the local one.
    assert "--config.model.name=base\\\\\\ model" in ssh_line
    assert calls() == []

    # Run the worker command in a sandbox $HOME with a fake flaxlm.
    home = tmp_path / "home"
    (home / "flaxlm/venv/bin").mkdir(parents=True)
    fake = home / "flaxlm/venv/bin/flaxlm"
    fake.write_text(FAKE_FLAXLM.replace("__PY__", sys.executable))
    fake.chmod(0o755)
    worker_env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    remote = remote_command(ssh_line)
    pid_file = home / "flaxlm/train.pid"
    try:
        started = subprocess.run(["bash", "-c", remote], cwd=home, env=worker_env,
                                 capture_output=True, text=True, timeout=15)
        assert started.returncode == 0, started.stderr
        assert "flaxlm train started on" in started.stdout
        deadline = time.time() + 60  # a loaded CI machine starts Python slowly
        while not (home / "argv.json").exists() and time.time() < deadline:
            time.sleep(0.05)
        got = json.loads((home / "argv.json").read_text())
        assert got["argv"] == [
            "train",
            "--config",
            "flaxlm/configs/my config.py:small",
            "--workdir",
            "gs://my-bucket/runs/a b",
            "--config.model.name=base model",
            "--config.optimizer.lr=1e-3",
            "--config.flag",
            "--config.data.glob=gs://d/*.tfrecord",
        ]
        assert got["libtpu"] == "--xla_a=1 --xla_b=2"
        pid = int(pid_file.read_text())
        assert os.getpgid(pid) == pid, "setsid: the run leads its own process group"

        # A second start on the same worker is refused while the first is alive.
        again = subprocess.run(["bash", "-c", remote], cwd=home, env=worker_env,
                               capture_output=True, text=True, timeout=15)
        assert again.returncode == 1 and "already running" in again.stderr

        (stop_line, ) = dry("stop.sh", *TARGET, "--grace", "5", env=env)
        assert stop_line.startswith(SSH_ALL)
        t0 = time.time()
        stopped = subprocess.run(["bash", "-c", remote_command(stop_line)], cwd=home,
                                 env=worker_env, capture_output=True, text=True, timeout=15)
        assert stopped.returncode == 0, stopped.stderr
        assert f"(pid {pid}) stopped" in stopped.stdout
        assert time.time() - t0 < 5, "SIGTERM should have been enough"
        assert not pid_file.exists()
        log = (home / "flaxlm/logs/train.log").read_text()
        assert "=== flaxlm train started" in log and "training step 1" in log
        assert "got SIGTERM" in log

        # Stopping again is a no-op.
        noop = subprocess.run(["bash", "-c", remote_command(stop_line)], cwd=home, env=worker_env,
                              capture_output=True, text=True, timeout=15)
        assert noop.returncode == 0 and "no flaxlm training started" in noop.stdout
    finally:
        if pid_file.exists():  # only the process group this test started
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def test_stop_ignores_stale_pid_of_other_process(fake_gcloud, tmp_path):
    env, _ = fake_gcloud
    home = tmp_path / "home"
    (home / "flaxlm").mkdir(parents=True)
    # A live process that is not flaxlm (a reused pid): it must not be signalled.
    other = subprocess.Popen(["sleep", "30"])
    try:
        (home / "flaxlm/train.pid").write_text(str(other.pid))
        (stop_line, ) = dry("stop.sh", *TARGET, env=env)
        proc = subprocess.run(["bash", "-c", remote_command(stop_line)], cwd=home, env={
            "HOME": str(home),
            "PATH": "/usr/bin:/bin"
        }, capture_output=True, text=True, timeout=15)
        assert proc.returncode == 0 and "was not running" in proc.stdout
        assert other.poll() is None, "an unrelated process was signalled"
    finally:
        other.kill()
        other.wait()


def test_train_validation(fake_gcloud, tmp_path):
    env, calls = fake_gcloud
    config = tmp_path / "base.py"
    config.write_text("")
    base = [*TARGET, "--config", str(config)]
    assert_one_line_error(run("train.sh", *base, "--workdir", "/tmp/run", env=env, expect_rc=2),
                          "gs://")
    assert_one_line_error(
        run("train.sh", *TARGET, "--config", str(tmp_path / "nope.py"), "--workdir", "gs://b/r",
            env=env, expect_rc=2), "not found")
    proc = run("train.sh", *base, "--workdir", "gs://b/r", "--env", "HF_TOKEN=hf_SECRETVALUE",
               "--dry-run", env=env, expect_rc=2)
    assert_one_line_error(proc, "HF_TOKEN")
    assert "SECRETVALUE" not in proc.stderr
    assert calls() == []


def test_train_remote_config(fake_gcloud):
    env, _ = fake_gcloud
    (ssh_line, ) = dry("train.sh", *TARGET, "--remote-config", "--config", "configs/base.py",
                       "--workdir=gs://b/r", env=env)
    assert "--config flaxlm/src/configs/base.py --workdir gs://b/r" in remote_command(ssh_line)


def test_logs(fake_gcloud):
    env, calls = fake_gcloud
    ssh = f"gcloud compute tpus tpu-vm ssh {NAME} {LOC}"
    assert dry("logs.sh", *TARGET, env=env) == [
        f"{ssh} --worker=0 --command=tail\\ -n\\ 100\\ -F\\ flaxlm/logs/train.log"
    ]
    assert dry("logs.sh", *TARGET, "--worker", "3", "--lines=20", "--no-follow",
               env=env) == [f"{ssh} --worker=3 --command=tail\\ -n\\ 20\\ flaxlm/logs/train.log"]
    assert_one_line_error(run("logs.sh", *TARGET, "--worker", "1;reboot", env=env, expect_rc=2),
                          "invalid --worker")
    assert calls() == []


def test_stop_vm(fake_gcloud):
    env, _ = fake_gcloud
    assert dry("stop.sh", *TARGET, "--vm",
               env=env) == [f"gcloud compute tpus tpu-vm stop {NAME} {LOC}"]


# --------------------------------------------------------------------------------------------
# delete.sh


def test_delete(fake_gcloud):
    env, calls = fake_gcloud
    assert dry("delete.sh", *TARGET, "--yes",
               env=env) == [f"gcloud compute tpus tpu-vm delete {NAME} {LOC} --quiet"]
    assert dry("delete.sh", *TARGET, "--yes", "--queued", env=env) == [
        f"gcloud compute tpus queued-resources delete {NAME} {LOC} --force --quiet"
    ]
    # A dry run without --yes still shows the command, and says it needs --yes.
    proc = run("delete.sh", *TARGET, "--dry-run", env=env)
    assert proc.stdout.splitlines() == [f"gcloud compute tpus tpu-vm delete {NAME} {LOC} --quiet"]
    assert "--yes" in proc.stderr
    # For real, without --yes: refused, gcloud never called.
    assert_one_line_error(run("delete.sh", *TARGET, env=env, expect_rc=2), "--yes")
    assert calls() == []


# --------------------------------------------------------------------------------------------
# Static checks


def test_scripts_are_strict_executable_and_credential_free():
    for script in ["common.sh", *SCRIPTS]:
        text = (SCRIPTS_DIR / script).read_text()
        assert "set -euo pipefail" in text, script
        for bad in ("print-access-token", "print-identity-token", "printenv", "set -x",
                    "auth login", "activate-service-account"):
            assert bad not in text, (script, bad)
        if script != "common.sh":
            assert os.access(SCRIPTS_DIR / script, os.X_OK), f"{script} is not executable"


def test_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    scripts = sorted(str(p) for p in SCRIPTS_DIR.glob("*.sh"))
    assert len(scripts) == 8
    # tpu_scripts/.shellcheckrc lets shellcheck follow `source common.sh` from any directory;
    # an unfollowed source would show up as an SC1091 note and fail this test.
    proc = subprocess.run([shellcheck, "--severity=style", *scripts], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
