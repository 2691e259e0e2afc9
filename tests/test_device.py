"""The learner's device choice, with CUDA's presence faked: no GPU needed."""

import pytest
import torch

from learners.config import ConfigError
from learners.device import resolve_device


@pytest.fixture
def gpus(monkeypatch):
    """Fake a CUDA build of torch that sees ``n`` GPUs (0: a CUDA build without a GPU)."""
    def fake(n: int, build: str | None = "12.8"):
        monkeypatch.setattr(torch.version, "cuda", build)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: build is not None and n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n if build else 0)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: f"Fake GPU {i}")
    return fake


def test_auto_takes_the_gpu_when_torch_can_use_one(gpus, capsys):
    gpus(2)
    assert resolve_device("auto") == torch.device("cuda")
    assert "auto -> cuda (Fake GPU 0" in capsys.readouterr().err  # the run says what it chose
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("build, why", [(None, "CPU-only build"), ("12.8", "sees no usable GPU")])
def test_auto_falls_back_to_the_cpu_and_cuda_says_why_not(gpus, capsys, build, why):
    gpus(0, build)
    assert resolve_device("auto") == torch.device("cpu")
    assert why in capsys.readouterr().err
    with pytest.raises(ConfigError, match=f"device: 'cuda' asked for, but .*{why}.*device: cpu"):
        resolve_device("cuda")


def test_a_missing_gpu_index_and_unknown_names_are_errors(gpus):
    gpus(2)
    with pytest.raises(ConfigError, match=r"has 2 CUDA device\(s\) \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")
    for bad in ("gpu", "cuda:x", ""):
        with pytest.raises(ConfigError, match="use auto, cpu, cuda or cuda:N"):
            resolve_device(bad)


def test_machine_report_names_the_torch_build_and_every_egl_device(gpus, capsys):
    import importlib.util
    from pathlib import Path

    from envs.gl import create_context, describe

    path = Path(__file__).resolve().parents[1] / "scripts" / "machine_report.py"
    spec = importlib.util.spec_from_file_location("machine_report", path)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    gpus(0, None)
    t = report.torch_report()
    assert t["cuda_build"] is None and "CPU-only" in t["cuda_problem"] and t["auto"].startswith("cpu")
    devices, error = report.egl_devices()
    assert error is None and [d["index"] for d in devices] == list(range(len(devices)))
    ctx = create_context(device_index=0)
    assert devices[0]["renderer"] == describe(ctx)["renderer"]
    ctx.release()
    assert report.main([]) == 0
    out = capsys.readouterr().out
    assert "CPU-only build" in out and f"EGL device 0: {devices[0]['renderer']}" in out


def test_only_is_available_faked_is_enough(monkeypatch, capsys):
    """What torch.cuda.is_available says decides, even on a CPU build that cannot name a GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert "auto -> cuda" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device: 'cuda' asked for"):
        resolve_device("cuda")


@pytest.mark.parametrize("kw", [{}, {"read_colours": True, "rotation": True, "rotation_hypotheses": 4}])
def test_the_mesh_model_makes_every_tensor_on_its_own_device(kw):
    # PyTorch's "meta" device stands in for a GPU: a tensor made on the CPU inside the model
    # would meet the weights on another device and fail, as it would on CUDA
    import torch

    from gen3d.mesh_model import MeshModel, MeshModelConfig

    m = MeshModel(MeshModelConfig(hidden=16, channels=8, shape_degree=2, **kw), 32).to("meta")
    x = torch.rand(2, 3, 32, 32, device="meta")
    assert m.sample(x, 3).actions.device.type == "meta"
    assert m.infer(x).device.type == "meta"
    assert m.generate(2).device.type == "meta"
