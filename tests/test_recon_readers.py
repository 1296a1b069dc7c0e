"""Portrait readers and meshing without Blender: a known head written in each format's real
conventions comes back in the right place, the right way round, the right colours."""

import pickle

import numpy as np
import pytest
from recon_head import (
    EAR,
    NOSE,
    SKIN,
    chamfer,
    fit_triplane,
    head_sdf,
    write_density_npz,
    write_eg3d_mrc,
    write_panic_pickle,
    write_splat_ply,
)

from anirender.errors import AniRenderError
from anirender.models.recon.detect import detect_portrait_format
from anirender.models.recon.meshing import signed_volume, vertex_normals
from anirender.models.recon.portrait import (
    PortraitImportOptions,
    blender_to_source,
    prepare_portrait,
)
from anirender.models.recon.safe_pickle import load_pickle_safely

FILE_UNITS = PortraitImportOptions(head_width_cm=0, grid_resolution=64)


def _check_head(mesh, box, voxel, colored=True):
    """Shape within a voxel, nose toward -Y, normals out, colours by region."""
    verts = mesh.verts
    assert chamfer(blender_to_source(verts), box) < voxel
    nose = verts[verts[:, 1].argmin()]
    assert abs(nose[0]) < 0.05 * box and nose[1] < -0.25 * box  # nose looks down -Y
    assert signed_volume(verts, mesh.faces) > 0
    normals = vertex_normals(verts, mesh.faces)
    outward = np.einsum("ij,ij->i", normals, verts - verts.mean(0))
    assert (outward > 0).mean() > 0.95
    if not colored:
        assert mesh.colors is None
        return
    truth = head_sdf(blender_to_source(verts), box)[1]
    assert np.abs(mesh.colors - truth).max(1).mean() < 0.1
    # the named regions, by where they are in Blender
    assert np.allclose(mesh.colors[verts[:, 1].argmin()], NOSE, atol=0.15)
    assert np.allclose(mesh.colors[verts[:, 0].argmax()], EAR, atol=0.15)
    assert np.allclose(mesh.colors[verts[:, 2].argmax()], SKIN, atol=0.15)


def test_panic_pickle_is_unmirrored_and_outward(tmp_path):
    path = tmp_path / "front.pkl"
    box = write_panic_pickle(path)
    fmt, mesh = prepare_portrait(path, FILE_UNITS)
    assert fmt.kind == "panic_pickle" and "PAniC" in fmt.description
    _check_head(mesh, box, box / 96)


def test_addict_pickle_loads_as_plain_dict_without_addict(tmp_path):
    path = tmp_path / "front.pkl"
    write_panic_pickle(path)
    assert b"addict.addict" in path.read_bytes()
    data = load_pickle_safely(path)
    assert type(data) is dict and data["verts"].shape[1] == 3


def test_malicious_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    for payload in (Exploit(), {"verts": Exploit()}):
        path = tmp_path / "front.pkl"
        path.write_bytes(pickle.dumps(payload))
        with pytest.raises(AniRenderError, match="asks to run code"):
            prepare_portrait(path, FILE_UNITS)
        assert not marker.exists()
    evil = (
        b'cbuiltins\neval\n(S\'__import__("os").system("touch '
        + str(marker).encode()
        + b"\")'\ntR."
    )
    path.write_bytes(evil)
    with pytest.raises(AniRenderError, match=r"builtins\.eval"):
        load_pickle_safely(path)
    assert not marker.exists()


def test_eg3d_mrc_flipped_sigma_with_border(tmp_path):
    path = tmp_path / "seed0000.mrc"
    box = write_eg3d_mrc(path)
    fmt, mesh = prepare_portrait(path, FILE_UNITS)
    assert fmt.kind == "eg3d_mrc" and "96x96x96" in fmt.description
    _check_head(mesh, box, box / 95, colored=False)


