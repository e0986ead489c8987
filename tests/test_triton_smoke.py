"""The real tritonserver starts, loads a Python-backend model and computes the right answer."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from wsi_tumor.errors import ServerError
from wsi_tumor.serving.local_server import LocalTritonServer

pytestmark = pytest.mark.triton

AFFINE_CONFIG = """
name: "affine"
backend: "python"
max_batch_size: 8
input [ { name: "X", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "Y", data_type: TYPE_FP32, dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""

AFFINE_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            y = (x * 3.0 + 0.5).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y)]))
        return responses
"""


@pytest.fixture(scope="module")
def affine_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("smoke_repository")
    (root / "affine" / "1").mkdir(parents=True)
    (root / "affine" / "config.pbtxt").write_text(textwrap.dedent(AFFINE_CONFIG))
    (root / "affine" / "1" / "model.py").write_text(textwrap.dedent(AFFINE_MODEL))
    return root


def test_python_backend_computes_values(triton_server_factory, affine_repository) -> None:
    import tritonclient.grpc as grpcclient

    server = triton_server_factory(affine_repository)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    inp = grpcclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("affine", [inp], outputs=[grpcclient.InferRequestedOutput("Y")])
    y = result.as_numpy("Y")
    # numpy 2 in the backend's environment makes this tensor silently empty.
    assert y is not None and y.shape == (2, 4)
    np.testing.assert_allclose(y, x * 3.0 + 0.5)


def test_embedded_server_listens_on_loopback_only_with_restricted_apis(
    triton_server_factory, affine_repository
) -> None:
    """What wsi-infer starts by itself: 127.0.0.1 only, no metrics port, admin APIs locked."""
    import urllib.error
    import urllib.request

    import psutil
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    server = triton_server_factory(affine_repository)
    assert server.pid is not None
    tree = {server.pid, *(p.pid for p in psutil.Process(server.pid).children(recursive=True))}
    listening = {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in tree
    }
    assert {port for _, port in listening} == {server.http_port, server.grpc_port}
    assert {ip for ip, _ in listening} <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_model_ready("affine")  # what the client needs stays open
    with pytest.raises(InferenceServerException, match="restricted"):
        client.get_model_repository_index()
    with pytest.raises(InferenceServerException, match="restricted"):
        client.unregister_system_shared_memory()
    assert client.get_model_repository_index(headers=server.admin_headers)
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(f"http://{server.http_url}/v2/repository/index", data=b"{}")


def test_server_stop_ends_process_group(affine_repository: Path) -> None:
    server = LocalTritonServer(affine_repository).start()
    pid = server._process.pid if server._process else -1
    server.stop()
    assert not server.running
    with pytest.raises(ProcessLookupError):
        import os

        os.killpg(pid, 0)


def test_a_killed_server_leaves_no_shared_memory_behind(affine_repository: Path) -> None:
    from wsi_tumor.serving.local_server import shm_regions

    server = LocalTritonServer(affine_repository).start()
    assert server.pid is not None
    regions = shm_regions(server.pid)
    assert regions and all(path.exists() for path in regions)  # one per Python-backend stub
    server.kill()  # SIGKILL: tritonserver cannot unlink them itself
    assert not any(path.exists() for path in regions)


def test_regions_of_a_server_killed_from_outside_are_swept_at_the_next_start(
    affine_repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from wsi_tumor.serving.local_server import shm_regions
    from wsi_tumor.serving.memory import STALE_AFTER_S

    first = LocalTritonServer(affine_repository).start()
    assert first.pid is not None
    regions = shm_regions(first.pid)
    group = [psutil.Process(first.pid), *psutil.Process(first.pid).children(recursive=True)]
    os.killpg(first.pid, signal.SIGKILL)  # from outside (the OOM killer): nothing cleans up
    psutil.wait_procs(group, timeout=30)
    assert regions and all(path.exists() for path in regions)
    earlier = time.time() - 2 * STALE_AFTER_S  # as if killed a while ago
    for path in regions:
        os.utime(path, (earlier, earlier))
    with caplog.at_level("WARNING"), LocalTritonServer(affine_repository) as second:
        assert second.pid is not None
        live = shm_regions(second.pid)
        assert not any(path.exists() for path in regions)
        assert live and all(path.exists() for path in live) and not set(live) & set(regions)
    assert f"removed {len(regions)} Python-backend pool region(s) of killed servers" in caplog.text
    first.stop()


def test_missing_repository_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="does not exist"):
        LocalTritonServer(tmp_path / "nope").start()


def test_broken_model_fails_start_with_log(tmp_path: Path) -> None:
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "config.pbtxt").write_text('name: "broken"\nbackend: "python"\n')
    (tmp_path / "broken" / "1" / "model.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ServerError, match="broken"):
        LocalTritonServer(tmp_path, ready_timeout_s=60).start()
