"""`optima fetch TASK --config FILE`: download, verify and unpack the official files a config names.

What to fetch comes from the manifest (``optima/data/manifest.yaml``: URL, size, SHA-256, licence of
every file ``config/paper.yaml`` needs); which resources a task needs comes from the config: every
path under ``data.official.<task>`` is matched against the manifest's outputs.

Every step is atomic, so neither Snakemake nor DVC ever sees a half-written file as complete:

* a download goes to ``data/raw/.downloads/<file>.part``; an interrupted download is resumed with an
  HTTP ``Range`` request (by this process after a dropped connection, or by the next run), and the file
  gets its final name only after its size and SHA-256 match (a mismatch removes it and names the file,
  the expected and the found checksum);
* where the publisher states no checksum, the SHA-256 (and size) of the first verified download is
  recorded in the lock file (``data/fetch.lock.yaml``), and later downloads must match it;
* archive members are extracted into a temporary sibling and renamed into place; a truncated or corrupt
  archive is an error (and is removed, so the next run downloads it again);
* files built from downloads (the Karpathy split, SNLI-VE) are written to a temporary name and renamed.

Data sets behind request forms (Flickr30k, NLVR2 images) are ``manual``: the command names the folder,
where to request the files and how many images it expects, and once they are there verifies their count
and that every image an annotation file references exists.

``OPTIMA_FETCH_MIRROR`` (or ``--mirror``) replaces ``scheme://`` of every URL by a mirror's base URL
(``http://mirror/images.cocodataset.org/zips/train2014.zip``); ``OPTIMA_FETCH_MANIFEST`` (or
``--manifest``) replaces the packaged manifest (the tests serve small archives this way).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from optima.data.formats import parse_jsonl
from optima.errors import ConfigError, DataError
from optima.io import sha256_file

MANIFEST_ENV = "OPTIMA_FETCH_MANIFEST"
MIRROR_ENV = "OPTIMA_FETCH_MIRROR"
DOWNLOAD_DIR = "data/raw/.downloads"
VERIFIED_SUFFIX = ".verified.json"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
CHUNK = 1 << 20


# ============================================================================== manifest
def manifest_path(path: str | os.PathLike | None = None) -> Path:
    if path:
        return Path(path)
    if os.environ.get(MANIFEST_ENV):
        return Path(os.environ[MANIFEST_ENV])
    from importlib import resources

    return Path(str(resources.files("optima").joinpath("data/manifest.yaml")))


def load_manifest(path: str | os.PathLike | None = None) -> dict:
    """The manifest, checked for the fields the code relies on (errors name the resource and key)."""
    import yaml

    path = manifest_path(path)
    try:
        manifest = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: fetch manifest not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    resources = manifest.get("resources")
    if not isinstance(resources, dict) or not resources:
        raise ConfigError(f"{path}: needs a non-empty 'resources' mapping")
    for name, res in resources.items():
        where = f"{path}: resources.{name}"
        if not isinstance(res, dict) or not isinstance(res.get("outputs"), dict) or not res["outputs"]:
            raise ConfigError(f"{where}: needs an 'outputs' mapping")
        if not res.get("licence"):
            raise ConfigError(f"{where}: needs a 'licence' (terms page)")
        downloads = res.get("downloads") or {}
        if "manual" not in res and not downloads:
            raise ConfigError(f"{where}: needs 'downloads' (or 'manual')")
        for key, dl in downloads.items():
            if not isinstance(dl, dict) or not dl.get("url"):
                raise ConfigError(f"{where}.downloads.{key}: needs a 'url'")
            sha = dl.get("sha256")
            if sha is not None and (not isinstance(sha, str) or len(sha) != 64
                                    or any(c not in "0123456789abcdef" for c in sha)):
                raise ConfigError(f"{where}.downloads.{key}.sha256: not a lower-case hex SHA-256 (or null)")
            blob = dl.get("git_blob_sha1")
            if blob is not None and (not isinstance(blob, str) or len(blob) != 40
                                     or any(c not in "0123456789abcdef" for c in blob)):
                raise ConfigError(f"{where}.downloads.{key}.git_blob_sha1: not a lower-case hex git blob SHA-1")
            records = dl.get("records")
            if records is not None and (isinstance(records, bool) or not isinstance(records, int) or records < 1):
                raise ConfigError(f"{where}.downloads.{key}.records: not a positive record count")
        for out, spec in res["outputs"].items():
            spec = spec or {}
            if "from" in spec and spec["from"] not in downloads:
                raise ConfigError(f"{where}.outputs.{out}: 'from: {spec['from']}' is not one of its downloads")
    manifest["_path"] = str(path)
    return manifest


def _norm(path: str | os.PathLike) -> PurePosixPath:
    return PurePosixPath(os.path.normpath(str(path)).replace(os.sep, "/"))


def _inside(child: PurePosixPath, parent: PurePosixPath) -> bool:
    return child == parent or parent in child.parents


def verified_marker(output: str) -> str:
    """The record a manual resource's rule writes next to the folder (never the folder itself:
    Snakemake deletes a job's outputs before rerunning it)."""
    return f"{str(output).rstrip('/')}{VERIFIED_SUFFIX}"


