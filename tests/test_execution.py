"""The shaders' execution choice: parsed, timed once, logged, forced, and exact in fp32."""

import logging
import os
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conr_reference import ReferenceCoNR
from test_conr_model import SMALL, sheet_images, small_model, udp_frames

from anirender.errors import AniRenderError
from anirender.models import execution as execution_module
from anirender.models import native, transposed
from anirender.models.conr import cinn, last_level, level_step
from anirender.models.conr.config import OFFICIAL_FILES
from anirender.models.execution import (
    ENV,
    Execution,
    Request,
    choose,
    gpu_numerics,
    parse_request,
    physical_cores,
    plan,
    use_threads,
)


def test_request_reads_the_environment_and_the_command_line_wins():
    env = {ENV: "precision=fast, batch=2,layout=nchw,chunk=3,threads=1,compile=off,winograd=on"}
    request = parse_request(env=env)
    assert request == Request(
        precision="fast",
        batch=2,
        layout="nchw",
        chunk=3,
        threads=1,
        compile=False,
        winograd=True,
        winograd_transposed=True,  # winograd sets both kinds...
    )
    apart = parse_request(env={ENV: "winograd=on,winograd_transposed=off"})
    assert apart.winograd and apart.winograd_transposed is False  # ...unless set apart
    assert parse_request(precision="bf16", batch=1, env=env).precision == "bf16"
    assert parse_request(precision="bf16", batch=1, env=env).batch == 1
    assert parse_request(env={ENV: "off"}).skip_timing
    assert parse_request(env={}) == Request()
    assert parse_request(env={ENV: "native=off"}).native is False


@pytest.mark.parametrize(
    "text, words",
    [
        ("precision=half", "use one of fp32, fast, bf16, fp16"),
        ("batch=0", "whole number of 1 or more"),
        ("batch=two", "whole number"),
        ("speed=max", "not understood"),
        ("compile=maybe", "on or off"),
        ("winograd=sometimes", "on or off"),
        ("winograd_transposed=2", "on or off"),
    ],
)
def test_bad_settings_say_what_to_write(text, words):
    with pytest.raises(AniRenderError, match=words):
        parse_request(env={ENV: text})


def test_plan_starts_from_fp32_one_frame_and_respects_the_request():
    threads = torch.get_num_threads()
    base, axes = plan(
        Request(), "cpu", images_per_frame=4, max_batch=2, bf16_native=True, cores=threads
    )
    assert base == Execution()
    assert dict(axes) == {"channels_last": (True, False), "batch": (1, 2), "chunk": (0, 4)}
    _, axes = plan(Request(), "cpu", supports=("layout", "winograd"), cores=threads)
    # timed where the shader offers it, each kind apart
    assert dict(axes)["winograd"] == dict(axes)["winograd_transposed"] == (False, True)
    base, axes = plan(
        parse_request(env={ENV: "winograd=on"}), "cpu", supports=("winograd",), cores=threads
    )
    assert base.winograd and base.winograd_transposed
    assert not {"winograd", "winograd_transposed"} & set(dict(axes))
    base, axes = plan(Request(winograd_transposed=False), "cpu", supports=("winograd",))
    assert dict(axes)["winograd"] == (False, True) and "winograd_transposed" not in dict(axes)
    cuda_axes = dict(plan(Request(), "cuda", supports=("winograd",))[1])
    assert not {"winograd", "winograd_transposed"} & set(cuda_axes)
    for field_name, values in axes:  # the default's own value is timed first
        assert values[0] == getattr(base, field_name)
    _, fast = plan(Request(precision="fast"), "cpu", bf16_native=True)
    assert ("precision", ("fp32", "bf16")) in fast  # reduced precision only when allowed
    assert fast[0][0] == "precision"  # and first: the rest is timed in the precision chosen
    _, every = plan(Request(precision="fast"), "cpu", ("bf16", "layout", "winograd", "native"))
    order = [name for name, _ in every]
    # what needs channels-last is timed before NCHW is: NCHW must face the C kernels
    assert order.index("channels_last") > max(order.index("native"), order.index("winograd"))
    assert order.index("native") < order.index("winograd")  # Winograd gains beside the C loops
    _, plain = plan(Request(precision="fast"), "cpu", bf16_native=False)
    assert "precision" not in dict(plain)  # and only where the CPU has it natively
    base, axes = plan(Request(precision="bf16", batch=1, layout="nchw"), "cpu")
    assert (base.precision, base.batch, base.channels_last) == ("bf16", 1, False)
    assert "batch" not in dict(axes) and "channels_last" not in dict(axes)
    assert plan(Request(skip_timing=True), "cpu") == (Execution(), [])
    # a GPU (cannot exist here: only the plan is checked) adds half precision, graphs, compile
    base, axes = plan(
        Request(precision="fast"), "cuda", supports=("fp16", "layout", "cuda_graphs", "compile")
    )
    assert base == Execution(device="cuda")
    assert {"precision", "cuda_graphs", "compile"} <= set(dict(axes))
    assert dict(axes)["precision"] == ("fp32", "tf32", "fp16")  # exact first, TF32 only if asked
    assert "precision" not in dict(plan(Request(), "cuda", supports=("fp16",))[1])


