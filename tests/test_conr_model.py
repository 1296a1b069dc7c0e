"""CoNR fast path: equal to the reference-style loop, batched, order-free, deterministic."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conr_reference import ReferenceCoNR

from anirender.errors import AniRenderError
from anirender.models.conr.config import OFFICIAL_FILES, CoNRConfig
from anirender.models.conr.model import CoNR, randomize_weights

# the released checkpoints' keys, shapes and dtypes (tests/data/README.md says whence)
OFFICIAL_SHAPES = Path(__file__).resolve().parent / "data" / "conr_official_state_dicts.json"
SMALL = CoNRConfig(width=0.25, shader_channels=32)
SIZE = 128


def small_model(seed=0, config=SMALL) -> CoNR:
    return randomize_weights(CoNR(config), seed, gain=0.85).prepare("cpu")


def sheet_images(views=3, size=SIZE, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (views, size, size, 4), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for v in range(views):  # a blob of a character on a transparent background
        r = size * (0.25 + 0.05 * v)
        inside = (yy - size / 2) ** 2 + (xx - size / 2 - 4 * v) ** 2 < r**2
        images[v, ..., 3] = np.where(inside, images[v, ..., 3] | 128, 0)
    return images


def udp_frames(frames=2, size=SIZE, seed=2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    udp = rng.random((frames, size, size, 4), dtype=np.float32)
    yy, xx = np.mgrid[:size, :size]
    for f in range(frames):
        inside = np.abs(yy - size / 2) < size * 0.3 - 5 * f
        udp[f][~inside] = 0
    return udp


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def sheet(model):
    return model.encode_sheet(sheet_images())


def test_state_dict_keys_shapes_dtypes_match_released_checkpoints():
    expected = json.loads(OFFICIAL_SHAPES.read_text())
    model = CoNR()
    for name, filename in OFFICIAL_FILES.items():
        got = {
            k: [list(v.shape), str(v.dtype).removeprefix("torch.")]
            for k, v in getattr(model, name).state_dict().items()
        }
        assert got == expected[filename], filename


def test_matches_reference_style_loop(model, sheet):
    udp = udp_frames(2)
    fast = model.render(sheet, udp)
    parts = {n: getattr(model, n).state_dict() for n in OFFICIAL_FILES}
    reference = ReferenceCoNR(parts, flows=2 * SMALL.flow_groups)
    reference.set_sheet(sheet_images())
    slow = np.stack([reference.render_frame(u) for u in udp])
    assert fast.shape == udp.shape and fast.dtype == np.float32
    assert slow.std() > 1e-3  # the comparison sees a picture, not a constant
    assert np.abs(fast - slow).max() < 1e-4
    # premultiplied: colour never exceeds alpha
    assert (fast[..., :3] <= fast[..., 3:4] + 1e-6).all()


def test_sheet_is_parsed_once_for_a_sequence(model):
    calls = []
    hook = model.udpparsernet.backbone[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        encoding = model.encode_sheet(sheet_images(2))
        for _ in range(3):
            model.render(encoding, udp_frames(2))
    finally:
        hook.remove()
    assert len(calls) == 1


def test_batched_frames_equal_frame_by_frame(model, sheet):
    udp = udp_frames(3)
    model.frames_per_batch = 4
    together = model.render(sheet, udp)
    model.frames_per_batch = 1
    try:
        alone = model.render(sheet, udp)
    finally:
        model.frames_per_batch = 4
    assert np.abs(together - alone).max() < 1e-5


def test_view_order_does_not_matter(model):
    images = sheet_images(3)
    udp = udp_frames(1)
    a = model.render(model.encode_sheet(images), udp)
    b = model.render(model.encode_sheet(images[[2, 0, 1]]), udp)
    assert np.abs(a - b).max() < 1e-5


def test_deterministic(model, sheet):
    udp = udp_frames(2)
    assert np.array_equal(model.render(sheet, udp), model.render(sheet, udp))


def test_views_change_the_picture(model):
    udp = udp_frames(1)
    one = model.render(model.encode_sheet(sheet_images(1)), udp)
    three = model.render(model.encode_sheet(sheet_images(3)), udp)
    assert np.abs(one - three).max() > 1e-3


def test_bf16_close_to_fp32(sheet):
    model = small_model()
    udp = udp_frames(2)
    ref = model.render(model.encode_sheet(sheet_images()), udp)
    model.set_precision("bf16")
    low = model.render(model.encode_sheet(sheet_images()), udp)
    mse = float(np.mean((ref - low) ** 2))
    psnr = 10 * np.log10(1.0 / max(mse, 1e-20))
    assert psnr > 40, psnr


def test_training_forward_matches_render_and_trains_every_part(model, sheet):
    images = sheet_images(2)
    udp = udp_frames(2)
    from anirender.models.conr.model import premultiply_official, quantise_udp_mask

    pm = np.concatenate([premultiply_official(images), images[..., 3:]], -1)
    s = torch.from_numpy(pm).permute(0, 3, 1, 2).float() / 255
    sheet_t = s[None].repeat(2, 1, 1, 1, 1)  # a sheet per frame, as in training
    udp_t = torch.from_numpy(quantise_udp_mask(udp)).permute(0, 3, 1, 2)
    trainee = small_model().train()
    out = trainee(sheet_t, udp_t)
    expected = trainee.eval().render(trainee.encode_sheet(images), udp)
    got = out["rgba"].permute(0, 2, 3, 1).detach().numpy()
    assert np.abs(got - expected).max() < 1e-4
    assert out["sheet_udp"].shape == (2, 2, 4, SIZE, SIZE)
    (out["rgba"].mean() + out["sheet_udp"].mean()).backward()
    for name in OFFICIAL_FILES:
        grads = [p.grad for p in getattr(trainee, name).parameters()]
        assert all(g is not None for g in grads[:3]), name
        assert any(g.abs().sum() > 0 for g in grads if g is not None), name


def test_detect_udp_shape_and_range(model):
    udp = model.detect_udp(sheet_images(2))
    assert udp.shape == (2, SIZE, SIZE, 4) and udp.dtype == np.float32
    assert udp.min() >= 0 and udp.max() <= 1


def test_safetensors_round_trip_keeps_config(model, sheet, tmp_path):
    path = tmp_path / "small.safetensors"
    model.save_safetensors(path)
    again = CoNR.from_safetensors(path)
    assert again.config == SMALL
    udp = udp_frames(1)
    assert np.array_equal(
        model.render(sheet, udp), again.render(again.encode_sheet(sheet_images()), udp)
    )


@pytest.mark.parametrize(
    "images, message",
    [
        (np.full((1, SIZE, SIZE, 4), 255, np.uint8), "no transparent"),
        (np.zeros((1, 100, 100, 4), np.uint8), "multiple of 128"),
        (np.zeros((1, SIZE, SIZE, 3), np.uint8), "RGBA"),
    ],
)
def test_bad_sheets_are_refused(model, images, message):
    with pytest.raises(AniRenderError, match=message):
        model.encode_sheet(images)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda u: u.__setitem__((0, 3, 3, 0), np.nan), "NaN"),
        (lambda u: u.__setitem__((0, 3, 3, 1), 1.5), r"\[0, 1\]"),
    ],
)
def test_bad_udp_is_refused(model, sheet, change, message):
    udp = udp_frames(1)
    change(udp)
    with pytest.raises(AniRenderError, match=message):
        model.render(sheet, udp)


def test_udp_of_another_size_is_refused(model, sheet):
    with pytest.raises(AniRenderError, match="same working size"):
        model.render(sheet, udp_frames(1, size=2 * SIZE))


def test_config_must_divide_flow_groups():
    with pytest.raises(AniRenderError, match="flow_groups"):
        CoNR(CoNRConfig(width=0.125, shader_channels=16))


@pytest.mark.parametrize("shape", [(4, 512, 8, 8), (2, 66, 16, 12), (1, 3, 1, 5), (1, 2, 4, 1)])
def test_cpu_upsampling_equals_torch_bilinear(shape):
    """The separable x2 upsampling the shader uses on a CPU is torch's bilinear one,
    borders included; with gradients it is torch's own."""
    import torch.nn.functional as F

    from anirender.models.conr.cinn import upsample2

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    want = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    with torch.inference_mode():
        got = upsample2(x)
    assert got.shape == want.shape and got.is_contiguous()
    assert (got - want).abs().max() < 1e-6
    leaf = x.clone().requires_grad_()
    upsample2(leaf).sum().backward()
    assert leaf.grad.shape == x.shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_channels_last_copy_is_torchs(dtype):
    """The threaded 2-D-transpose copy the shader's first convolutions take their input
    through is torch's channels-last copy, bit for bit, with one thread or several and
    inside inference mode (thread-local) or not."""
    from anirender.models.conr.cinn import channels_last

    x = torch.randn(3, 70, 16, 12, generator=torch.Generator().manual_seed(0)).to(dtype)
    want = x.contiguous(memory_format=torch.channels_last)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                got = channels_last(x.clone())
            assert got.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(got, want)
            assert torch.equal(channels_last(x), want)
    finally:
        torch.set_num_threads(before)