def rule_outputs(res: dict) -> dict[str, str]:
    """Snakemake output name -> path of one resource (manual resources: the verification record)."""
    outputs = {}
    for k, (path, spec) in enumerate(res["outputs"].items()):
        name = f"out{k}"
        outputs[name] = verified_marker(path) if "manual" in res else path
    return outputs


def output_is_dir(res: dict, path: str) -> bool:
    return bool((res["outputs"].get(path) or {}).get("dir")) and "manual" not in res


def match_path(manifest: dict, path: str) -> list[tuple[str, str]]:
    """(resource, output) pairs a configured path is made of: the output itself, the output
    directory that holds it, or every output inside the configured directory."""
    target = _norm(path)
    found = []
    for name, res in manifest["resources"].items():
        for out in res["outputs"]:
            o = _norm(out)
            if _inside(target, o) or _inside(o, target):
                found.append((name, out))
    return found


def config_paths(config: dict, task: str) -> list[str]:
    spec = (config["data"].get("official") or {}).get(task) or {}
    paths = [spec.get("images")]
    for group in ("questions", "annotations"):
        paths += list((spec.get(group) or {}).values())
    return list(OrderedDict.fromkeys(p for p in paths if p))


def annotation_paths(config: dict, task: str) -> list[str]:
    spec = (config["data"].get("official") or {}).get(task) or {}
    paths = []
    for group in ("questions", "annotations"):
        paths += list((spec.get(group) or {}).values())
    return list(OrderedDict.fromkeys(p for p in paths if p))


def prepare_inputs(manifest: dict, config: dict, task: str) -> list[str]:
    """What `prepare TASK` reads: each configured path mapped to the fetch output(s) that make it
    (a manual folder to its verification record), or the path itself when no resource makes it."""
    inputs = []
    for path in config_paths(config, task):
        matches = match_path(manifest, path)
        if not matches:
            inputs.append(path)
        for name, out in matches:
            res = manifest["resources"][name]
            inputs.append(verified_marker(out) if "manual" in res else out)
    return list(OrderedDict.fromkeys(inputs))


def task_resources(manifest: dict, config: dict, task: str) -> list[str]:
    names = [name for path in config_paths(config, task) for name, _ in match_path(manifest, path)]
    return list(OrderedDict.fromkeys(names))


def manual_annotations(manifest: dict, config: dict, resource: str) -> dict[str, list[str]]:
    """Task -> the configured annotation files whose images live in a manual resource's folder."""
    out = {}
    for task in (config["data"].get("official") or {}):
        spec = config["data"]["official"][task] or {}
        if spec.get("images") and any(name == resource for name, _ in match_path(manifest, spec["images"])):
            out[task] = annotation_paths(config, task)
    return out


def manual_inputs(manifest: dict, config: dict, resource: str) -> list[str]:
    """The annotation files (as fetch outputs) a manual resource is verified against, and its
    folder when it exists (so adding images reruns the verification)."""
    inputs = []
    for paths in manual_annotations(manifest, config, resource).values():
        for path in paths:
            matches = [out for name, out in match_path(manifest, path) if "manual" not in manifest["resources"][name]]
            inputs += matches or [path]
    for out in manifest["resources"][resource]["outputs"]:
        if os.path.isdir(out):
            inputs.append(out)
    return list(OrderedDict.fromkeys(inputs))


# ============================================================================== URLs, lock
def resolve_url(url: str, mirror: str | None = None) -> str:
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    if not mirror:
        return url
    rest = url.split("://", 1)[1] if "://" in url else url
    return f"{mirror.rstrip('/')}/{rest}"