def test_fp32_on_a_gpu_means_ieee_convolutions_and_tf32_is_asked_for():
    """torch lets cuDNN convolve fp32 in TF32 by default (9e-3 off on CoNR, H200); the
    switch is process-wide, so it is set around a call and put back. The switch can be
    read and set without a GPU, which is all this checks."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    with gpu_numerics(Execution(device="cuda")):
        assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
    assert (conv.fp32_precision, matmul.fp32_precision) == before
    for allowed in ("tf32", "fp16", "bf16"):
        with gpu_numerics(Execution(device="cuda", precision=allowed)):
            assert conv.fp32_precision == "tf32"
    with pytest.raises(ValueError), gpu_numerics(Execution(device="cuda")):
        raise ValueError("a failing render")
    assert (conv.fp32_precision, matmul.fp32_precision) == before  # put back after errors too
    with gpu_numerics(Execution()):  # the CPU: nothing touched
        assert (conv.fp32_precision, matmul.fp32_precision) == before
    assert parse_request("tf32").precision == "tf32"
    assert plan(Request(precision="tf32"), "cuda")[0].precision == "tf32"  # forced


def test_threads_are_timed_on_hyper_threads_and_put_back():
    threads = torch.get_num_threads()
    _, axes = plan(Request(), "cpu", cores=max(1, threads // 2))
    if threads > 1:  # one thread per core is worth a timing where cores are shared
        assert dict(axes)["threads"] == (0, threads // 2)
    _, axes = plan(Request(threads=1), "cpu", cores=1)
    assert "threads" not in dict(axes)  # forced: not timed
    _, axes = plan(Request(), "cpu", cores=threads)
    assert "threads" not in dict(axes)
    found = physical_cores()
    assert found is None or 1 <= found <= os.cpu_count()
    try:
        use_threads(Execution(threads=1))
        assert torch.get_num_threads() == 1
        use_threads(Execution(threads=0))  # back to the count before any choice
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(threads)


def test_choose_keeps_the_fastest_and_never_the_slower(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIRENDER_EXECUTION_CACHE", str(tmp_path / "c.json"))
    cost = {(True, 1): 3.0, (False, 1): 2.0, (True, 2): 1.0, (False, 2): 5.0}  # x 10 ms
    state = {}

    def run(frames):
        key = (state["e"].channels_last, state["e"].batch)
        time.sleep(0.01 * cost[key] * frames)

    axes = [("channels_last", (True, False)), ("batch", (1, 2))]
    chosen = choose("test", Execution(), axes, lambda e: state.update(e=e), run, key="k")
    assert (chosen.channels_last, chosen.batch) == (False, 1)  # 2.0 beats 3.0; 5.0 loses
    assert state["e"] == chosen
    assert choose("test", Execution(), axes, lambda e: None, lambda f: None, key="k") == chosen


def test_choose_is_not_fooled_by_a_machine_that_speeds_up(tmp_path, monkeypatch):
    """The default is timed in a slow minute (its first ten runs at 3x), the slower
    candidate after it: the default runs again beside the candidate and stays."""
    monkeypatch.setenv("ANIRENDER_EXECUTION_CACHE", str(tmp_path / "c.json"))
    state = {"runs": 0}

    def run(frames):
        state["runs"] += 1
        slow = 3.0 if state["runs"] <= 10 else 1.0
        per_frame = 1.3 if state["e"].batch == 2 else 1.0
        time.sleep(0.01 * slow * per_frame * frames)

    axes = [("batch", (1, 2))]
    chosen = choose("test", Execution(), axes, lambda e: state.update(e=e), run)
    assert chosen.batch == 1 and state["e"] == chosen


def test_choose_is_not_fooled_by_one_lucky_run_of_the_way_kept(tmp_path, monkeypatch):
    """The default's first run falls in a fast minute (3x faster than the machine is
    after); a candidate that is truly faster is still taken, as the default's time that
    counts is the one measured beside it."""
    monkeypatch.setenv("ANIRENDER_EXECUTION_CACHE", str(tmp_path / "c.json"))
    state = {"runs": 0}

    def run(frames):
        state["runs"] += 1
        lucky = 1 / 3 if state["runs"] == 1 else 1.0
        per_frame = 0.7 if state["e"].batch == 2 else 1.0
        time.sleep(0.02 * lucky * per_frame * frames)

    axes = [("batch", (1, 2))]
    chosen = choose("test", Execution(), axes, lambda e: state.update(e=e), run)
    assert chosen.batch == 2 and state["e"] == chosen


def test_choose_is_not_fooled_by_one_slow_run_of_the_way_kept(tmp_path, monkeypatch):
    """The way kept so far is timed again beside a candidate with as many runs as the
    candidate got: a burst of slowness during one of them must not hand the choice to a
    way that is truly 20 % slower."""
    monkeypatch.setenv("ANIRENDER_EXECUTION_CACHE", str(tmp_path / "c.json"))
    clock = {"now": 0.0}
    monkeypatch.setattr(
        execution_module, "time", SimpleNamespace(perf_counter=lambda: clock["now"])
    )
    runs, state = [], {}

    def run(frames):
        runs.append(state["e"].batch)
        burst = 2.0 if len(runs) == 5 else 1.0  # the kept way's first run beside batch 2
        clock["now"] += (1.0 if state["e"].batch == 1 else 1.2) * frames * burst

    chosen = choose("test", Execution(), [("batch", (1, 2))], lambda e: state.update(e=e), run)
    assert runs[:5] == [1, 1, 2, 2, 1]
    assert chosen.batch == 1 and state["e"] == chosen


def test_a_candidate_that_fails_is_passed_over_and_the_default_still_raises(tmp_path, monkeypatch):
    """A way to run that breaks on this machine (a CUDA graph capture, a compiler) loses
    the timing instead of stopping the render; a failing default is the job's own error."""
    monkeypatch.setenv("ANIRENDER_EXECUTION_CACHE", str(tmp_path / "c.json"))
    state = {}

    def run(frames):
        if state["e"].batch == 2:
            raise RuntimeError("operation not permitted when stream is capturing")
        time.sleep(0.01 * frames)

    axes = [("batch", (1, 2))]
    chosen = choose("test", Execution(), axes, lambda e: state.update(e=e), run, key="k")
    assert chosen.batch == 1 and state["e"] == chosen

    def broken(frames):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        choose("test", Execution(), axes, lambda e: None, broken)


