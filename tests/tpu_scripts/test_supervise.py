"""tpu_scripts/supervise.sh without a TPU: its dry run, and its loop against a fake `gcloud`
that plays a scripted sequence of slice states and run statuses (a preemption case and a
retry-limit case). The status check it sends to worker 0 is run for real in a sandbox $HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.tpu_scripts.test_dry_run import (LOC, NAME, PROJECT, REPO, SCRIPTS_DIR, ZONE,
                                            remote_command)

TARGET = ["--name", NAME, "--zone", ZONE, "--project", PROJECT]
URL = "git+https://github.com/example/flaxlm.git@v0.1.0"
RUN = [
    "--accelerator", "v5litepod-16", "--spot", "--source", URL, "--config",
    str(REPO / "configs" / "tiny.py"), "--workdir", "gs://my-bucket/runs/tiny",
    "--config.train.steps=100"
]
DESCRIBE = f"gcloud compute tpus tpu-vm describe {NAME} {LOC} --format=value\\(state\\)"
STATUS_PREFIX = f"gcloud compute tpus tpu-vm ssh {NAME} {LOC} --worker=0 --command="


def _fake_gcloud(tmp_path, states, statuses):
    """A `gcloud` that logs its argv and answers `describe` and the worker-0 status check with
    the next scripted value."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"describe": states, "status": statuses}))
    log = tmp_path / "calls.jsonl"
    (bindir / "gcloud").write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"log, script = {str(log)!r}, {str(script)!r}\n"
        "args = sys.argv[1:]\n"
        "open(log, 'a').write(json.dumps(args) + '\\n')\n"
        "kind = 'describe' if 'describe' in args else 'status' if '--worker=0' in args else None\n"
        "if kind:\n"
        "    plan = json.load(open(script))\n"
        "    print(plan[kind].pop(0))\n"
        "    json.dump(plan, open(script, 'w'))\n")
    (bindir / "gcloud").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TPU_", "FLAXLM_"))}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return env, calls


def _supervise(env, *args):
    return subprocess.run([str(SCRIPTS_DIR / "supervise.sh"), *TARGET, *RUN, *args], env=env,
                          capture_output=True, text=True, timeout=60)


def _kinds(calls):
    """Each gcloud call as create / delete / describe / status / scp / ssh-all."""
    kinds = []
    for c in calls:
        kinds.append("create" if "create" in c else "delete" if "delete" in
                     c else "describe" if "describe" in c else "status" if "--worker=0" in
                     c else "scp" if "scp" in c else "ssh-all")
    return kinds


def test_dry_run_prints_one_round_and_the_status_check_reads_the_log(tmp_path):
    env, calls = _fake_gcloud(tmp_path, [], [])
    proc = _supervise(env, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (f"gcloud compute tpus tpu-vm create {NAME} {LOC} "
                        "--accelerator-type=v5litepod-16 --version=v2-alpha-tpuv5-lite --spot")
    assert [line.split()[4] for line in lines[1:4]] == ["ssh", "scp", "ssh"]  # install, train
    assert "--config.train.steps=100" in lines[3] and "gs://my-bucket/runs/tiny" in lines[3]
    assert lines[4] == DESCRIBE
    assert lines[5].startswith(STATUS_PREFIX) and len(lines) == 6
    assert calls() == []

    home = tmp_path / "home"
    (home / "flaxlm" / "logs").mkdir(parents=True)
    log = home / "flaxlm" / "logs" / "train.log"
    status = remote_command(lines[5])

    def check(text):
        log.write_text(text)
        return subprocess.run(["bash", "-c", status], cwd=home, env={
            "HOME": str(home),
            "PATH": "/usr/bin:/bin"
        }, capture_output=True, text=True, timeout=30).stdout.strip()

    started = "=== flaxlm train started 2026-01-01T00:00:00Z ===\n"
    sigterm = "flaxlm: received SIGTERM; checkpoint saved at step 7\nflaxlm: done step=7\n"
    assert check(started + sigterm) == "sigterm"
    assert check(started + sigterm + started + "flaxlm: done step=100\n") == "finished"
    assert check(started + sigterm + started + "Traceback ...\n") == "failed"


def test_preemptions_recreate_the_slice_and_relaunch_until_finished(tmp_path):
    env, calls = _fake_gcloud(
        tmp_path, ["", "READY", "READY", "READY", "PREEMPTED", "CREATING", "READY", "READY"],
        ["running", "sigterm", "finished"])
    log = tmp_path / "preemptions.log"
    proc = _supervise(env, "--poll", "0", "--max-preemptions", "2", "--log", str(log))
    assert proc.returncode == 0, proc.stderr
    launch = ["create", "describe", "ssh-all", "scp", "ssh-all"]
    assert _kinds(calls()) == [
        "describe",
        *launch,
        "describe",
        "status",
        "describe",
        "status",
        "scp",
        "ssh-all",  # stopped by SIGTERM: training again
        "describe",
        "delete",
        "create",
        "describe",
        "describe",
        "ssh-all",
        "scp",
        "ssh-all",
        "describe",
        "status"
    ]
    lines = log.read_text().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith(f"supervise.sh: preemption 1/2 of {NAME} (state READY, training "
                             "stopped by SIGTERM); starting training again")
    assert lines[1].endswith(f"supervise.sh: preemption 2/2 of {NAME} (state PREEMPTED); "
                             "re-creating it and resuming from gs://my-bucket/runs/tiny")
    assert "finished" in lines[2]
    # Every launch starts the same command on the same workdir.
    trains = [c for c in calls() if "--worker=all" in c and any("nohup" in a for a in c)]
    assert len(trains) == 3 and trains[0] == trains[1] == trains[2]


def test_gives_up_after_the_retry_limit(tmp_path):
    env, calls = _fake_gcloud(tmp_path, ["", "ACTIVE", "SUSPENDED", ""], [])
    proc = _supervise(env, "--poll", "0", "--max-preemptions", "1", "--queued")
    assert proc.returncode == 1
    assert _kinds(calls()).count("create") == 2  # the first launch and one restart
    assert "preemption 1/1 of my-tpu (state SUSPENDED)" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.endswith("giving up: preemption 2 of my-tpu (state gone while starting) exceeds "
                         "--max-preemptions 1; checkpoints stay in gs://my-bucket/runs/tiny, "
                         "rerun this command to go on")
    assert ["compute", "tpus", "queued-resources", "describe"] == calls()[-1][:4]