class Lock:
    """SHA-256 and size of downloads whose publisher states no checksum, recorded after the first
    verified download. Several fetch jobs may update it at once: read-modify-write under flock."""

    HEADER = ("# SHA-256 and size of downloads whose publisher states no checksum, recorded by `optima fetch`\n"
              "# after the first verified download (optima/data/manifest.yaml). Commit this file: every later\n"
              "# download must match it. Delete an entry only if the publisher replaced the file on purpose.\n")

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> dict:
        import yaml

        if not self.path.is_file():
            return {}
        try:
            return yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{self.path}: not valid YAML ({exc})") from None

    def get(self, url: str) -> dict | None:
        return self.read().get(url)

    def record(self, url: str, sha256: str, size: int) -> None:
        import fcntl

        import yaml

        from optima.io import atomic_write_text

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.flock"), "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            entries = self.read()
            entries[url] = {"sha256": sha256, "size": int(size),
                            "recorded": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
            text = self.HEADER + yaml.safe_dump(dict(sorted(entries.items())), sort_keys=False, width=1000)
            atomic_write_text(self.path, text)


# ============================================================================== download
def git_blob_sha1(path: str | os.PathLike) -> str:
    """The SHA-1 git names a file's content by (``git hash-object``): what a repository's tree at a pinned commit
    states for every file, so a file served from that commit can be checked before anyone has hashed its bytes."""
    digest = hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode())
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def content_check(path: str | os.PathLike, dl: dict) -> str | None:
    """Why the file cannot be the whole download, or None when its content holds together: an archive whose
    every member reads with a correct CRC, a JSON document or JSON-lines file that parses to the end (with
    ``records`` records when the manifest states them). The last resort for a download whose size nobody states
    (no Content-Length, no manifest size) and whose checksum nobody published."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".zip", ".tar", ".tar.gz", ".tgz")) or zipfile.is_zipfile(path):
        try:
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as archive:
                    bad = archive.testzip()
                return f"archive member {bad!r} fails its CRC" if bad else None
            with tarfile.open(path) as archive:  # gzip checks its CRC and length at the end of the stream
                for member in archive:
                    if member.isfile():
                        with archive.extractfile(member) as handle:
                            while handle.read(CHUNK):
                                pass
            return None
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib_error()) as exc:
            return f"truncated or corrupt archive ({type(exc).__name__}: {exc})"
    if name.endswith((".json", ".jsonl")):
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            document = json.loads(text)
            count = len(document) if isinstance(document, (list, dict)) else 1
        except json.JSONDecodeError:
            count = 0
            for number, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    json.loads(line)
                except json.JSONDecodeError as exc:
                    return f"line {number} is not valid JSON ({exc.msg}): the file is cut short or corrupt"
                count += 1
            if not text.endswith("\n"):
                return "the last line has no line end: the file may be cut short"
        expected = dl.get("records")
        if expected is not None and count != expected:
            return f"{count:,} records, the manifest expects {expected:,}"
        return None
    return "no content check exists for a file of this kind"


def zlib_error():
    import zlib

    return zlib.error


def _progress(total: int | None, initial: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                mininterval=5.0, file=sys.stderr, disable=None)


def download(url: str, dest: str | os.PathLike, *, size: int | None = None, sha256: str | None = None,
             retries: int = 5, timeout: float = 60.0, backoff: float = 2.0, log=print,
             git_blob: str | None = None, info: dict | None = None) -> str:
    """Download ``url`` to ``dest`` through ``dest.part`` with HTTP Range resume; return its SHA-256.

    ``dest`` appears only once the file is complete: its size equals ``size`` (and the server's
    length) and its SHA-256 equals ``sha256`` (its git blob SHA-1 ``git_blob``) when given. A mismatch
    removes the partial file and raises DataError naming the file and both values. A dropped connection
    is resumed from where it stopped (``retries`` times; then the ``.part`` file stays for the next run
    to resume). ``info`` is filled with ``size_from``: what confirmed the size (``"manifest"``, ``"server"``
    for a Content-Length or Content-Range, or None: nothing did, the server sent the body without a length).
    """
    import http.client
    import urllib.error
    import urllib.request

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    total = size
    size_from = "manifest" if size is not None else None
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if total is not None and offset > total:
            log(f"{part}: {offset} bytes, more than the expected {total}: starting again")
            part.unlink()
            offset = 0
        if total is not None and offset == total:
            break
        request = urllib.request.Request(url, headers={"User-Agent": "optima-fetch/1"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            with contextlib.closing(urllib.request.urlopen(request, timeout=timeout)) as response:
                status = getattr(response, "status", 200)
                length = response.headers.get("Content-Length")
                if offset and status == 206:
                    content_range = response.headers.get("Content-Range", "")
                    if not content_range.startswith(f"bytes {offset}-"):
                        raise DataError(f"{url}: server answered Range bytes={offset}- with {content_range!r}")
                    server_total = content_range.rsplit("/", 1)[-1]
                    server_total = int(server_total) if server_total.isdigit() else None
                    mode = "ab"
                    log(f"{dest.name}: resuming at byte {offset}")
                else:
                    if offset:
                        log(f"{dest.name}: the server ignored the Range request: starting again")
                    offset = 0
                    server_total = int(length) if length and length.isdigit() else None
                    mode = "wb"
                if server_total is not None:
                    if size is not None and server_total != size:
                        raise DataError(f"{url}: the server's file has {server_total} bytes, the manifest expects "
                                        f"{size} (the file changed at the source, or the URL is wrong)")
                    total = server_total
                    size_from = size_from or "server"
                with open(part, mode) as handle, _progress(total, offset, dest.name) as bar:
                    while True:
                        block = response.read(CHUNK)
                        if not block:
                            break
                        handle.write(block)
                        bar.update(len(block))
                    handle.flush()
                    os.fsync(handle.fileno())
            got = part.stat().st_size
            if total is not None and got < total:
                raise http.client.IncompleteRead(b"", total - got)
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset and total is not None and offset >= total:
                break
            if exc.code == 416 and offset:  # our partial file is not a prefix the server can extend
                log(f"{part}: the server refused to resume (HTTP 416): starting again")
                part.unlink()
                continue
            raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as exc:
            attempt += 1
            have = part.stat().st_size if part.exists() else 0
            if attempt > retries:
                raise DataError(f"{url}: download interrupted at byte {have}"
                                f"{f' of {total}' if total else ''} ({type(exc).__name__}: {exc}); "
                                f"{part} is kept: run the command again to resume") from None
            log(f"{dest.name}: connection lost at byte {have} ({type(exc).__name__}); resuming "
                f"(attempt {attempt} of {retries})")
            time.sleep(backoff * attempt)
    got = part.stat().st_size
    if total is not None and got != total:
        part.unlink()
        raise DataError(f"{dest}: downloaded {got} bytes, expected {total}; the partial file was removed")
    found = sha256_file(part)
    if sha256 is not None and found != sha256:
        part.unlink()
        raise DataError(f"{dest}: checksum mismatch: expected SHA-256 {sha256}, found {found} "
                        f"(downloaded from {url}); the file was removed")
    if git_blob is not None and git_blob_sha1(part) != git_blob:
        blob = git_blob_sha1(part)
        part.unlink()
        raise DataError(f"{dest}: checksum mismatch: expected git blob SHA-1 {git_blob} (the pinned commit's), found "
                        f"{blob} ({got} bytes downloaded from {url}); the file was removed")
    if info is not None:
        info["size_from"] = size_from
    os.replace(part, dest)
    return found


# ============================================================================== archives
def _archive_kind(path: Path) -> str:
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError:
        pass
    raise DataError(f"{path}: truncated or corrupt archive (no readable zip or tar directory)")


class Archive:
    """Read members of a zip or tar archive; a truncated or corrupt archive is a DataError naming it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.kind = _archive_kind(self.path)
        try:
            self._handle = zipfile.ZipFile(self.path) if self.kind == "zip" else tarfile.open(self.path)
            self.names = (self._handle.namelist() if self.kind == "zip"
                          else [m.name for m in self._handle.getmembers()])
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"{self.path}: truncated or corrupt archive ({type(exc).__name__}: {exc})") from None

    def close(self) -> None:
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def open(self, member: str):
        try:
            if self.kind == "zip":
                return self._handle.open(member)
            extracted = self._handle.extractfile(member)
            if extracted is None:
                raise KeyError(member)
            return extracted
        except KeyError:
            raise DataError(f"{self.path}: has no member {member!r}") from None

    def read(self, member: str) -> bytes:
        try:
            with self.open(member) as handle:
                return handle.read()
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"{self.path}: member {member!r} is truncated or corrupt ({type(exc).__name__}: {exc})") from None

    def extract_file(self, member: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, self.open(member) as src:
                shutil.copyfileobj(src, out, CHUNK)
            os.replace(tmp, dest)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise DataError(f"{self.path}: member {member!r} is truncated or corrupt ({type(exc).__name__}: {exc})") from None
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def extract_dir(self, prefix: str, dest: Path) -> int:
        """Every file under ``prefix`` into ``dest`` (through a temporary sibling); returns the count."""
        from optima.io import atomic_directory

        prefix = prefix.rstrip("/") + "/"
        members = [n for n in self.names if n.startswith(prefix) and not n.endswith("/")]
        if not members:
            raise DataError(f"{self.path}: has no member under {prefix!r}")
        with atomic_directory(dest) as tmp:
            root = tmp.resolve()
            for name in members:
                target = (tmp / name[len(prefix):]).resolve()
                if root not in target.parents:
                    raise DataError(f"{self.path}: member {name!r} would be written outside {dest}")
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with self.open(name) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
                except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
                    raise DataError(f"{self.path}: member {name!r} is truncated or corrupt "
                                    f"({type(exc).__name__}: {exc})") from None
        return len(members)


# ============================================================================== builders
def _atomic_json(path: Path, obj: Any) -> None:
    from optima.io import atomic_write_text

    atomic_write_text(path, json.dumps(obj, ensure_ascii=False) + "\n")


def build_karpathy_coco(spec: dict, archives: dict, outputs: dict[str, str]) -> None:
    """dataset_coco.json (Karpathy split) -> COCO caption files, one per split of ``spec['splits']``."""
    source = spec["source"]
    with Archive(archives[source["from"]]) as archive:
        try:
            data = json.loads(archive.read(source["member"]))
        except json.JSONDecodeError as exc:
            raise DataError(f"{archives[source['from']]}: {source['member']}: not valid JSON ({exc.msg})") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DataError(f"{archives[source['from']]}: {source['member']}: no 'images' list (not dataset_coco.json)")
    for split, path in outputs.items():
        keep = set(spec["splits"][split])
        doc = {"info": {"description": f"COCO captions, Karpathy split {split} ({' + '.join(sorted(keep))})"},
               "licenses": [], "type": "captions", "images": [], "annotations": []}
        for k, image in enumerate(images):
            for key in ("split", "cocoid", "filename", "sentences"):
                if key not in image:
                    raise DataError(f"{source['member']}: images[{k}]: missing field {key}")
            if image["split"] not in keep:
                continue
            doc["images"].append({"id": image["cocoid"], "file_name": image["filename"]})
            for sentence in image["sentences"]:
                doc["annotations"].append({"image_id": image["cocoid"], "id": sentence["sentid"],
                                           "caption": sentence["raw"]})
        if not doc["images"]:
            raise DataError(f"{source['member']}: no image in split(s) {sorted(keep)}")
        _atomic_json(Path(path), doc)


def _read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_snli_ve(spec: dict, archives: dict, outputs: dict[str, str]) -> None:
    """SNLI 1.0 + the Flickr30k split lists -> snli_ve_{train,dev,test}.jsonl, as necla-ml/SNLI-VE's
    generator (vet/tools/snli_ve_generator.py) writes them: Flickr30k premises with a gold label,
    ``Flickr30K_ID`` added, keys sorted, examples grouped by image in the lists' order."""
    records = []
    for split in ("train", "dev", "test"):
        source = spec["source"][split]
        with Archive(archives[source["from"]]) as archive:
            lines = archive.read(source["member"]).decode("utf-8").splitlines()
        for _, record in parse_jsonl(lines, source["member"]):
            pair = str(record.get("pairID", ""))
            if record.get("gold_label") == "-" or "vg_" in pair or ".jpg" not in pair:
                continue
            record["Flickr30K_ID"] = pair[: pair.rfind(".jpg")]
            records.append(OrderedDict(sorted(record.items())))
    by_image: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        pair = record["pairID"]
        by_image.setdefault(pair[: pair.find(".jpg")], []).append(index)
    test = _read_list(Path(archives[spec["test_list"]]))
    train_val = _read_list(Path(archives[spec["train_val_list"]]))
    dev_images = int(spec.get("dev_images", 1000))
    lists = {"train": train_val[:-dev_images], "dev": train_val[-dev_images:], "test": test}
    for split, path in outputs.items():
        from optima.io import atomic_write_text

        lines = [json.dumps(records[i], ensure_ascii=False) for image in lists[split] for i in by_image.get(image, [])]
        if not lines:
            raise DataError(f"SNLI-VE {split}: no SNLI example has a premise image of the {split} list")
        atomic_write_text(Path(path), "\n".join(lines) + "\n")


BUILDERS = {"karpathy_coco": build_karpathy_coco, "snli_ve": build_snli_ve}


# ============================================================================== manual data sets
def count_images(folder: Path) -> int:
    return sum(1 for _, _, files in os.walk(folder) for f in files if f.lower().endswith(IMAGE_EXTENSIONS))


def manual_missing_message(name: str, res: dict, folder: str, expected: int | None, why: str) -> str:
    manual = res["manual"]
    count = f"{expected:,} images" if expected else "the images the annotation files reference"
    return (f"{folder}: {why}. {res.get('description', name)} cannot be downloaded by URL: request them at "
            f"{manual['request']}, then {manual['instructions']}. Expected: {count} in {folder}/. "
            f"Terms: {res['licence']}")


def verify_manual(name: str, res: dict, config: dict | None, manifest: dict, log=print) -> dict:
    """Check a manual resource's folder: present, image count, every referenced image there."""
    from optima.data import official
    from optima.data.formats import ImageIndex
    from optima.tasks import get_task

    (folder,) = list(res["outputs"])
    published = res["manual"].get("images")
    referenced: dict[str, str] = {}
    if config is not None:
        for task, _ in manual_annotations(manifest, config, name).items():
            for split in ("train", "val", "test"):
                spec = get_task(task)
                files = official.source_files(spec, config, split)
                if files and spec.main_role in files and all(p.is_file() for p in files.values()):
                    referenced.update(spec.referenced_images(files))
    expected = published or (len(referenced) or None)
    path = Path(folder)
    if not path.is_dir():
        raise DataError(manual_missing_message(name, res, folder, expected, "folder not found"))
    found = count_images(path)
    if found == 0:
        raise DataError(manual_missing_message(name, res, folder, expected, "folder holds no images"))
    index = ImageIndex(path, recursive=True)
    missing = [(image, where) for image, where in referenced.items() if index.find(image) is None]
    if missing:
        first = "; ".join(f"{image} (referenced by {where})" for image, where in missing[:5])
        raise DataError(f"{folder}: {len(missing):,} of the {len(referenced):,} images the annotation files reference "
                        f"are missing ({found:,} images found, expected {expected:,}); first: {first}. "
                        f"Supply them ({res['manual']['request']}) and run again")
    if published and found < published:
        log(f"{folder}: {found:,} images, the publisher's set has {published:,}: every referenced image is "
            "there, so this is enough for the configured splits")
    record = {"resource": name, "folder": folder, "images": found, "published_images": published,
              "referenced_images": len(referenced), "licence": res["licence"]}  # no timestamp: same folder, same bytes
    from optima.io import atomic_write_json

    atomic_write_json(verified_marker(folder), record)
    log(f"{name}: {folder} verified: {found:,} images, all {len(referenced):,} referenced images present")
    return record


# ============================================================================== fetch one resource
def _download_name(url: str) -> str:
    return PurePosixPath(url.split("?", 1)[0]).name


def fetch_download(key: str, dl: dict, lock: Lock, mirror: str | None, download_dir: Path, log=print,
                   retries: int = 5) -> Path:
    """One download of a resource, complete and verified (manifest checksum, else the lock's)."""
    url = dl["url"]
    dest = download_dir / _download_name(url)
    recorded = lock.get(url) or {}
    sha256 = dl.get("sha256") or recorded.get("sha256")
    size = dl.get("size") if dl.get("size") is not None else recorded.get("size")
    if dest.is_file():
        found = sha256_file(dest)
        if sha256 is None or found == sha256:
            return dest
        log(f"{dest}: stale download (SHA-256 {found}, expected {sha256}): downloading again")
        dest.unlink()
    source = resolve_url(url, mirror)
    log(f"{key}: {source} -> {dest}")
    info: dict = {}
    blob = dl.get("git_blob_sha1") if sha256 is None else None
    try:
        download(source, dest, size=size, sha256=sha256, retries=retries, log=log, git_blob=blob, info=info)
    except DataError as exc:
        if sha256 and not dl.get("sha256") and "checksum mismatch" in str(exc):
            raise DataError(f"{exc}; the expected value was recorded in {lock.path} on "
                            f"{recorded.get('recorded', '?')} (delete that entry only if the publisher "
                            "replaced the file on purpose)") from None
        raise
    if sha256 is None and blob is None and info.get("size_from") is None:
        # the first download of a file nobody states a checksum or a size for, sent without a length: only its
        # content can show it is whole before its SHA-256 is recorded for every later download
        problem = content_check(dest, dl)
        if problem:
            got = dest.stat().st_size
            dest.unlink()
            raise DataError(
                f"{dest.name} ({url}): sent without a Content-Length, with no size or checksum in the manifest, "
                f"and its content check fails: {problem}. The download ({got} bytes) was removed and nothing was "
                f"recorded in {lock.path}. Run the same command again to download it anew; if it keeps failing, "
                f"the server cuts it short: fetch it through a mirror (${MIRROR_ENV}) or state its size in the "
                "manifest (size: BYTES under its url)")
        log(f"{dest.name}: sent without a length; its content checks out, so its SHA-256 is recorded")
    return dest


def _record_if_new(dl: dict, path: Path, lock: Lock, log=print) -> None:
    url = dl["url"]
    if dl.get("sha256") or lock.get(url):
        return
    digest = sha256_file(path)
    lock.record(url, digest, path.stat().st_size)
    log(f"{path.name}: no published checksum; recorded SHA-256 {digest} in {lock.path}")


def fetch_resource(name: str, manifest: dict, config: dict | None = None, *, mirror: str | None = None,
                   force: bool = False, keep_downloads: bool = False, retries: int = 5, log=print) -> list[str]:
    """Make every output of one resource; returns them. Existing outputs are kept unless ``force``."""
    resources = manifest["resources"]
    if name not in resources:
        raise ConfigError(f"unknown fetch resource {name!r} (known: {', '.join(resources)})")
    res = resources[name]
    if "manual" in res:
        verify_manual(name, res, config, manifest, log=log)
        return [verified_marker(p) for p in res["outputs"]]
    outputs = list(res["outputs"])
    if not force and all(os.path.exists(p) for p in outputs):
        log(f"{name}: up to date ({', '.join(outputs)})")
        return outputs
    lock = Lock(manifest.get("lock") or "data/fetch.lock.yaml")
    download_dir = Path(manifest.get("download_dir") or DOWNLOAD_DIR)
    needed = set()
    for spec in res["outputs"].values():
        if "from" in (spec or {}):
            needed.add(spec["from"])
    if res.get("build"):
        needed |= set(res["downloads"])
    files = {}
    for key in [k for k in res["downloads"] if k in needed]:
        files[key] = fetch_download(key, res["downloads"][key], lock, mirror, download_dir, log=log, retries=retries)
    try:
        for out, spec in res["outputs"].items():
            spec = spec or {}
            if "from" not in spec:
                continue
            src = files[spec["from"]]
            if spec.get("member") is None:
                if spec.get("dir"):
                    raise ConfigError(f"{manifest['_path']}: resources.{name}.outputs.{out}: a directory needs 'member'")
                Path(out).parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(out).with_name(f".{Path(out).name}.tmp")
                shutil.copyfile(src, tmp)
                os.replace(tmp, out)
            else:
                with Archive(src) as archive:
                    if spec.get("dir"):
                        count = archive.extract_dir(spec["member"], Path(out))
                        if spec.get("images") and count != spec["images"]:
                            shutil.rmtree(out, ignore_errors=True)
                            raise DataError(f"{src}: {count:,} files under {spec['member']!r}, the publisher's set "
                                            f"has {spec['images']:,}")
                    else:
                        archive.extract_file(spec["member"], Path(out))
        if res.get("build"):
            build = res["build"]
            builder = BUILDERS.get(build.get("function"))
            if builder is None:
                raise ConfigError(f"{manifest['_path']}: resources.{name}.build.function: unknown builder "
                                  f"{build.get('function')!r} (known: {', '.join(BUILDERS)})")
            targets = {spec["build"]: out for out, spec in res["outputs"].items() if "build" in (spec or {})}
            builder(build, {k: str(v) for k, v in files.items()}, targets)
    except DataError as exc:
        removed = []
        for key, path in files.items():  # an unverified archive that fails must be downloaded again, not reused
            if not res["downloads"][key].get("sha256") and not lock.get(res["downloads"][key]["url"]):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path.name)
        if removed:
            raise DataError(f"{exc} (removed {', '.join(removed)}: the next run downloads it again)") from None
        raise
    for key, path in files.items():
        _record_if_new(res["downloads"][key], path, lock, log=log)
        if not keep_downloads:
            path.unlink()
    log(f"{name}: {', '.join(outputs)}")
    return outputs