@pytest.fixture(scope="module")
def reference_frames():
    udp = udp_frames(3)
    model = small_model()
    parts = {n: getattr(model, n).state_dict() for n in OFFICIAL_FILES}
    reference = ReferenceCoNR(parts, flows=2 * SMALL.flow_groups)
    reference.set_sheet(sheet_images())
    return udp, np.stack([reference.render_frame(u) for u in udp])


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize(
    "batch, chunk, winograd, transposed",
    [
        (1, 0, False, False),
        (3, 0, False, False),
        (3, 3, False, False),
        (2, 1, False, False),
        (1, 0, True, True),
        (3, 3, True, True),
        (2, 1, True, False),
        (1, 0, False, True),
    ],
)
def test_every_fp32_execution_matches_the_reference_loop(
    reference_frames, channels_last, batch, chunk, winograd, transposed
):
    udp, slow = reference_frames
    model = small_model()
    layout = {"channels_last": channels_last, "batch": batch, "chunk": chunk}
    model.set_execution(Execution(**layout, winograd=winograd, winograd_transposed=transposed))
    fast = model.render(model.encode_sheet(sheet_images()), udp)
    assert slow.std() > 1e-3
    assert np.abs(fast - slow).max() < 1e-4

    # each Winograd choice really convolves that way (the last block's 32 px stacks and
    # its 64 px -> 128 px transposed convolution), and only that kind
    def kept(kind=torch.nn.modules.conv._ConvNd):
        convs = [m for m in model.shader.modules() if isinstance(m, kind)]
        return ["_winograd_filters" in conv.__dict__ for conv in convs]

    assert any(kept(torch.nn.Conv2d)) == winograd
    assert any(kept(torch.nn.ConvTranspose2d)) == transposed
    model.set_execution(Execution(**layout, winograd=winograd))
    assert not any(kept(torch.nn.ConvTranspose2d))  # turned off, those filters are let go
    assert any(kept(torch.nn.Conv2d)) == winograd
    model.set_execution(Execution(**layout))
    assert not any(kept())


