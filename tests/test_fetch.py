"""Data acquisition (`optima fetch`, workflow/rules/fetch.smk) against a local HTTP server.

The tests serve small archives in the official layouts from 127.0.0.1 (started and stopped by the test,
with HTTP Range support and fault injection) through a test manifest shaped like the real one, and run
the same code the paper-scale workflow runs: a clean download, a download cut halfway and resumed with
Range, a corrupted file rejected, a truncated archive, a manual data set missing and then supplied.
The packaged manifest itself is checked for the fields a lab relies on.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from optima.data import fetch
from optima.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# ============================================================================== local server
class Server:
    """Files by URL path; `cut[path] = n` sends the full Content-Length but only n bytes, then drops
    the connection (once); every request is logged as (path, Range header or None, bytes sent)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.no_length: set[str] = set()  # paths sent without Content-Length (the body ends when the connection closes)
        self.ignore_range = False
        self.log: list[tuple[str, str | None, int]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path not in server.files:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    server.log.append((path, self.headers.get("Range"), 0))
                    return
                data = server.files[path]
                header = self.headers.get("Range")
                if path in server.no_length:  # no length, no Range support: what some servers do
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                    self.close_connection = True
                    server.log.append((path, header, len(data)))
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", header or "")
                if match and not server.ignore_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        server.log.append((path, header, 0))
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if path in server.cut:
                    body = body[: server.cut.pop(path)]
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    server.log.append((path, header, len(body)))
                    return
                self.wfile.write(body)
                server.log.append((path, header, len(body)))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def sent(self, path: str) -> list[tuple[str | None, int]]:
        return [(rng, n) for p, rng, n in self.log if p == path]


@pytest.fixture
def server():
    with Server() as srv:
        yield srv


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# ============================================================================== small official-shaped data
SNLI_IMAGES = {"test": ["100"], "train": ["201", "202"], "dev": ["203"]}


def snli_files() -> dict[str, bytes]:
    def line(image, k, label="entailment", pair=None):
        return json.dumps({"gold_label": label, "pairID": pair or f"{image}.jpg#{k}r1e",
                           "sentence1": "a premise", "sentence2": f"hypothesis {image} {k}"})

    jsonl = {
        "train": [line("201", 0), line("201", 1, "contradiction"), line("202", 0, "neutral"), line("202", 1, "-"),
                  line("vg_1", 0, pair="vg_1.jpg#0r1e")],
        "dev": [line("203", 0)],
        "test": [line("100", 0), line("100", 1, "neutral")],
    }
    snli = zip_bytes({f"snli_1.0/snli_1.0_{split}.jsonl": ("\n".join(lines) + "\n").encode()
                      for split, lines in jsonl.items()})
    return {"snli": snli, "test_list": b"100\n", "train_val_list": b"201\n202\n203"}


NLVR2 = {
    split: "".join(json.dumps({"identifier": f"{split}-{k}-0-0", "sentence": f"sentence {k}", "label": "True",
                               "left_url": "http://x", "right_url": "http://y"}) + "\n" for k in range(n)).encode()
    for split, n in (("train", 40), ("dev", 3), ("test1", 3))
}


def karpathy_zip() -> bytes:
    images = []
    for k, split in enumerate(["train", "restval", "val", "test"]):
        images.append({"filepath": "val2014", "filename": f"COCO_val2014_{k:012d}.jpg", "cocoid": k, "split": split,
                       "sentences": [{"raw": f"A caption {k}.", "tokens": ["a"], "sentid": 10 * k, "imgid": k}]})
    return zip_bytes({"dataset_coco.json": json.dumps({"images": images, "dataset": "coco"}).encode()})


def coco_zip(n: int = 4) -> bytes:
    return zip_bytes({f"val2014/COCO_val2014_{k:012d}.jpg": b"\xff\xd8fake" for k in range(n)})


def make_manifest(tmp_path: Path, server: Server, *, corrupt: str | None = None) -> tuple[Path, dict]:
    """A manifest shaped like optima/data/manifest.yaml (same resource and output names) whose URLs
    point at example.org, served by `server` through the mirror setting."""
    snli = snli_files()
    files = {
        "/example.org/snli/snli_1.0.zip": snli["snli"],
        "/example.org/snli-ve/flickr30k_test.lst": snli["test_list"],
        "/example.org/snli-ve/flickr30k_train_val.lst": snli["train_val_list"],
        "/example.org/coco/val2014.zip": coco_zip(),
        "/example.org/karpathy/caption_datasets.zip": karpathy_zip(),
        **{f"/example.org/nlvr2/{split}.json": data for split, data in NLVR2.items()},
    }
    digests = {path: sha(data) for path, data in files.items()}
    if corrupt:  # the server's bytes differ from what the manifest states
        files[corrupt] = files[corrupt][:-1] + bytes([files[corrupt][-1] ^ 1])
    server.files.update(files)

    def dl(path, checksum=True, size=True):
        return {"url": f"https://example.org{path[len('/example.org'):]}",
                "size": len(files[path]) if size else None, "sha256": digests[path] if checksum else None}

    manifest = {
        "version": 1,
        "lock": "data/fetch.lock.yaml",
        "resources": {
            "coco_val2014": {
                "licence": "https://cocodataset.org/#termsofuse",
                "downloads": {"val2014": dl("/example.org/coco/val2014.zip", checksum=False, size=False)},
                "outputs": {"data/raw/coco/images/val2014": {"from": "val2014", "member": "val2014/", "dir": True,
                                                             "images": 4}},
            },
            "coco_karpathy": {
                "licence": "https://cs.stanford.edu/people/karpathy/deepimagesent/",
                "downloads": {"caption_datasets": dl("/example.org/karpathy/caption_datasets.zip", checksum=False)},
                "build": {"function": "karpathy_coco",
                          "source": {"from": "caption_datasets", "member": "dataset_coco.json"},
                          "splits": {"train": ["train", "restval"], "val": ["val"], "test": ["test"]}},
                "outputs": {f"data/raw/coco/karpathy/captions_{s}.json": {"build": s} for s in ("train", "val", "test")},
            },
            "snli_ve": {
                "licence": "https://nlp.stanford.edu/projects/snli/",
                "downloads": {"snli": dl("/example.org/snli/snli_1.0.zip", checksum=False),
                              "test_list": dl("/example.org/snli-ve/flickr30k_test.lst"),
                              "train_val_list": dl("/example.org/snli-ve/flickr30k_train_val.lst")},
                "build": {"function": "snli_ve",
                          "source": {s: {"from": "snli", "member": f"snli_1.0/snli_1.0_{s}.jsonl"}
                                     for s in ("train", "dev", "test")},
                          "test_list": "test_list", "train_val_list": "train_val_list", "dev_images": 1},
                "outputs": {f"data/raw/snli_ve/snli_ve_{s}.jsonl": {"build": s} for s in ("train", "dev", "test")},
            },
            "flickr30k": {
                "licence": "https://shannon.cs.illinois.edu/DenotationGraph/",
                "manual": {"request": "https://shannon.cs.illinois.edu/DenotationGraph/",
                           "instructions": "unpack flickr30k-images.tar.gz here", "images": 5},
                "outputs": {"data/raw/flickr30k/flickr30k-images": {"dir": True}},
            },
            "nlvr2": {
                "licence": "https://lil.nlp.cornell.edu/nlvr/",
                "downloads": {s: dl(f"/example.org/nlvr2/{s}.json", checksum=(s != "train"))
                              for s in ("train", "dev", "test1")},
                "outputs": {f"data/raw/nlvr2/{s}.json": {"from": s} for s in ("train", "dev", "test1")},
            },
        },
    }
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path, files


def work_copy(tmp_path: Path, tasks: list[str]) -> Path:
    """The workflow files in a temporary directory, with config/paper.yaml limited to `tasks`."""
    work = tmp_path / "wf"
    work.mkdir()
    for name in ("Snakefile", "workflow", "config", "params.yaml", "environment.yml"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, work / name)
    config = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    config["tasks"] = tasks
    (work / "config/test.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return work


def env_for(server: Server, manifest: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    env[fetch.MANIFEST_ENV] = str(manifest)
    env[fetch.MIRROR_ENV] = server.base
    return env


def run(cmd: list[str], work: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def snakemake(work: Path, env: dict, *targets: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(BIN / "snakemake"), "--cores", "2", "--configfile", "config/test.yaml", "--", *targets],
               work, env, check)


def logs(work: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((work / "logs").rglob("*.log")))


# ============================================================================== end to end through Snakemake
@pytest.mark.very_slow  # a Snakemake run of the fetch and prepare rules
def test_fetch_rules_end_to_end(tmp_path, server):
    """Clean download and build, a manual data set missing (clear message) then supplied, then
    `prepare` on the fetched files; nothing half-written along the way."""
    manifest, _ = make_manifest(tmp_path, server)
    work = work_copy(tmp_path, ["snli_ve"])
    env = env_for(server, manifest)
    outputs = [f"data/raw/snli_ve/snli_ve_{s}.jsonl" for s in ("train", "dev", "test")]

    # 1. clean download + build: SNLI-VE as necla-ml/SNLI-VE's generator writes it
    snakemake(work, env, *outputs)
    train = [json.loads(line) for line in (work / outputs[0]).read_text().splitlines()]
    assert [r["Flickr30K_ID"] for r in train] == ["201", "201", "202"]  # no '-' label, no vg_ premise
    assert list(train[0]) == sorted(train[0])
    assert [json.loads(x)["Flickr30K_ID"] for x in (work / outputs[1]).read_text().splitlines()] == ["203"]
    assert len((work / outputs[2]).read_text().splitlines()) == 2
    lock = yaml.safe_load((work / "data/fetch.lock.yaml").read_text())  # no published checksum: recorded
    (entry,) = lock.values()
    assert entry["sha256"] == sha(server.files["/example.org/snli/snli_1.0.zip"])
    assert not list((work / "data/raw/.downloads").iterdir())  # archives removed after unpacking

    # 2. the manual data set is missing: prepare never starts; the message says what, where, how many
    proc = snakemake(work, env, "data/processed/paper/snli_ve", check=False)
    assert proc.returncode != 0
    text = logs(work)
    assert "data/raw/flickr30k/flickr30k-images: folder not found" in text
    assert "https://shannon.cs.illinois.edu/DenotationGraph/" in text and "Expected: 5 images" in text
    assert not (work / "data/processed/paper/snli_ve").exists()
    assert not (work / "data/raw/flickr30k/flickr30k-images.verified.json").exists()

    # 3. supplied but incomplete: the first missing images are named
    folder = work / "data/raw/flickr30k/flickr30k-images"
    folder.mkdir(parents=True)
    for image in ("100", "201", "202"):
        (folder / f"{image}.jpg").write_bytes(b"\xff\xd8")
    proc = snakemake(work, env, "data/processed/paper/snli_ve", check=False)
    assert proc.returncode != 0
    assert re.search(r"1 of the 4 images the annotation files reference are missing .*203\.jpg", logs(work))

    # 4. complete (a sub-folder, as some archives unpack): verified, then prepared from the fetched files
    (folder / "more").mkdir()
    (folder / "more" / "203.jpg").write_bytes(b"\xff\xd8")
    (folder / "9999.jpg").write_bytes(b"\xff\xd8")
    snakemake(work, env, "data/processed/paper/snli_ve")
    record = json.loads((work / "data/raw/flickr30k/flickr30k-images.verified.json").read_text())
    assert record["images"] == 5 and record["referenced_images"] == 4
    prepared = json.loads((work / "data/processed/paper/snli_ve/prepared.json").read_text())
    assert prepared["splits"]["train"]["examples"] == 3 and prepared["splits"]["test"]["examples"] == 2
    assert not list(work.rglob("*.part")) and not list(work.rglob("*.tmp"))


def test_interrupted_download_is_resumed_with_range(tmp_path, server):
    """Cut halfway: by the same process (retry) and, with no retries, by the next run, never from 0."""
    manifest, files = make_manifest(tmp_path, server)
    work = work_copy(tmp_path, ["nlvr2"])
    env = env_for(server, manifest)
    path = "/example.org/nlvr2/train.json"
    size, half = len(files[path]), len(files[path]) // 2

    # the rule: the connection drops halfway, the fetch resumes at that byte in the same job
    server.cut[path] = half
    snakemake(work, env, "data/raw/nlvr2/train.json")
    assert server.sent(path) == [(None, half), (f"bytes={half}-", size - half)]
    assert (work / "data/raw/nlvr2/train.json").read_bytes() == files[path]

    # the verb, killed halfway (no retries): only a .part file stays, the next run resumes it
    (work / "data/raw/nlvr2/dev.json").unlink()
    dev = "/example.org/nlvr2/dev.json"
    server.cut[dev] = 100
    cmd = ["optima", "fetch", "nlvr2", "--config", "config/test.yaml", "--resource", "nlvr2", "--retries", "0"]
    proc = run(cmd, work, env, check=False)
    assert proc.returncode == 2 and "download interrupted at byte 100" in proc.stderr and "resume" in proc.stderr
    assert not (work / "data/raw/nlvr2/dev.json").exists()
    assert (work / "data/raw/.downloads/dev.json.part").stat().st_size == 100
    run(cmd, work, env)
    assert server.sent(dev)[-1] == ("bytes=100-", len(files[dev]) - 100)
    assert (work / "data/raw/nlvr2/dev.json").read_bytes() == files[dev]
    assert not (work / "data/raw/.downloads/dev.json.part").exists()


def test_corrupted_download_is_rejected_and_removed(tmp_path, server):
    manifest, _ = make_manifest(tmp_path, server, corrupt="/example.org/nlvr2/dev.json")
    work = work_copy(tmp_path, ["nlvr2"])
    env = env_for(server, manifest)
    proc = snakemake(work, env, "data/raw/nlvr2/dev.json", check=False)
    assert proc.returncode != 0
    expected = yaml.safe_load(manifest.read_text())["resources"]["nlvr2"]["downloads"]["dev"]["sha256"]
    found = sha(server.files["/example.org/nlvr2/dev.json"])
    message = logs(work)
    assert "data/raw/.downloads/dev.json: checksum mismatch" in message
    assert f"expected SHA-256 {expected}, found {found}" in message and "the file was removed" in message
    assert not (work / "data/raw/nlvr2/dev.json").exists()
    assert not list((work / "data/raw/.downloads").glob("dev.json*"))


# ============================================================================== the verb and the library
def test_fetch_all_lists_what_to_supply_by_hand_before_downloading(tmp_path, server):
    manifest, _ = make_manifest(tmp_path, server)
    work = work_copy(tmp_path, ["snli_ve", "nlvr2"])
    env = env_for(server, manifest)
    listed = run(["optima", "fetch", "all", "--config", "config/test.yaml", "--list"], work, env).stdout
    assert "flickr30k (by hand, MISSING): data/raw/flickr30k/flickr30k-images/" in listed
    assert "https://example.org/snli/snli_1.0.zip" in listed and not server.log
    proc = run(["optima", "fetch", "snli_ve", "--config", "config/test.yaml"], work, env, check=False)
    assert proc.returncode == 2 and "supply these by hand first" in proc.stderr
    assert "data/raw/flickr30k/flickr30k-images: folder not found" in proc.stderr
    assert not server.log  # nothing downloaded before the manual check


def test_truncated_archive_is_a_clear_error_and_not_recorded(tmp_path, server):
    """The publisher's archive itself is cut (no checksum to catch it): the unpacking fails, the
    download is removed, no checksum is recorded, no output appears."""
    manifest, files = make_manifest(tmp_path, server)
    path = "/example.org/coco/val2014.zip"
    server.files[path] = files[path][: len(files[path]) // 2]
    work = work_copy(tmp_path, ["captions"])
    env = env_for(server, manifest)
    proc = run(["optima", "fetch", "captions", "--config", "config/test.yaml", "--resource", "coco_val2014"],
               work, env, check=False)
    assert proc.returncode == 2
    assert "data/raw/.downloads/val2014.zip: " in proc.stderr and "truncated or corrupt" in proc.stderr
    assert not (work / "data/raw/coco/images/val2014").exists()
    assert not (work / "data/raw/.downloads/val2014.zip").exists()
    assert not (work / "data/fetch.lock.yaml").exists()
    # the good archive: unpacked whole, its image count checked, its checksum recorded
    server.files[path] = files[path]
    run(["optima", "fetch", "captions", "--config", "config/test.yaml", "--resource", "coco_val2014",
         "--resource", "coco_karpathy"], work, env)
    assert len(list((work / "data/raw/coco/images/val2014").iterdir())) == 4
    test = json.loads((work / "data/raw/coco/karpathy/captions_test.json").read_text())
    train = json.loads((work / "data/raw/coco/karpathy/captions_train.json").read_text())
    assert [i["id"] for i in train["images"]] == [0, 1]  # train + restval
    assert test["images"] == [{"id": 3, "file_name": "COCO_val2014_000000000003.jpg"}]
    assert test["annotations"] == [{"image_id": 3, "id": 30, "caption": "A caption 3."}]
    assert set(yaml.safe_load((work / "data/fetch.lock.yaml").read_text())) == {
        "https://example.org/coco/val2014.zip", "https://example.org/karpathy/caption_datasets.zip"}


def test_recorded_checksum_is_enforced_on_later_downloads(tmp_path, server):
    manifest, files = make_manifest(tmp_path, server)
    lock = fetch.Lock(tmp_path / "lock.yaml")
    url = "https://example.org/nlvr2/train.json"
    lock.record(url, "0" * 64, len(files["/example.org/nlvr2/train.json"]))
    dl = {"url": url, "size": None, "sha256": None}
    with pytest.raises(DataError) as err:
        fetch.fetch_download("train", dl, lock, server.base, tmp_path / "dl", log=lambda *_: None)
    assert f"expected SHA-256 {'0' * 64}" in str(err.value) and str(lock.path) in str(err.value)
    assert not list((tmp_path / "dl").iterdir())


def test_server_that_ignores_range_restarts_cleanly(tmp_path, server):
    data = os.urandom(50_000)
    server.files["/f.bin"] = data
    part = tmp_path / "f.bin.part"
    part.write_bytes(b"garbage-prefix")
    server.ignore_range = True
    digest = fetch.download(f"{server.base}/f.bin", tmp_path / "f.bin", size=len(data), sha256=sha(data),
                            log=lambda *_: None)
    assert digest == sha(data) and (tmp_path / "f.bin").read_bytes() == data and not part.exists()


def test_size_mismatch_names_both_sizes(tmp_path, server):
    server.files["/f.bin"] = b"x" * 10
    with pytest.raises(DataError, match="has 10 bytes, the manifest expects 11"):
        fetch.download(f"{server.base}/f.bin", tmp_path / "f.bin", size=11, log=lambda *_: None)
    assert not (tmp_path / "f.bin").exists()


def test_mirror_rewrites_every_url():
    assert fetch.resolve_url("http://images.cocodataset.org/zips/val2014.zip", "http://m:8/") == \
        "http://m:8/images.cocodataset.org/zips/val2014.zip"
    assert fetch.resolve_url("https://a/b", "") == "https://a/b"


# ============================================================================== the packaged manifest
def test_packaged_manifest_covers_every_file_of_the_paper_config():
    from optima.config import load_config

    manifest = fetch.load_manifest(fetch.manifest_path(None) if not os.environ.get(fetch.MANIFEST_ENV) else None)
    config = load_config(ROOT / "config/paper.yaml")
    for task in config["tasks"]:
        for path in fetch.config_paths(config, task):
            assert fetch.match_path(manifest, path), f"data.official.{task}: {path} is made by no manifest resource"
    for name, res in manifest["resources"].items():
        assert res["licence"].startswith("https://"), name
        for key, dl in (res.get("downloads") or {}).items():
            assert dl["url"].startswith(("http://", "https://")), (name, key)
            assert "size" in dl and "sha256" in dl, (name, key)  # null is a statement: recorded after download
        if "manual" in res:
            assert res["manual"]["request"] and res["manual"]["instructions"], name
    hosts = {dl["url"].split("/")[2] for res in manifest["resources"].values() for dl in (res.get("downloads") or {}).values()}
    assert hosts == {"images.cocodataset.org", "cs.stanford.edu", "s3.amazonaws.com", "nlp.stanford.edu",
                     "raw.githubusercontent.com"}
    assert {name for name, res in manifest["resources"].items() if "manual" in res} == {"flickr30k", "nlvr2_images"}


# ============================================================================== first downloads without a checksum
def _lengthless_manifest(tmp_path, server, records=40, blob=None):
    """The test manifest with NLVR2's train.json as the paper's manifest has it: no checksum, no size (plus a
    record count, or a git blob SHA-1), served without a Content-Length."""
    manifest, files = make_manifest(tmp_path, server)
    doc = yaml.safe_load(manifest.read_text())
    train = doc["resources"]["nlvr2"]["downloads"]["train"]
    train.update({"size": None, "sha256": None, "records": records})
    if blob:
        train["git_blob_sha1"] = blob
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    server.no_length.add("/example.org/nlvr2/train.json")
    return manifest, files


@pytest.mark.parametrize("cut", ["mid-line", "line-end"])
def test_truncated_lengthless_download_fails_without_writing_the_lock(tmp_path, server, cut):
    """A server that sends no Content-Length and cuts the body: the first download of a file without a published
    checksum or size is checked by its content (JSON lines parse, the record count matches); a cut file fails
    naming the file and how to retry, nothing is recorded in the lock, nothing is left behind. The whole file
    then passes and is recorded."""
    manifest, files = _lengthless_manifest(tmp_path, server)
    path = "/example.org/nlvr2/train.json"
    full = files[path]
    end = 500 if cut == "mid-line" else full.index(b"\n", 500) + 1
    server.files[path] = full[:end]
    work = work_copy(tmp_path, ["nlvr2"])
    env = env_for(server, manifest)
    cmd = ["optima", "fetch", "nlvr2", "--config", "config/test.yaml", "--resource", "nlvr2"]
    proc = run(cmd, work, env, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = proc.stderr
    assert "train.json (https://example.org/nlvr2/train.json): sent without a Content-Length" in message
    assert ("is not valid JSON" in message) if cut == "mid-line" else ("records, the manifest expects 40" in message)
    assert "nothing was recorded in data/fetch.lock.yaml" in message and "Run the same command again" in message
    assert not (work / "data/fetch.lock.yaml").exists()
    assert not (work / "data/raw/nlvr2/train.json").exists()
    assert not list((work / "data/raw/.downloads").glob("train.json*"))

    server.files[path] = full  # the whole file, still without a length: its content checks out
    run(cmd, work, env)
    lock = yaml.safe_load((work / "data/fetch.lock.yaml").read_text())
    assert lock["https://example.org/nlvr2/train.json"]["sha256"] == sha(full)
    assert lock["https://example.org/nlvr2/train.json"]["size"] == len(full)
    assert (work / "data/raw/nlvr2/train.json").read_bytes() == full


def test_lengthless_archive_is_checked_member_by_member(tmp_path, server):
    manifest, files = make_manifest(tmp_path, server)
    path = "/example.org/coco/val2014.zip"
    server.no_length.add(path)
    server.files[path] = files[path][:-30]  # the end of the central directory is cut off
    info: dict = {}
    dest = tmp_path / "dl" / "val2014.zip"
    fetch.download(f"{server.base}{path}", dest, log=lambda *_: None, info=info)
    assert info["size_from"] is None  # nothing confirmed the size: the content must
    assert "truncated or corrupt archive" in fetch.content_check(dest, {})
    good = tmp_path / "good.zip"
    good.write_bytes(files[path])
    assert fetch.content_check(good, {}) is None
    bad = bytearray(files[path])
    bad[40] ^= 0xFF  # a member's data: its CRC no longer matches
    (tmp_path / "bad.zip").write_bytes(bytes(bad))
    assert fetch.content_check(tmp_path / "bad.zip", {}) is not None


def test_a_pinned_git_blob_checks_the_first_download(tmp_path, server):
    """NLVR2's train.json has no published SHA-256, but the pinned commit's tree names its git blob SHA-1: the
    first download must match it (a cut or changed file fails before anything is recorded)."""
    import hashlib

    path = "/example.org/nlvr2/train.json"
    _, files = make_manifest(tmp_path, server)
    blob = hashlib.sha1(b"blob %d\0" % len(files[path]) + files[path]).hexdigest()
    manifest, _ = _lengthless_manifest(tmp_path, server, records=None, blob=blob)
    server.files[path] = files[path][:-1] + b"]"  # same length, other bytes
    lock = fetch.Lock(tmp_path / "lock.yaml")
    dl = yaml.safe_load(manifest.read_text())["resources"]["nlvr2"]["downloads"]["train"]
    with pytest.raises(DataError, match=f"expected git blob SHA-1 {blob}"):
        fetch.fetch_download("train", dl, lock, server.base, tmp_path / "dl", log=lambda *_: None)
    assert not lock.path.exists() and not list((tmp_path / "dl").iterdir())
    server.files[path] = files[path]
    fetch.fetch_download("train", dl, lock, server.base, tmp_path / "dl", log=lambda *_: None)
    assert fetch.git_blob_sha1(tmp_path / "dl" / "train.json") == blob


def test_packaged_manifest_pins_what_its_sources_make_computable():
    """Every file at a pinned git commit has a checksum: a SHA-256 computed from its bytes, or (NLVR2's train.json,
    whose bytes we could not fetch) the git blob SHA-1 the commit's tree states, with its record count."""
    manifest = fetch.load_manifest(fetch.manifest_path(None) if not os.environ.get(fetch.MANIFEST_ENV) else None)
    for name, res in manifest["resources"].items():
        for key, dl in (res.get("downloads") or {}).items():
            if re.search(r"/[0-9a-f]{40}/", dl["url"]):  # raw.githubusercontent.com/<owner>/<repo>/<commit>/...
                assert dl["sha256"] or dl.get("git_blob_sha1"), (name, key)
    train = manifest["resources"]["nlvr2"]["downloads"]["train"]
    assert train["git_blob_sha1"] == "affca2ee36563123e069f92e7c391000952e257c" and train["records"] == 86373

