"""`posttrain-probe data fetch`: download a catalogued data set into the data cache, verified and atomic.

Each file is downloaded into a hidden staging folder (`cache_dir()/data/.NAME.partial/FILE.part`), checked against
its pinned size and sha256, and the whole folder is renamed to `cache_dir()/data/NAME` only when every file is
verified, so a data set is either complete or absent where readers look. An interrupted download keeps its staging
folder, and the next fetch resumes it (HTTP Range); a file whose bytes do not match the pin deletes the staging
folder (nothing is kept). A mirror (`--mirror` or `$POSTTRAIN_PROBE_DATA_MIRROR`: a base URL or a local folder laid
out as `NAME/FILE`, like `../shared/data`) replaces every upstream URL.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from posttrain_probe.data.catalog import CATALOG, MIRROR_ENV, DataFile, DataSet, data_cache_root, get_data_set
from posttrain_probe.utils.io import atomic_write_text, sha256_file

CHUNK = 1 << 16


class DataFetchError(RuntimeError):
    """A download failed (network, HTTP status, short read); the staging folder is kept for a resume."""


class ChecksumError(DataFetchError):
    """Downloaded bytes do not match the pinned sha256 or size; nothing is kept."""


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def mirror_urls(mirror: str, data_set: DataSet, data_file: DataFile) -> tuple[str, ...]:
    """The one URL of `data_file` under `mirror` (a base URL, or a local folder laid out as NAME/FILE)."""
    if "://" in mirror:
        base = mirror.rstrip("/")
    else:
        folder = Path(mirror).expanduser().resolve()
        if not folder.is_dir():
            raise ValueError(f"mirror {mirror} is not a folder or URL; pass a folder laid out as NAME/FILE or a URL")
        base = folder.as_uri()
    return (f"{base}/{urllib.parse.quote(data_set.name)}/{urllib.parse.quote(data_file.name)}",)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path`: a concurrent fetch of the same data set waits, then finds it done."""
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _download(url: str, part: Path, data_file: DataFile, desc: str, progress: bool, timeout: float) -> None:
    """Append `url`'s bytes to `part` (resuming from its size over HTTP) until it holds `data_file.size` bytes."""
    from tqdm import tqdm

    from posttrain_probe import __version__

    have = part.stat().st_size if part.exists() else 0
    if have > data_file.size:
        part.unlink()
        have = 0
    if have == data_file.size:
        return
    request = urllib.request.Request(url, headers={"User-Agent": f"posttrain_probe/{__version__}"})
    if have and url.startswith(("http://", "https://")):
        request.add_header("Range", f"bytes={have}-")
    local = urllib.parse.urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if local else urllib.request.build_opener()
    try:
        response = opener.open(request, timeout=timeout)
    except (OSError, http.client.HTTPException) as e:
        reason = e if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", None) or e
        raise DataFetchError(f"{url}: {reason}") from None
    with response:
        if have and getattr(response, "status", None) != 206:
            have = 0  # the server sent the whole file: start over
        with (
            open(part, "ab" if have else "wb") as out,
            tqdm(total=data_file.size, initial=have, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar,
        ):
            try:
                while have <= data_file.size and (block := response.read(CHUNK)):
                    out.write(block)
                    have += len(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException) as e:
                raise DataFetchError(f"{url}: connection lost at {have} of {data_file.size} bytes ({e})") from None
            finally:
                out.flush()
                os.fsync(out.fileno())
    if have < data_file.size:
        raise DataFetchError(f"{url}: download stopped at {have} of {data_file.size} bytes")


def _fetch_file(
    data_set: DataSet,
    data_file: DataFile,
    staging: Path,
    urls: tuple[str, ...],
    progress: bool,
    timeout: float,
    warn: Callable[[str], None],
) -> None:
    """Download `data_file` into `staging`, trying `urls` in order, and verify it; raise when no URL gave it."""
    done, part = staging / data_file.name, staging / f"{data_file.name}.part"
    failures: list[str] = []
    mismatch = False
    for url in urls:
        try:
            _download(url, part, data_file, f"{data_set.name}/{data_file.name}", progress, timeout)
        except DataFetchError as e:
            failures.append(str(e))
            if len(urls) > 1:
                warn(f"warning: {e}; trying the next source")
            continue
        size, digest = part.stat().st_size, sha256_file(part)
        if size == data_file.size and digest == data_file.sha256:
            os.replace(part, done)
            return
        part.unlink()
        mismatch = True
        failures.append(f"{url} gave {size} bytes with sha256 {digest[:12]}..., expected {data_file.sha256[:12]}...")
        if len(urls) > 1:
            warn(f"warning: {failures[-1]}; trying the next source")
    what = f"{data_set.name}/{data_file.name}"
    if mismatch:
        shutil.rmtree(staging, ignore_errors=True)
        raise ChecksumError(f"{what}: {'; '.join(failures)} (corrupted download or changed source); nothing was kept")
    raise DataFetchError(f"could not download {what}: {'; '.join(failures)}; run the same fetch again to resume")


def _source_text(data_set: DataSet, urls: dict[str, tuple[str, ...]]) -> str:
    lines = [
        f"Data set: {data_set.name}",
        data_set.title,
        "Fetched by `posttrain-probe data fetch`; every file is byte-identical to its pinned sha256.",
        "",
        f"source: {data_set.source}",
        f"license: {data_set.license_note}",
        f"read by: {data_set.read_by}",
    ]
    if data_set.notes:
        lines.append(f"notes: {data_set.notes}")
    for f in data_set.files:
        lines += ["", f"file: {f.name}", f"  bytes: {f.size}", f"  sha256: {f.sha256}"]
        lines += [f"  url: {u}" for u in urls[f.name]]
    return "\n".join(lines) + "\n"


def fetch(
    name: str,
    mirror: str | None = None,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
    warn: Callable[[str], None] = _warn,
) -> Path:
    """Data set `name` in the data cache, downloading it first unless it is there (or `force`); returns its folder.
    `mirror` (default `$POSTTRAIN_PROBE_DATA_MIRROR`) replaces the upstream URLs."""
    data_set = get_data_set(name)
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    root = data_cache_root()
    final = root / data_set.name
    if final.is_dir() and not force:
        return final
    urls = {f.name: mirror_urls(mirror, data_set, f) if mirror else f.urls for f in data_set.files}
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{data_set.name}.lock"):
        if final.is_dir() and not force:
            return final  # a concurrent fetch finished it
        staging = root / f".{data_set.name}.partial"
        staging.mkdir(exist_ok=True)
        for f in data_set.files:
            done = staging / f.name
            if done.is_file() and done.stat().st_size == f.size and sha256_file(done) == f.sha256:
                continue  # verified by an earlier, interrupted fetch
            done.unlink(missing_ok=True)
            _fetch_file(data_set, f, staging, urls[f.name], progress, timeout, warn)
        atomic_write_text(staging / "SOURCE.txt", _source_text(data_set, urls))
        if final.exists():
            old = root / f".{data_set.name}.old-{os.getpid()}"
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
    return final


def fetch_many(
    names: list[str],
    mirror: str | None = None,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
    warn: Callable[[str], None] = _warn,
) -> dict[str, Path]:
    """`fetch` each of `names` ("all" = the whole catalogue); a failed data set does not stop the others, and one
    line at the end names every failure."""
    if "all" in names:
        names = list(CATALOG)
    for n in names:
        get_data_set(n)  # every name checked before any download
    done: dict[str, Path] = {}
    failed: list[str] = []
    for n in names:
        try:
            done[n] = fetch(n, mirror=mirror, force=force, progress=progress, timeout=timeout, warn=warn)
        except DataFetchError as e:
            if len(names) == 1:
                raise
            warn(f"error: {e}")
            failed.append(n)
    if failed:
        raise DataFetchError(
            f"{len(failed)} of {len(names)} data sets failed ({', '.join(failed)}; reasons above); "
            "run the same fetch again to resume"
        )
    return done