@pytest.mark.parametrize("by_sigmoid", [True, False])
def test_both_forms_of_the_view_weights_exp_match_the_reference_loop(
    reference_frames, monkeypatch, by_sigmoid
):
    """exp of the view masks is taken as sigmoid / (1 - sigmoid) where that times faster
    (``cinn.exp_by_sigmoid_pays``); either form stays within 1e-4 of the reference."""
    monkeypatch.setattr(cinn, "_exp_by_sigmoid", None)
    assert cinn.exp_by_sigmoid_pays() in (True, False)  # timed once, then kept
    monkeypatch.setattr(cinn, "_exp_by_sigmoid", by_sigmoid)
    udp, slow = reference_frames
    model = small_model()
    model.set_execution(Execution())
    fast = model.render(model.encode_sheet(sheet_images()), udp)
    assert np.abs(fast - slow).max() < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_banded_piece_copies_and_one_pass_concatenation_change_no_number(
    reference_frames, monkeypatch, dtype
):
    """A block's output is split into pieces in bands of rows where the map is large
    (``cinn._pieces``), and block inputs are converted while concatenated
    (``cinn._concatenate``): both give exactly what the plain copies give, and a render
    banded down to one row at a time stays within 1e-4 of the reference loop."""
    gen = torch.Generator().manual_seed(3)
    out = torch.randn(2, 23, 9, 7, generator=gen).to(dtype)
    out = out.contiguous(memory_format=torch.channels_last)
    sizes, skip = [2, 5, 0, 6, 10], (3,)
    plain = cinn._pieces(out, sizes, skip)
    monkeypatch.setattr(cinn, "_BAND_BYTES", 1)  # one row per band
    banded = cinn._pieces(out, sizes, skip)
    assert [p is None for p in banded] == [False, False, True, True, False]
    for a, b in zip(plain, banded):
        if a is not None:
            assert b.dtype == torch.float32 and b.is_contiguous() and torch.equal(a, b)
    parts = [torch.randn(2, c, 9, 7, generator=gen) for c in (2, 4, 11)]
    assert torch.equal(cinn._concatenate(parts, dtype), torch.cat(parts, 1).to(dtype))

    udp, slow = reference_frames
    model = small_model()
    model.set_execution(Execution())
    fast = model.render(model.encode_sheet(sheet_images()), udp)
    assert np.abs(fast - slow).max() < 1e-4