def test_density_grid_with_sidecar_and_colours(tmp_path):
    path = tmp_path / "head.npz"
    box = write_density_npz(path)
    fmt, mesh = prepare_portrait(path, FILE_UNITS)
    assert "with colours" in fmt.description
    _check_head(mesh, box, box / 79)


@pytest.fixture
def one_torch_thread():
    """Small batches on a shared 2-core machine: a second thread only spins."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_fitted_triplane_reproduces_the_head(tmp_path, one_torch_thread):
    path = tmp_path / "head.safetensors"
    box = fit_triplane(path)
    fmt, mesh = prepare_portrait(path, FILE_UNITS)
    assert fmt.kind == "triplane"
    _check_head(mesh, box, box / 63)
    # the same tensors as .npz give the same surface
    from safetensors.numpy import load_file

    np.savez(tmp_path / "head.npz", **load_file(str(path)))
    fmt, again = prepare_portrait(tmp_path / "head.npz", FILE_UNITS)
    assert fmt.kind == "triplane" and np.allclose(again.verts, mesh.verts, atol=1e-5)


def test_real_world_size_and_face_budget(tmp_path):
    path = tmp_path / "seed.mrc"
    write_eg3d_mrc(path)
    _, mesh = prepare_portrait(path, PortraitImportOptions(head_width_cm=25, face_budget=3000))
    size = mesh.verts.max(0) - mesh.verts.min(0)
    assert size[0] == pytest.approx(0.25, rel=1e-6)
    assert mesh.verts[:, 2].min() == pytest.approx(0.0, abs=1e-9)  # bottom centre at origin
    assert 1000 < len(mesh.faces) <= 3000
    assert signed_volume(mesh.verts, mesh.faces) > 0


def test_face_budget_on_a_panic_mesh(tmp_path):
    path = tmp_path / "front.pkl"
    box = write_panic_pickle(path)
    _, full = prepare_portrait(path, FILE_UNITS)
    budget = PortraitImportOptions(head_width_cm=0, face_budget=len(full.faces) // 5)
    _, mesh = prepare_portrait(path, budget)
    assert len(full.faces) // 10 < len(mesh.faces) <= len(full.faces) // 5
    assert chamfer(blender_to_source(mesh.verts), box) < 3 * box / 96
    assert signed_volume(mesh.verts, mesh.faces) > 0
    nose = mesh.verts[:, 1].argmin()
    assert np.allclose(mesh.colors[nose], NOSE, atol=0.2)


def test_splat_ply_becomes_a_point_cloud(tmp_path):
    path = tmp_path / "lgm.ply"
    write_splat_ply(path)
    fmt, mesh = prepare_portrait(path, FILE_UNITS)
    assert fmt.kind == "splat_ply" and "point cloud" in fmt.description
    assert len(mesh.verts) == 500 and len(mesh.faces) == 0 and mesh.notes


def test_bad_inputs_say_what_to_do(tmp_path):
    mrc = tmp_path / "seed.mrc"
    write_eg3d_mrc(mrc)
    truncated = tmp_path / "cut.mrc"
    truncated.write_bytes(mrc.read_bytes()[: 1024 + 5000])
    with pytest.raises(AniRenderError, match="cut.mrc"):
        prepare_portrait(truncated, FILE_UNITS)
    pkl = tmp_path / "front.pkl"
    write_panic_pickle(pkl)
    (tmp_path / "cut.pkl").write_bytes(pkl.read_bytes()[:3000])
    with pytest.raises(AniRenderError, match="truncated or corrupted"):
        prepare_portrait(tmp_path / "cut.pkl", FILE_UNITS)
    np.save(tmp_path / "flat.npy", np.zeros((32, 32), np.float32))
    with pytest.raises(AniRenderError, match="expected a 3-D grid"):
        prepare_portrait(tmp_path / "flat.npy", FILE_UNITS)
    np.save(tmp_path / "empty.npy", np.zeros((32, 32, 32), np.float32) + np.arange(100, 132))
    with pytest.raises(AniRenderError, match=r"range from 100 to 131.*e\.g\."):
        prepare_portrait(tmp_path / "empty.npy", FILE_UNITS)
    nan = np.ones((32, 32, 32), np.float32)
    nan[3, 4, 5] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(AniRenderError, match="NaN"):
        prepare_portrait(tmp_path / "nan.npy", FILE_UNITS)
    with pytest.raises(AniRenderError, match="--downsample 2"):
        prepare_portrait(mrc, PortraitImportOptions(memory_limit=96**3 * 4))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(AniRenderError, match="unknown reconstruction format"):
        detect_portrait_format(tmp_path / "notes.txt")


def test_downsample_keeps_the_head_in_place(tmp_path):
    path = tmp_path / "seed.mrc"
    box = write_eg3d_mrc(path)
    _, mesh = prepare_portrait(path, PortraitImportOptions(head_width_cm=0, downsample=2))
    assert chamfer(blender_to_source(mesh.verts), box) < 2 * box / 95


def _cli(argv):
    """The ``import portrait`` command as ``anirender`` dispatches it."""
    import argparse

    from anirender.cli import portrait as recon_cli

    parser = argparse.ArgumentParser(prog="anirender")
    recon_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_obj_ply_glb(tmp_path):
    src = tmp_path / "grid.npz"
    write_density_npz(src)
    for ext in ("obj", "ply", "glb"):
        out = tmp_path / f"head.{ext}"
        assert _cli(["import", "portrait", str(src), "--out", str(out), "--faces", "4000"]) == 0
        assert out.stat().st_size > 1000
    first = (tmp_path / "head.obj").read_text().splitlines()[1].split()
    assert first[0] == "v" and len(first) == 7  # x y z r g b
    assert (tmp_path / "head.ply").read_bytes().startswith(b"ply\nformat binary_little_endian")
    assert (tmp_path / "head.glb").read_bytes()[:4] == b"glTF"
    with pytest.raises(AniRenderError, match="write .glb, .obj or .ply"):
        _cli(["import", "portrait", str(src), "--out", str(tmp_path / "x.fbx")])


def test_corrupted_files_only_ever_raise_artist_errors(tmp_path):
    """Bytes flipped or cut anywhere: an AniRenderError or a mesh, never another exception."""
    rng = np.random.default_rng(3)

    def random_triplane(path, _n):
        from safetensors.numpy import save_file

        shapes = {"planes": (3, 32, 16, 16), "decoder.fc1.weight": (64, 32)}
        shapes |= {"decoder.fc1.bias": (64,), "decoder.fc2.weight": (33, 64)}
        shapes |= {"decoder.fc2.bias": (33,)}
        save_file({k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}, str(path))

    sources = {
        "front.pkl": write_panic_pickle,
        "seed.mrc": write_eg3d_mrc,
        "grid.npz": write_density_npz,
        "tri.safetensors": random_triplane,
        "splat.ply": lambda path, _n: write_splat_ply(path),
    }
    options = PortraitImportOptions(head_width_cm=0, grid_resolution=16)
    for name, writer in sources.items():
        good = tmp_path / name
        writer(good, 40)
        raw = good.read_bytes()
        for trial in range(25):
            broken = bytearray(raw)
            if trial % 2:
                broken = broken[: int(rng.integers(1, len(raw)))]
            else:
                for at in rng.integers(0, len(raw), size=8):
                    broken[at] = int(rng.integers(0, 256))
            path = tmp_path / f"broken{trial}{good.suffix}"
            path.write_bytes(bytes(broken))
            try:
                prepare_portrait(path, options)
            except AniRenderError:
                pass


def test_missing_package_is_named(tmp_path, monkeypatch):
    """Inside a Blender without mrcfile: say which package and how to install it."""
    import sys

    path = tmp_path / "seed.mrc"
    write_eg3d_mrc(path, 32)
    monkeypatch.setitem(sys.modules, "mrcfile", None)  # Python's own "not installed"
    with pytest.raises(AniRenderError, match=r"needs mrcfile.*pip install mrcfile"):
        prepare_portrait(path, FILE_UNITS)
