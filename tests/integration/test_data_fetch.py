"""`posttrain-probe data`: the catalogue's pins against the shared copies, fetch end to end from a local mirror (an
HTTP server on 127.0.0.1, or a folder) with a corrupted and an interrupted download, resolution order (cache, then
shared folder, then an error naming the fetch command), and a study that runs on fetched data only. No network."""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import json
import shutil
import threading
import urllib.parse
from pathlib import Path

import pytest

from posttrain_probe.cli import main
from posttrain_probe.data.catalog import CATALOG, DataFile, DataSet, MissingDataError, data_set_dir, where
from posttrain_probe.data.fetch import ChecksumError, DataFetchError, fetch
from posttrain_probe.paths import shared_data_dir

SHARED = shared_data_dir()
EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET of `root/PATH` with `Range: bytes=N-` support; `server.cut[PATH] = n` sends only n bytes once."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        rel = urllib.parse.unquote(self.path.lstrip("/"))
        rng = self.headers.get("Range")
        self.server.log.append((rel, rng))
        path = self.server.root / rel
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cut = self.server.cut.pop(rel, None)
        self.wfile.write(body if cut is None else body[:cut])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve():
    """serve(root) -> (base URL, server); every server is shut down after the test."""
    servers = []

    def start(root: Path):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.root, server.log, server.cut = Path(root), [], {}
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", server

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty cache, no shared data folder; returns the data cache root."""
    monkeypatch.setenv("POSTTRAIN_PROBE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("POSTTRAIN_PROBE_DATA", raising=False)
    monkeypatch.delenv("POSTTRAIN_PROBE_DATA_MIRROR", raising=False)
    monkeypatch.setattr("posttrain_probe.paths.shared_data_dir", lambda: None)
    return tmp_path / "cache" / "data"


@pytest.fixture
def synth(tmp_path, monkeypatch):
    """A two-file data set `synth` in the catalogue, and a mirror folder tmp/mirror/synth/ holding it."""
    folder = tmp_path / "mirror" / "synth"
    folder.mkdir(parents=True)
    files = {"a.txt": b"hello data\n" * 10, "b.bin": bytes(range(256)) * 1200}
    pins = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        url = f"https://example.invalid/synth/{name}"
        pins.append(DataFile(name, hashlib.sha256(data).hexdigest(), len(data), (url,)))
    ds = DataSet("synth", "test data", "tests", "MIT", "MIT", "here", tuple(pins))
    monkeypatch.setitem(CATALOG, "synth", ds)
    return tmp_path / "mirror"


def _visible(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) if root.exists() else []


def test_catalogue_rejects_bad_entries():
    with pytest.raises(ValueError, match="64 lowercase hex"):
        DataFile("a.txt", "abc", 3, ("https://x/a.txt",))
    with pytest.raises(ValueError, match="http"):
        DataFile("a.txt", "0" * 64, 3, ("ftp://x/a.txt",))
    with pytest.raises(ValueError, match="plain file name"):
        DataFile("../a.txt", "0" * 64, 3, ("https://x/a.txt",))
    with pytest.raises(ValueError, match="reserved"):
        DataSet("all", "t", "r", "l", "l", "s", (DataFile("a", "0" * 64, 3, ("https://x/a",)),))


@pytest.mark.skipif(SHARED is None, reason="../shared/data is absent")
def test_catalogue_pins_are_the_shared_copies_and_their_source_records():
    for ds in CATALOG.values():
        source = (SHARED / ds.name / "SOURCE.txt").read_text()
        for f in ds.files:
            local = SHARED / ds.name / f.name
            assert local.stat().st_size == f.size, local
            assert hashlib.sha256(local.read_bytes()).hexdigest() == f.sha256, local
            assert f"sha256: {f.sha256}" in source and f"bytes: {f.size}" in source, local
            assert all(u.startswith("https://") for u in f.urls)


def test_fetch_from_an_http_mirror_is_verified_atomic_and_cached(isolated, synth, serve, capsys):
    url, server = serve(synth)
    assert main(["data", "path", "synth"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: data set synth not found; run `posttrain-probe data fetch synth` "
        "(or set POSTTRAIN_PROBE_DATA to a folder holding synth/)"
    )
    assert main(["data", "fetch", "synth", "--mirror", url, "--no-progress"]) == 0
    out = isolated / "synth"
    for f in CATALOG["synth"].files:
        assert hashlib.sha256((out / f.name).read_bytes()).hexdigest() == f.sha256
    assert f"url: {url}/synth/a.txt" in (out / "SOURCE.txt").read_text()
    assert _visible(isolated) == ["synth"]  # no staging folder left
    assert data_set_dir("synth") == out and where("synth") == "cache"
    n = len(server.log)
    assert fetch("synth", mirror=url, progress=False) == out and len(server.log) == n  # cached: no request
    capsys.readouterr()
    assert main(["data", "path", "synth"]) == 0 and capsys.readouterr().out.strip() == str(out)
    assert main(["data", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["synth"]["where"] == "cache" and rows["known_1000"]["where"] == "missing"
    assert rows["gsm8k"]["license"] == "MIT" and rows["gsm8k"]["size"] == 4166206 + 749738


def test_a_corrupted_download_is_refused_in_one_line_and_nothing_is_kept(isolated, synth, serve, capsys):
    (synth / "synth" / "b.bin").write_bytes(b"x" + (synth / "synth" / "b.bin").read_bytes()[1:])
    url, _ = serve(synth)
    with pytest.raises(ChecksumError, match="nothing was kept"):
        fetch("synth", mirror=url, progress=False)
    assert _visible(isolated) == []
    assert main(["data", "fetch", "synth", "--mirror", url, "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: synth/b.bin:") and "sha256" in err
    assert _visible(isolated) == []


def test_an_interrupted_download_shows_nothing_and_resumes(isolated, synth, serve):
    url, server = serve(synth)
    server.cut["synth/b.bin"] = 100_000
    with pytest.raises(DataFetchError, match="resume"):
        fetch("synth", mirror=url, progress=False)
    assert not (isolated / "synth").exists()
    with pytest.raises(MissingDataError, match="posttrain-probe data fetch synth"):
        data_set_dir("synth")
    server.log.clear()
    out = fetch("synth", mirror=url, progress=False)
    assert server.log == [("synth/b.bin", "bytes=100000-")]  # a.txt was verified before; b.bin resumed
    assert hashlib.sha256((out / "b.bin").read_bytes()).hexdigest() == CATALOG["synth"].files[1].sha256
    assert _visible(isolated) == ["synth"]


def test_a_failing_source_falls_back_to_the_next_and_a_folder_mirror_works(isolated, synth, serve, monkeypatch):
    url, _ = serve(synth)
    ds = CATALOG["synth"]
    files = tuple(
        DataFile(f.name, f.sha256, f.size, (f"{url}/gone/{f.name}", f"{url}/synth/{f.name}")) for f in ds.files
    )
    monkeypatch.setitem(CATALOG, "synth", DataSet("synth", "t", "r", "MIT", "MIT", "s", files))
    warnings: list[str] = []
    assert (fetch("synth", progress=False, warn=warnings.append) / "a.txt").is_file()
    assert len(warnings) == 2 and "404" in warnings[0] and "trying the next source" in warnings[0]
    shutil.rmtree(isolated / "synth")
    monkeypatch.setenv("POSTTRAIN_PROBE_DATA_MIRROR", str(synth))  # a local folder laid out as NAME/FILE
    assert main(["data", "fetch", "synth", "--no-progress"]) == 0 and (isolated / "synth" / "b.bin").is_file()


def test_default_data_resolves_cache_then_shared_then_names_the_fetch_command(tmp_path, isolated, monkeypatch):
    from posttrain_probe.data.defaults import shared_path
    from posttrain_probe.rlvr.config import ConfigError
    from posttrain_probe.rlvr.session import _resolve_data

    with pytest.raises(MissingDataError) as e:
        shared_path("facts")
    assert str(e.value) == (
        "data set known_1000 (known_1000/known_1000.json) not found; run `posttrain-probe data fetch known_1000` "
        "(or set POSTTRAIN_PROBE_DATA to a folder holding known_1000/)"
    )
    with pytest.raises(ConfigError, match="posttrain-probe data fetch gsm8k"):
        _resolve_data("shared:gsm8k/test.jsonl")
    with pytest.raises(MissingDataError, match="posttrain-probe data fetch tinystories_val_subset"):
        shared_path("texts")
    shared = tmp_path / "shared"
    (shared / "known_1000").mkdir(parents=True)
    (shared / "known_1000" / "known_1000.json").write_text("[]")
    monkeypatch.setattr("posttrain_probe.paths.shared_data_dir", lambda: shared)
    assert shared_path("facts") == shared / "known_1000" / "known_1000.json" and where("known_1000") == "shared"
    (isolated / "known_1000").mkdir(parents=True)
    (isolated / "known_1000" / "known_1000.json").write_text("[]")
    assert shared_path("facts") == isolated / "known_1000" / "known_1000.json"  # the cache comes first
    assert data_set_dir("known_1000") == isolated / "known_1000" and where("known_1000") == "cache"


@pytest.mark.slow
@pytest.mark.skipif(SHARED is None, reason="../shared/data is absent (the test mirror is built from it)")
def test_fetch_all_then_a_study_runs_on_a_real_architecture_with_default_data(tmp_path, isolated, serve):
    """Acceptance: no ../shared and no $POSTTRAIN_PROBE_DATA; `data fetch all` from a local mirror, then
    experiments/knowledge_localization.py on tiny random-init Llama checkpoints reads only the fetched data."""
    from posttrain_probe.results import read_run
    from posttrain_probe.testing import make_tiny_checkpoint

    mirror = tmp_path / "mirror"
    for ds in CATALOG.values():
        (mirror / ds.name).mkdir(parents=True)
        for f in ds.files:
            shutil.copyfile(SHARED / ds.name / f.name, mirror / ds.name / f.name)
    url, _ = serve(mirror)
    assert main(["data", "fetch", "all", "--mirror", url, "--no-progress"]) == 0
    assert _visible(isolated) == sorted(CATALOG)

    facts = json.loads((isolated / "known_1000" / "known_1000.json").read_text())
    words = sorted({w for f in facts for w in f["attribute"].split()})
    base = make_tiny_checkpoint("llama", tmp_path / "base", seed=0, words=words, max_positions=512)
    post = make_tiny_checkpoint("llama", tmp_path / "post", seed=1, words=words, max_positions=512)
    spec = importlib.util.spec_from_file_location("kl", EXPERIMENTS / "knowledge_localization.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    flags = ["--base", str(base), "--post", str(post), "--smoke", "--device", "cpu", "--no-progress", "--no-figures"]
    assert module.main([*flags, "--out", str(tmp_path / "kl")]) == 0
    tracing = read_run(tmp_path / "kl" / "tracing")
    assert tracing.config["data_source"] == str(isolated / "known_1000" / "known_1000.json")
    patching = read_run(tmp_path / "kl" / "patching")
    assert patching.config["data_source"] == str(isolated / "geometry_of_truth" / "cities.csv")


def test_ctrl_c_during_a_fetch_leaves_no_data_set_and_the_next_fetch_resumes(isolated, synth, capsys, monkeypatch):
    import posttrain_probe.data.fetch as fetch_module

    real = fetch_module._download

    def interrupted(url, part, data_file, *args):
        if data_file.name == "b.bin":
            part.write_bytes((synth / "synth" / "b.bin").read_bytes()[:1000])
            raise KeyboardInterrupt
        return real(url, part, data_file, *args)

    monkeypatch.setattr(fetch_module, "_download", interrupted)
    assert main(["data", "fetch", "synth", "--mirror", str(synth), "--no-progress"]) == 130
    assert "run the same fetch to resume" in capsys.readouterr().err
    assert _visible(isolated) == [".synth.partial"] and not (isolated / "synth").exists()
    monkeypatch.setattr(fetch_module, "_download", real)
    assert main(["data", "fetch", "synth", "--mirror", str(synth), "--no-progress"]) == 0
    assert _visible(isolated) == ["synth"]


def test_the_data_package_does_not_import_the_cli():
    root = Path(__file__).resolve().parents[2] / "posttrain_probe" / "data"
    paths = sorted(root.glob("*.py"))
    assert paths, root
    for path in paths:
        text = path.read_text()
        assert "posttrain_probe.cli" not in text and "from ..cli" not in text and "cli_args" not in text, path
