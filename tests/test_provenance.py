"""A report's machine and digests: the digest tells bit-identical states from states that differ
in one bit, a dtype or a shape, wherever they were stored; the machine names this CPU."""

import json
import os

import numpy as np
import torch

from learners.provenance import cpu_model, digest, machine


def state() -> dict:
    g = torch.Generator().manual_seed(3)
    return {"w": torch.randn(4, 5, generator=g), "b": torch.zeros(5, dtype=torch.float64),
            "step": 7, "rng": np.random.default_rng(1).bit_generator.state,
            "nested": [torch.arange(6), {"lr": 0.1}]}


def test_a_saved_and_loaded_state_has_the_same_digest_and_key_order_does_not_matter(tmp_path):
    a = state()
    torch.save(a, tmp_path / "s.pt")
    back = torch.load(tmp_path / "s.pt", weights_only=False)
    assert digest(back) == digest(a)
    assert digest(dict(reversed(list(a.items())))) == digest(a)
    assert len(digest(a)) == 16 and int(digest(a), 16) >= 0


def test_one_ulp_a_dtype_a_shape_or_a_number_changes_the_digest():
    base = digest(state())
    one_ulp = state()
    one_ulp["w"][2, 3] = torch.nextafter(one_ulp["w"][2, 3], torch.tensor(np.inf))
    as_float32 = state()
    as_float32["b"] = as_float32["b"].float()
    reshaped = state()
    reshaped["w"] = reshaped["w"].reshape(5, 4)
    other_step = state()
    other_step["step"] = 8
    int_not_float = state()
    int_not_float["nested"][1]["lr"] = 1
    int_not_float_ref = state()
    int_not_float_ref["nested"][1]["lr"] = 1.0
    variants = [one_ulp, as_float32, reshaped, other_step]
    assert len({base, *(digest(v) for v in variants)}) == 1 + len(variants)
    assert digest(int_not_float) != digest(int_not_float_ref)


def test_the_machine_names_this_cpu_and_library_versions_and_is_json():
    info = json.loads(json.dumps(machine(torch.device("cpu"))))
    assert info["torch"] == torch.__version__ and info["numpy"] == np.__version__
    assert info["cores"] == os.cpu_count() and info["device"].startswith("cpu")
    names = []
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    assert info["cpu"] == cpu_model() == (names[0] if names else info["cpu"])
    assert info["cpu"]
