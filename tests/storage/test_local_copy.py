"""`storage.local_copy`, the local copy of a `gs://` directory that tokenizer and Hugging Face
libraries read, against the emulator: removed when its process exits (and nothing else is), made
again when the directory changes, and never named in an error in place of the `gs://` path."""

import json
import os
import subprocess
import sys

import pytest

from flaxlm import cli, storage
from flaxlm.errors import STAND_INS, FlaxlmError
from tests.conftest import REPO
from tests.storage.conftest import BUCKET

# The process downloads two directories, removes one itself, forks a child that exits through
# the interpreter (so it runs the exit handlers it inherited), then exits.
_DOWNLOADER = """
import os, shutil, sys
from flaxlm import storage
kept, gone = storage.local_copy(sys.argv[1]), storage.local_copy(sys.argv[2])
shutil.rmtree(gone)
if os.fork() == 0:
    sys.exit(0)
os.wait()
print(kept, os.path.isdir(kept))
"""


def test_downloads_are_removed_when_their_process_exits(gcs_emulator, tmp_path):
    for name in ("a", "b"):
        storage.write_text(f"gs://{BUCKET}/exit/{name}/x.txt", name)
    tmp = tmp_path / "tmp"
    bystander = tmp / "flaxlm-download-of-another-process"  # same name pattern, not ours
    bystander.mkdir(parents=True)
    (bystander / "x.txt").write_text("x")
    env = dict(os.environ, TMPDIR=str(tmp),
               PYTHONPATH=os.pathsep.join([REPO, *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run(
        [sys.executable, "-c", _DOWNLOADER, f"gs://{BUCKET}/exit/a", f"gs://{BUCKET}/exit/b"],
        env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kept, existed_after_child = proc.stdout.split()
    assert kept.startswith(os.path.realpath(tmp)) and existed_after_child == "True"
    assert os.listdir(tmp) == [bystander.name] and (bystander / "x.txt").read_text() == "x"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_a_changed_directory_is_downloaded_again(gcs_emulator):
    root = f"gs://{BUCKET}/changes/tok"
    storage.write_text(f"{root}/vocab.txt", "a")

    def read(local, name="vocab.txt"):
        with open(os.path.join(local, name), encoding="utf-8") as f:
            return f.read()

    first = storage.local_copy(root)
    assert read(first) == "a"
    assert storage.local_copy(root + "/") == first  # unchanged: no second download
    storage.write_text(f"{root}/vocab.txt", "b")  # rewritten in place, same size
    second = storage.local_copy(root)
    assert read(second) == "b" and read(first) == "a"  # the earlier copy stays for its holders
    storage.write_text(f"{root}/vocab.txt", "b")  # the same bytes again: the copy still holds
    assert storage.local_copy(root) == second
    storage.write_text(f"{root}/sub/added.json", "{}")
    assert read(storage.local_copy(root), "sub/added.json") == "{}"
    storage.remove(f"{root}/sub/added.json")
    assert not os.path.exists(os.path.join(storage.local_copy(root), "sub"))
    with pytest.raises(FlaxlmError, match=f"gs://{BUCKET}/changes/none: no such directory"):
        storage.local_copy(f"gs://{BUCKET}/changes/none")


def test_a_directory_rewritten_during_its_download_is_downloaded_again(gcs_emulator, monkeypatch):
    root = f"gs://{BUCKET}/racing/tok"
    storage.write_text(f"{root}/vocab.txt", "old")
    storage.write_text(f"{root}/meta.json", "1")
    download, made = storage._download, []

    def download_while_a_writer_rewrites(remote, listing):
        made.append(download(remote, listing))
        if len(made) == 1:
            storage.write_text(f"{root}/vocab.txt", "new")
        return made[-1]

    monkeypatch.setattr(storage, "_download", download_while_a_writer_rewrites)
    local = storage.local_copy(root)
    assert made == [made[0], local] and not os.path.exists(made[0])
    with open(os.path.join(local, "vocab.txt"), encoding="utf-8") as f:
        assert f.read() == "new"


def test_an_object_name_that_leaves_the_directory_is_refused(gcs_emulator, tmp_path, monkeypatch):
    """Object names are any strings; an untrusted HF directory may hold `a/../../x`."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "a"))  # where `../..` would land
    (tmp_path / "a").mkdir()
    root = f"gs://{BUCKET}/escape/dir"
    storage.write_text(f"{root}/config.json", "{}")
    storage.write_text(f"{root}/../../escaped.txt", "x")
    with pytest.raises(FlaxlmError, match=f"{root}/../../escaped.txt: an object name that is not"):
        storage.local_copy(root)
    with pytest.raises(FlaxlmError, match=f"{root}/..: not a plain file or directory name"):
        storage.copy_tree(root, str(tmp_path / "a" / "copy"))
    assert not [files for _, _, files in os.walk(tmp_path) if "escaped.txt" in files]


def test_messages_name_the_remote_path_not_its_download():
    STAND_INS["/tmp/flaxlm-download-ab12"] = "gs://b/model/"
    try:
        message = str(
            FlaxlmError("/tmp/flaxlm-download-ab12/config.json: bad; "
                        "'/tmp/flaxlm-download-ab12' and /tmp/flaxlm-download-ab123"))
    finally:
        del STAND_INS["/tmp/flaxlm-download-ab12"]
    assert message == ("gs://b/model/config.json: bad; 'gs://b/model' and "
                       "/tmp/flaxlm-download-ab123")


def _write_hf_dir(remote: str) -> None:
    storage.write_text(f"{remote}/config.json", '{"model_type": "xlm-roberta", ')  # cut short
    storage.write_bytes(f"{remote}/model.safetensors", b"\0" * 8)


@pytest.mark.parametrize("argv", [
    ["import", "--hf", "{hf}", "--out", "{out}"],
    ["fill-mask", "--model", "{hf}", "Roma è la <mask> d'Italia."],
    ["zero-shot", "--model", "{hf}", "--labels", "a,b", "x"],
])
def test_commands_name_the_gs_path_of_a_damaged_hf_dir(gcs_emulator, tmp_path, capsys, argv):
    hf = f"gs://{BUCKET}/damaged/{argv[0]}"
    _write_hf_dir(hf)
    argv = [a.format(hf=hf, out=tmp_path / "out") for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{hf}/config.json: not valid JSON" in err and "flaxlm-download" not in err, err


def test_tokenizer_errors_name_the_gs_path(gcs_emulator):
    from flaxlm.data.tokenizers import load_tokenizer
    root = f"gs://{BUCKET}/damaged/tokenizer"
    storage.write_text(f"{root}/flaxlm_tokenizer.json", json.dumps({"kind": "wordpiece"}))
    with pytest.raises(FlaxlmError) as missing:
        load_tokenizer(root)
    assert str(missing.value).startswith(f"{root}: holds neither vocab.txt nor tokenizer.json")
    storage.write_text(f"{root}/flaxlm_tokenizer.json", json.dumps({"kind": "sentencepiece"}))
    storage.write_bytes(f"{root}/sentencepiece.bpe.model", b"not a model")
    with pytest.raises(FlaxlmError) as damaged:
        load_tokenizer(root)
    assert str(damaged.value).startswith(f"{root}/sentencepiece.bpe.model cannot be read")


def test_prepared_shards_record_a_gs_tokenizer_by_its_gs_path(gcs_emulator, tiny_tokenizer_dir,
                                                              tmp_path):
    """Not by its download, which is gone once `flaxlm prepare` exits."""
    from flaxlm.data.prepare import prepare_shards
    from flaxlm.data.tokenizers import load_tokenizer
    tokenizer = f"gs://{BUCKET}/prepared/tokenizer"
    storage.copy_tree(tiny_tokenizer_dir, tokenizer)
    text = tmp_path / "text.txt"
    text.write_text("Roma è la capitale d'Italia.\n", encoding="utf-8")
    meta = prepare_shards([str(text)], load_tokenizer(tokenizer), str(tmp_path / "shards"),
                          seq_len=16, num_shards=1)
    assert meta["tokenizer"] == tokenizer