# ============================================================================== verb
def add_arguments(parser) -> None:
    from optima.args import add_config_arguments
    from optima.tasks import task_names

    parser.add_argument("task", metavar="TASK", help=f"the task whose files to fetch: {', '.join(task_names())}, or 'all' "
                                                     "(every task of the config, and captions)")
    add_config_arguments(parser, config_help="config file whose data.official paths to fetch",
                         threads_help="accepted like every verb's (one thread)")
    parser.add_argument("--resource", action="append", default=[], metavar="NAME",
                        help="fetch only this manifest resource (what a workflow rule does); repeatable")
    parser.add_argument("--manifest", default=None, help=f"manifest file (default: the packaged one, or ${MANIFEST_ENV})")
    parser.add_argument("--mirror", default=None, help=f"base URL of a mirror replacing every URL's scheme:// "
                                                       f"(default: ${MIRROR_ENV})")
    parser.add_argument("--force", action="store_true", help="fetch again even when the outputs exist")
    parser.add_argument("--keep-downloads", action="store_true",
                        help=f"keep the downloaded archives under {DOWNLOAD_DIR}/ after unpacking")
    parser.add_argument("--retries", type=int, default=5, help="resumes after a dropped connection (default 5)")
    parser.add_argument("--list", action="store_true", help="print what would be fetched and what must be "
                                                            "supplied by hand, and download nothing")