def test_the_shader_levels_in_c_match_the_reference_loop_and_the_torch_path(
    reference_frames, monkeypatch, tmp_path
):
    """The C loops between levels and for the last level (``level_step.c``,
    ``last_level.c``, built here by the system compiler) are used when chosen, stay
    within 1e-4 of the reference loop in fp32, and agree with the torch path in bf16;
    the tests' machines have a C compiler."""
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "native"))
    monkeypatch.setattr(native, "_built", {})
    assert native.compiler() is not None, "the test machine needs a C compiler (cc)"
    assert last_level.library() is not None and level_step.library() is not None
    assert list((tmp_path / "native").glob("last_level-*.so"))  # built once, kept
    assert list((tmp_path / "native").glob("level_step-*.so"))
    used, stepped = [], []

    def spy(out, split, views):
        mixed = mix(out, split, views)
        used.append(mixed is not None)
        return mixed

    def step_spy(out, *args):
        result = step(out, *args)
        stepped.append(result is not None)
        return result

    mix, step = last_level.mix, level_step.step
    monkeypatch.setattr(last_level, "mix", spy)
    monkeypatch.setattr(level_step, "step", step_spy)
    udp, slow = reference_frames
    model = small_model()
    sheet = model.encode_sheet(sheet_images())
    for batch in (1, 3):
        model.set_execution(Execution(native=True, batch=batch))
        fast = model.render(sheet, udp)
        assert used and all(used) and len(stepped) == 5 * len(used) and all(stepped)
        assert np.abs(fast - slow).max() < 1e-4
        used.clear(), stepped.clear()
    model.set_execution(Execution(native=True, channels_last=False))  # NCHW: torch path...
    small_maps = transposed.MAX_SIDE
    monkeypatch.setattr(transposed, "MAX_SIDE", 0)  # ...(small maps' products: channels-last)
    assert np.abs(model.render(sheet, udp) - slow).max() < 1e-4
    assert used and not any(used) and stepped and not any(stepped)
    used.clear(), stepped.clear()
    # this small network's levels all end on maps of at most 8 px: with the products
    # their outputs come channels-last and take the C loops between levels
    monkeypatch.setattr(transposed, "MAX_SIDE", small_maps)
    assert np.abs(model.render(sheet, udp) - slow).max() < 1e-4
    assert stepped and all(stepped)

    low = small_model().set_execution(Execution(precision="bf16"))
    low_sheet = low.encode_sheet(sheet_images())
    by_torch = low.render(low_sheet, udp)
    low.set_execution(Execution(precision="bf16", native=True))
    by_c = low.render(low_sheet, udp)
    assert used[-1] is True
    psnr = 10 * np.log10(1.0 / max(float(np.mean((by_c - by_torch) ** 2)), 1e-20))
    assert psnr > 50, psnr


def test_without_a_compiler_the_c_kernel_is_not_offered_and_the_torch_path_runs(
    monkeypatch, tmp_path, caplog
):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "native"))
    monkeypatch.setattr(native, "_built", {})
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    caplog.set_level(logging.INFO, logger="anirender.execution")
    assert last_level.library() is None
    assert "last_level.c not built" in caplog.text and "torch path runs" in caplog.text
    model = small_model().set_execution(Execution(native=True))
    assert np.isfinite(model.render(model.encode_sheet(sheet_images()), udp_frames(1))).all()
    _, axes = plan(Request(), "cpu", supports=("native",))
    assert ("native", (False, True)) in axes
    _, axes = plan(Request(native=False), "cpu", supports=("native",))
    assert all(name != "native" for name, _ in axes)


