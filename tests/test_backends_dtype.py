"""dtype per backend: MILS's defaults (scorer float32, LLM bfloat16 on CUDA), in the model's identity."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from capstore.backends import devices
from capstore.backends.cuda_probe import CudaDevice, cuda_devices, torch_build
from capstore.backends.registry import load_backend
from capstore.errors import InputError
from capstore.runs.config import RunConfig
from capstore.store.images import decode_image
from capstore.store.schema import Model
from tests.conftest import demo_images

AMPERE, VOLTA = CudaDevice(0, "NVIDIA A10G", (8, 6)), CudaDevice(0, "Tesla V100-SXM2-16GB", (7, 0))


@pytest.mark.parametrize("gpu, kind, expected", [
    (AMPERE, "scorer", "float32"), (AMPERE, "generator", "bfloat16"), (AMPERE, "captioner", "float16"),
    (VOLTA, "scorer", "float32"), (VOLTA, "generator", "float16"), (VOLTA, "captioner", "float16"),
    (None, "scorer", "float32"), (None, "generator", "float32"), (None, "captioner", "float32"),
])
def test_default_dtypes_are_mils_on_cuda_and_float32_on_cpu(monkeypatch: pytest.MonkeyPatch, gpu, kind: str,  # type: ignore[no-untyped-def]
                                                            expected: str) -> None:
    monkeypatch.setattr(devices, "cuda_devices", lambda: (gpu,) if gpu else ())
    device = devices.resolve_device("auto")
    assert device == ("cuda" if gpu else "cpu")
    assert devices.resolve_dtype(None, device, kind) == devices.resolve_dtype("auto", device, kind) == expected
    assert devices.resolve_dtype("float16", device, kind) == "float16"  # asked for, it wins
    if gpu:
        assert devices.device_name(device) == gpu.name


def test_cuda_probe_agrees_with_torch() -> None:
    import torch

    assert torch_build() == {"cuda": torch.version.cuda, "hip": getattr(torch.version, "hip", None)}
    assert bool(cuda_devices()) == torch.cuda.is_available()
    for dev in cuda_devices():
        assert (dev.name, dev.capability) == (torch.cuda.get_device_name(dev.index),
                                              torch.cuda.get_device_capability(dev.index))


def test_run_config_dtype_per_backend() -> None:
    cfg = RunConfig(method="mils", dataset="d")
    assert [cfg.dtype_for(k) for k in ("scorer", "generator", "captioner")] == [None, None, None]
    cfg = RunConfig(method="mils", dataset="d", dtype="float16", scorer_dtype="float32", device="cpu")
    assert [cfg.dtype_for(k) for k in ("scorer", "generator", "captioner")] == ["float32", "float16", "float16"]
    assert cfg.backend_options("scorer") == {"device": "cpu", "dtype": "float32"}
    same = RunConfig(method="mils", dataset="d")
    assert cfg.hash() == same.hash()  # dtypes are in the models' fingerprints, not the run's hash
    assert RunConfig.from_json({"method": "mils", "dataset": "d"}).scorer_dtype is None  # runs stored before


def _model_config(store, model_id: int) -> dict:  # type: ignore[no-untyped-def]
    with store.read() as s:
        return s.scalar(select(Model.config).where(Model.id == model_id))


def test_scorer_encodes_texts_and_images_in_the_declared_dtype(demo_store, tiny_models) -> None:  # type: ignore[no-untyped-def]
    import torch

    full = load_backend("scorer", tiny_models.specs["scorer"], demo_store, device="cpu")
    half = load_backend("scorer", tiny_models.specs["scorer"], demo_store, device="cpu", dtype="bfloat16")
    assert full.model_id != half.model_id and full.fingerprint != half.fingerprint
    assert _model_config(demo_store, full.model_id)["dtype"] == "torch.float32"
    assert _model_config(demo_store, half.model_id)["dtype"] == "torch.bfloat16"
    texts, image = ["a red circle in the sky", "two green squares"], demo_images(demo_store, 1)[0]
    got_text, got_image = half.encode_texts(texts), half.encode_images([image])
    # The same computation by hand, in bfloat16, without autocast: what the fingerprint says is what ran.
    assert half.model.visual.conv1.weight.dtype == torch.bfloat16
    with torch.inference_mode():
        text = half.model.encode_text(half.tokenizer(texts))
        pixels = torch.stack([half.preprocess(decode_image(image))])
        img = half.model.encode_image(pixels.to(torch.bfloat16))
    assert text.dtype == img.dtype == torch.bfloat16
    expect_text = torch.nn.functional.normalize(text.float(), dim=-1).numpy()
    expect_img = torch.nn.functional.normalize(img.float(), dim=-1).numpy()
    assert np.allclose(got_text, expect_text, atol=1e-6) and np.allclose(got_image, expect_img, atol=1e-6)
    assert not np.allclose(got_text, full.encode_texts(texts), atol=1e-4)  # bfloat16 is not float32


def test_generator_and_captioner_fingerprints_carry_their_dtype(demo_store, tiny_models) -> None:  # type: ignore[no-untyped-def]
    a = load_backend("generator", tiny_models.specs["generator"], demo_store, device="cpu")
    b = load_backend("generator", tiny_models.specs["generator"], demo_store, device="cpu", dtype="bfloat16")
    assert (a.dtype_name, b.dtype_name) == ("float32", "bfloat16") and a.model_id != b.model_id
    assert _model_config(demo_store, b.model_id)["dtype"] == "torch.bfloat16"
    c = load_backend("captioner", tiny_models.specs["blip2"], demo_store, device="cpu", dtype="float16")
    assert _model_config(demo_store, c.model_id)["dtype"] == "torch.float16"


@pytest.mark.parametrize("kind", ["scorer", "generator", "captioner"])
def test_unknown_dtype_is_one_line_input_error(demo_store, tiny_models, kind: str) -> None:  # type: ignore[no-untyped-def]
    spec = {"scorer": tiny_models.specs["scorer"], "generator": tiny_models.specs["generator"],
            "captioner": tiny_models.specs["llava"]}[kind]
    with pytest.raises(InputError, match="^--dtype 'float8': expected one of auto, float32, float16, bfloat16$"):
        load_backend(kind, spec, demo_store, device="cpu", dtype="float8")
