"""URSAMLib.weights: integrity checks, safe loading, and the verified, resumable download.

The download tests serve files from a local HTTP server on 127.0.0.1 only.
"""
import hashlib
import http.server
import socket
import threading

import pytest
import torch

from URSAMLib.errors import URSAMError
from URSAMLib.weights import (KnownFile, download, load_state_dict, load_verified_state_dict, parse_sha256,
                              sha256_of, verify)

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
PAYLOAD_FILE = KnownFile("model.pth", hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD))


class Server:
    """Serves PAYLOAD with HTTP range support; can fail its first requests, drop the connection
    after some bytes on its first request, or serve other bytes."""

    def __init__(self, failures=0, body=PAYLOAD, drop_after=None):
        self.failures, self.body, self.ranges, self.drop_after = failures, body, [], drop_after
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.ranges.append(self.headers.get("Range"))
                if outer.failures > 0:
                    outer.failures -= 1
                    self.send_error(503)
                    return
                start = int(self.headers["Range"][6:-1]) if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(outer.body) - start))
                self.end_headers()
                if outer.drop_after is not None:  # announce everything, send part, hang up
                    self.wfile.write(outer.body[start:start + outer.drop_after])
                    outer.drop_after = None
                    return
                self.wfile.write(outer.body[start:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/model.pth"

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server(request):
    made = []

    def make(**kwargs):
        made.append(Server(**kwargs))
        return made[-1]

    yield make
    for s in made:
        s.close()


def with_url(url):
    return KnownFile(PAYLOAD_FILE.filename, PAYLOAD_FILE.sha256, PAYLOAD_FILE.size, url)


def test_sha256_and_verify(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(PAYLOAD)
    assert sha256_of(path) == hashlib.sha256(PAYLOAD).hexdigest()
    verify(path, PAYLOAD_FILE)
    path.write_bytes(PAYLOAD[:-1] + b"x")
    with pytest.raises(URSAMError, match="SHA-256"):
        verify(path, PAYLOAD_FILE)
    path.write_bytes(PAYLOAD[:100])
    with pytest.raises(URSAMError, match="truncated"):
        verify(path, PAYLOAD_FILE)


def test_state_dicts_load_plain_or_wrapped(tmp_path):
    state = {"layer.weight": torch.ones(2, 2)}
    for i, saved in enumerate([state, {"model": state}, {"state_dict": state, "epoch": 3}]):
        torch.save(saved, tmp_path / f"{i}.pth")
        assert torch.equal(load_state_dict(tmp_path / f"{i}.pth")["layer.weight"], torch.ones(2, 2))


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_that_carries_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"weight": torch.ones(1), "evil": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(URSAMError, match="contains code objects"):
        load_state_dict(tmp_path / "evil.pth")
    assert not marker.exists()


def test_a_non_checkpoint_file_is_refused(tmp_path):
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(URSAMError, match="not a PyTorch checkpoint"):
        load_state_dict(tmp_path / "notes.pth")


def test_download_verifies_and_installs(tmp_path, server):
    s = server()
    path = download(with_url(s.url), tmp_path)
    assert path.read_bytes() == PAYLOAD and path.name == "model.pth"
    assert not (tmp_path / "model.pth.part").exists()


def test_download_resumes_a_partial_file(tmp_path, server):
    s = server()
    (tmp_path / "model.pth.part").write_bytes(PAYLOAD[:300_000])
    path = download(with_url(s.url), tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert s.ranges == ["bytes=300000-"]


def test_download_retries_after_server_errors(tmp_path, server):
    s = server(failures=2)
    assert download(with_url(s.url), tmp_path, retries=3).read_bytes() == PAYLOAD
    assert len(s.ranges) == 3


def test_download_of_wrong_bytes_leaves_nothing_behind(tmp_path, server):
    s = server(body=b"x" * len(PAYLOAD))
    with pytest.raises(URSAMError, match="SHA-256"):
        download(with_url(s.url), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_failure_is_one_clear_error(tmp_path, server):
    s = server(failures=10)
    with pytest.raises(URSAMError, match="Could not download"):
        download(with_url(s.url), tmp_path, retries=1)


def test_present_weights_never_touch_the_network(tmp_path, monkeypatch):
    (tmp_path / "model.pth").write_bytes(PAYLOAD)

    def no_network(*args, **kwargs):
        raise AssertionError("network used")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert download(with_url("http://127.0.0.1:9/never"), tmp_path).read_bytes() == PAYLOAD


def test_weights_without_a_known_address_are_not_downloadable(tmp_path):
    with pytest.raises(URSAMError, match="no download address"):
        download(KnownFile("medsam_vit_b.pth"), tmp_path)


def test_a_checkpoint_cut_short_is_a_clear_error(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"layer.weight": torch.ones(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(URSAMError, match="is damaged .e.g. cut short."):
        load_state_dict(path)


def test_a_pinned_sha256_is_checked_on_the_bytes_that_are_loaded(tmp_path):
    path = tmp_path / "mine.pth"
    torch.save({"layer.weight": torch.ones(2, 2)}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    state, found = load_verified_state_dict(path, [KnownFile("mine.pth", digest)])
    assert found == digest and torch.equal(state["layer.weight"], torch.ones(2, 2))
    torch.save({"layer.weight": torch.zeros(2, 2)}, path)  # same name, other weights: tampered
    with pytest.raises(URSAMError, match="fails its SHA-256 check"):
        load_verified_state_dict(path, [KnownFile("mine.pth", digest)])
    assert parse_sha256(digest.upper() + "\n") == digest
    for bad in ("abc", digest[:-1] + "g", ""):
        with pytest.raises(URSAMError, match="is not a SHA-256"):
            parse_sha256(bad)


def test_a_connection_dropped_mid_file_is_resumed_on_the_next_try(tmp_path, server):
    s = server(drop_after=400_000)
    assert download(with_url(s.url), tmp_path, retries=2).read_bytes() == PAYLOAD
    assert s.ranges == [None, "bytes=400000-"]


def test_a_server_sending_too_much_is_stopped_and_leaves_nothing(tmp_path, server):
    s = server(body=PAYLOAD + b"x" * (3 << 20))
    with pytest.raises(URSAMError, match="sends more than the 1,048,576 bytes expected"):
        download(with_url(s.url), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_tampered_cached_file_is_set_aside_and_fetched_again(tmp_path, server):
    (tmp_path / "model.pth").write_bytes(PAYLOAD[:-1] + b"x")
    s = server()
    assert download(with_url(s.url), tmp_path).read_bytes() == PAYLOAD
    assert (tmp_path / "model.pth.rejected").read_bytes() == PAYLOAD[:-1] + b"x"


def test_the_socket_guard_used_by_the_no_network_tests_really_blocks(monkeypatch, server):
    import urllib.request

    import no_network

    s = server()  # started before the guard: its listening socket exists already
    no_network.attempts.clear()
    no_network.block(monkeypatch.setattr)
    with pytest.raises(OSError):
        urllib.request.urlopen(s.url, timeout=5)
    assert no_network.attempts and s.ranges == []
    no_network.attempts.clear()