def test_first_render_times_the_choices_logs_and_remembers_them(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv(ENV, "precision=fast")
    monkeypatch.setenv("ANIRENDER_EXECUTION_CACHE", str(tmp_path / "choices.json"))
    caplog.set_level(logging.INFO, logger="anirender.execution")
    model = small_model()
    sheet = model.encode_sheet(sheet_images())
    first = model.render(sheet, udp_frames(2))
    assert model.execution is not None
    assert "CoNR runs as cpu:" in caplog.text and "ways timed" in caplog.text
    assert (tmp_path / "choices.json").is_file()
    if model.execution.precision == "fp32":
        reference = small_model().render(small_model().encode_sheet(sheet_images()), udp_frames(2))
        assert np.abs(first - reference).max() < 1e-4
    caplog.clear()
    again = small_model()
    again.render(again.encode_sheet(sheet_images()), udp_frames(1))
    assert "timed before on this machine" in caplog.text
    assert again.execution == model.execution


def test_forced_bf16_is_close_and_fp32_comes_back_exact(monkeypatch):
    udp = udp_frames(2)
    model = small_model()
    exact = model.render(model.encode_sheet(sheet_images()), udp)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    model.set_execution(Execution(precision="bf16"))
    low = model.render(model.encode_sheet(sheet_images()), udp)
    psnr = 10 * np.log10(1.0 / max(float(np.mean((low - exact) ** 2)), 1e-20))
    assert 40 < psnr < 200, psnr  # reduced precision, and only slightly
    model.set_execution(Execution(precision="fp32"))
    assert all((model.state_dict()[k] == v).all() for k, v in weights.items())
    assert np.abs(model.render(model.encode_sheet(sheet_images()), udp) - exact).max() < 1e-5
    # tf32 keeps the fp32 weights (no copy kept, nothing rounded); on a CPU it is fp32
    tf32 = small_model().set_execution(Execution(precision="tf32"))
    assert tf32.compute_dtype == torch.float32 and tf32._master is None
    assert np.abs(tf32.render(tf32.encode_sheet(sheet_images()), udp) - exact).max() < 1e-5


def test_guided_and_anr_choices_keep_the_picture(monkeypatch, tmp_path):
    from anirender.models.anr import ANR, ANRConfig
    from anirender.models.guided import GuidedConfig, GuidedShader

    monkeypatch.setenv("ANIRENDER_EXECUTION_CACHE", str(tmp_path / "choices.json"))
    rng = np.random.default_rng(0)
    anr = ANR(ANRConfig(identities=1, texture_size=32, width=8, depth=2)).eval()
    uv = rng.random((3, 64, 64, 4), dtype=np.float32)
    normal = rng.random((3, 64, 64, 4), dtype=np.float32)
    base = anr.render(uv, normal)
    for execution in (Execution(channels_last=False, batch=2), Execution(batch=3)):
        anr.set_execution(execution)
        assert np.abs(anr._render(uv, normal, 0, execution.batch) - base).max() < 1e-5
    monkeypatch.setenv(ENV, "precision=fast")
    tuned = ANR(ANRConfig(identities=1, texture_size=32, width=8, depth=2)).eval()
    tuned.load_state_dict(anr.state_dict())
    out = tuned.render(uv, normal)
    assert tuned.execution is not None
    tolerance = 1e-5 if tuned.execution.precision == "fp32" else 0.05
    assert np.abs(out - base).max() < tolerance

    images = sheet_images(2, 64)
    udps = udp_frames(2, 64)
    udps[..., 3] = (udps[..., 3] > 0).astype(np.float32)
    images[..., 3] = np.where(udps[..., 3] > 0, 255, 0)
    shader = GuidedShader(GuidedConfig(width=8, half=8, inner=8, blocks=1)).eval()
    sheet = shader.encode_sheet(images, udps)
    monkeypatch.setenv(ENV, "off")
    plain = shader.render(sheet, udps)
    shader.set_execution(Execution(channels_last=True, batch=2))
    assert np.abs(shader._render(sheet, udps, 2) - plain).max() < 1e-5
