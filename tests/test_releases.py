"""Weight releases: immutable files named by their hash, every release listed, older ones
restorable from git history, clear errors for releases that are missing or malformed."""
import json
import shutil
import subprocess

import pytest

from codec import zoo
from codec.cli import main
from codec.errors import NeurocodecError, WeightsError

from conftest import ROOT


def test_every_shipped_file_is_the_release_its_name_says():
    """A release file is never rewritten: its name carries its sha256, so a file changed in
    place no longer matches its name, and this fails."""
    manifest = json.loads((ROOT / "weights" / "manifest.json").read_text())
    files = sorted(p.name for p in (ROOT / "weights").glob("*.safetensors"))
    named = []
    for model, entry in manifest.items():
        assert entry["releases"][0]["sha256"] == entry["sha256"], "the entry describes the newest release"
        for r in entry["releases"]:
            assert r["release"] == f"{model}@{r['sha256'][:16]}"
            path = ROOT / "weights" / zoo.release_file(model, r["sha256"])
            if path.exists():
                assert zoo.file_sha256(path) == r["sha256"]
                named.append(path.name)
            else:
                assert "commit" in r and "path" in r, f"{r['release']} is neither installed nor in git history"
        assert entry["file"] in named, f"the newest release of {model} is not installed"
    assert sorted(named) == files, "a weights file that no release lists"


def test_release_names_resolve_and_bad_ones_are_refused():
    newest = zoo.manifest()["mlic-tiny-gaussian"]["sha256"]
    assert zoo.split_release("mlic-tiny-gaussian") == ("mlic-tiny-gaussian", None)
    assert zoo.find_release("mlic-tiny-gaussian")["sha256"] == newest
    assert zoo.find_release(f"mlic-tiny-gaussian@{newest[:16]}")["sha256"] == newest
    for bad in ("mlic-tiny-gaussian@123", "mlic-tiny-gaussian@XYZ4567890abcdef", "mlic-tiny-gaussian@"):
        with pytest.raises(NeurocodecError, match="malformed weights release"):
            zoo.find_release(bad)
    with pytest.raises(WeightsError, match="unknown weights release mlic-tiny-gaussian@0000000000000000"):
        zoo.find_release("mlic-tiny-gaussian@0000000000000000")
    with pytest.raises(NeurocodecError, match="unknown model"):
        zoo.find_release("no-such-model@0000000000000000")


def _git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})


def test_an_older_release_is_installed_from_git_history_and_checked(tmp_path, monkeypatch, capsys):
    """The repository's history holds releases that were shipped before they were kept as
    files; `models install` restores one, sha256-checked, and then files made with it decode."""
    shipped = zoo.manifest()["mlic-tiny-gaussian"]
    repo = tmp_path / "repo"
    (repo / "weights").mkdir(parents=True)
    shutil.copy(ROOT / "weights" / shipped["file"], repo / "weights" / "old.safetensors")
    _git("init", "-q", cwd=repo)
    _git("add", ".", cwd=repo)
    _git("commit", "-qm", "old release", cwd=repo)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    weights = tmp_path / "weights"
    weights.mkdir()
    release = f"mlic-tiny-gaussian@{shipped['sha256'][:16]}"
    entry = {**shipped, "releases": [{"release": release, "sha256": shipped["sha256"], "shipped": "2026-11-22",
                                      "commit": commit, "path": "weights/old.safetensors"}]}
    (weights / "manifest.json").write_text(json.dumps({"mlic-tiny-gaussian": entry}))
    monkeypatch.setenv("NEUROCODEC_WEIGHTS", str(weights))
    zoo.load_model.cache_clear()
    try:
        with pytest.raises(WeightsError, match=f"{release} is not installed: .* in commit {commit[:12]}"):
            zoo.load_model(release)
        assert main(["models", "--all"]) == 0
        assert f"{release}  shipped 2026-11-22  in commit {commit[:12]}" in capsys.readouterr().out
        assert zoo.install_release(release, repo) == weights / shipped["file"]
        assert zoo.load_model(release)[1] == shipped["sha256"]
        # a history whose file is not the release is refused, and nothing is written
        (weights / shipped["file"]).unlink()
        (repo / "weights" / "old.safetensors").write_bytes(b"not the weights")
        _git("commit", "-qam", "rewritten", cwd=repo)
        entry["releases"][0]["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                                        text=True).stdout.strip()
        (weights / "manifest.json").write_text(json.dumps({"mlic-tiny-gaussian": entry}))
        with pytest.raises(WeightsError, match=f"is not release {release}"):
            zoo.install_release(release, repo)
        assert not (weights / shipped["file"]).exists()
    finally:
        monkeypatch.undo()
        zoo.load_model.cache_clear()