def resources_for(task: str, config: dict, manifest: dict) -> list[str]:
    from optima.tasks import check_task

    tasks = list(dict.fromkeys(list(config["tasks"]) + ["captions"])) if task.casefold() == "all" else [check_task(task)]
    names = []
    for t in tasks:
        names += task_resources(manifest, config, t)
    return list(OrderedDict.fromkeys(names))


def _describe(name: str, res: dict) -> str:
    if "manual" in res:
        (folder,) = list(res["outputs"])
        state = "present" if os.path.isdir(folder) else "MISSING"
        return f"  {name} (by hand, {state}): {folder}/ <- {res['manual']['request']}"
    urls = ", ".join(d["url"] for d in res["downloads"].values())
    return f"  {name}: {urls} -> {', '.join(res['outputs'])}"


def run(args) -> int:
    from optima.config import load_config

    config = load_config(args.config, args.overrides)
    if config["data"]["source"] != "official" and not args.resource:
        raise ConfigError(f"{args.config}: data.source is {config['data']['source']!r}: nothing to fetch "
                          "(the official files are used with data.source: official)")
    manifest = load_manifest(args.manifest)
    names = list(args.resource) or resources_for(args.task, config, manifest)
    unknown = [n for n in names if n not in manifest["resources"]]
    if unknown:
        raise ConfigError(f"unknown fetch resource(s) {', '.join(unknown)} (known: {', '.join(manifest['resources'])})")
    if not names:
        print(f"optima fetch: {args.task}: the configured files are not made by any manifest resource "
              "(supplied by hand): nothing to fetch")
        return 0
    if args.list:
        print("\n".join(_describe(n, manifest["resources"][n]) for n in names))
        return 0
    # data sets behind request forms first: a missing folder is reported before hours of downloads
    manual = [n for n in names if "manual" in manifest["resources"][n]]
    absent = [n for n in manual if not os.path.isdir(next(iter(manifest["resources"][n]["outputs"])))]
    if absent and len(names) > 1:
        messages = [manual_missing_message(n, manifest["resources"][n], next(iter(manifest["resources"][n]["outputs"])),
                                           manifest["resources"][n]["manual"].get("images"), "folder not found")
                    for n in absent]
        raise DataError("supply these by hand first:\n  " + "\n  ".join(messages))
    start = time.perf_counter()
    for name in [n for n in names if n not in manual] + manual:
        fetch_resource(name, manifest, config, mirror=args.mirror, force=args.force,
                       keep_downloads=args.keep_downloads, retries=args.retries)
    print(f"optima fetch: {args.task}: {', '.join(names)} ready [{time.perf_counter() - start:.1f} s]")
    return 0
