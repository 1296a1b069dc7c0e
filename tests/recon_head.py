"""A known head written into every reconstruction format with that format's conventions.

The head (source frame: y up, facing +z) is a union of spheres: a skull, a nose on the
+z side and two ears on +-x. Union-of-spheres has an exact surface, so the distance from
an imported mesh to the truth can be measured. Regions are coloured: nose red, ears blue,
everything else skin.
"""

from __future__ import annotations

import json
import pickle
import sys
import types

import numpy as np

SKIN = np.array([0.95, 0.78, 0.66])
NOSE = np.array([0.9, 0.1, 0.1])
EAR = np.array([0.1, 0.2, 0.9])


def head_spheres(box):
    """(centres (4,3), radii (4,), colours (4,3)) scaled to a cube of side ``box``."""
    centres = np.array([[0, 0, 0], [0, -0.02, 0.26], [0.27, 0, 0], [-0.27, 0, 0]]) * box
    radii = np.array([0.26, 0.06, 0.07, 0.07]) * box
    colours = np.stack([SKIN, NOSE, EAR, EAR])
    return centres, radii, colours


def head_sdf(points, box):
    """Signed distance (exact outside) and the colour of the nearest part."""
    centres, radii, colours = head_spheres(box)
    d = np.linalg.norm(points[:, None, :] - centres[None], axis=2) - radii[None]
    part = d.argmin(1)
    # the nose and ears win where they stick out; the skull owns the rest
    return d.min(1), colours[part]


def surface_samples(box, count=20000, seed=0):
    """Points on the true surface (parts of each sphere not inside another)."""
    rng = np.random.default_rng(seed)
    centres, radii, _ = head_spheres(box)
    area = radii**2
    per = np.maximum((count * area / area.sum()).astype(int), 200)
    out = []
    for c, r, n in zip(centres, radii, per, strict=True):
        dirs = rng.normal(size=(n * 2, 3))
        p = c + r * dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        d = np.linalg.norm(p[:, None] - centres[None], axis=2) - radii[None]
        out.append(p[(d < -1e-9).sum(1) == 0])
    return np.concatenate(out)


def chamfer(verts, box):
    """Mean two-way distance between mesh vertices and the true surface."""
    from scipy.spatial import cKDTree

    to_truth = np.abs(head_sdf(verts, box)[0]).mean()
    to_mesh = cKDTree(verts).query(surface_samples(box))[0].mean()
    return 0.5 * (to_truth + to_mesh)


def grid_points(n, box, centred=True):
    axis = np.linspace(-box / 2, box / 2, n)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)


def sigma_field(n, box, level, slope):
    """A field equal to ``level`` on the surface, rising by ``slope`` per voxel inside."""
    voxel = box / (n - 1)
    sdf, colours = head_sdf(grid_points(n, box), box)
    value = level + np.clip(-sdf / voxel, -3, 3) * slope
    return value.reshape(n, n, n).astype(np.float32), colours.reshape(n, n, n, 3)


# ------------------------------------------------------------------ PAniC-3D front.pkl


def _fake_addict():
    """A module that pickles like addict.Dict (a dict subclass, state = itself)."""
    module = types.ModuleType("addict.addict")

    class Dict(dict):
        def __getstate__(self):
            return self

        def __setstate__(self, state):
            self.update(state)

    Dict.__module__ = "addict.addict"
    Dict.__qualname__ = "Dict"
    module.Dict = Dict
    return module


def write_panic_pickle(path, n=96):
    """PAniC's evaluation: alpha = 1 - exp(-softplus(sigma - 1)) sampled over the 0.7 cube,
    flipped in x, marching cubes at 0.5, verts = index / n * 0.7 - 0.35, pickled Dict."""
    from skimage.measure import marching_cubes

    box = 0.7
    sigma, _ = sigma_field(n, box, 1.0, 2.0)
    alpha = 1 - np.exp(-np.logaddexp(0, sigma - 1))
    alpha = np.flip(alpha, 0)
    verts, faces, normals, values = marching_cubes(
        np.ascontiguousarray(alpha), level=0.5, gradient_direction="descent"
    )
    verts = verts / n * box - 0.5 * box
    _, colours = head_sdf(verts * np.array([-1, 1, 1]), box)
    module = _fake_addict()
    saved = {k: sys.modules.get(k) for k in ("addict", "addict.addict")}
    sys.modules["addict"] = types.ModuleType("addict")
    sys.modules["addict.addict"] = module
    try:
        data = module.Dict(verts=verts, faces=faces, normals=normals, values=values, colors=colours)
        path.write_bytes(pickle.dumps(data, protocol=4))
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return box


# ------------------------------------------------------------------ EG3D .mrc


def write_eg3d_mrc(path, n=96, box=1.0):
    import mrcfile

    sigma, _ = sigma_field(n, box, 10.0, 10.0)
    sigma = np.flip(sigma, 0).copy()
    pad = int(30 * n / 256)
    sigma[:pad] = sigma[-pad:] = -1000
    sigma[:, :pad] = sigma[:, -pad:] = -1000
    sigma[:, :, :pad] = sigma[:, :, -pad:] = -1000
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(sigma.astype(np.float32))
    return box


# ------------------------------------------------------------------ npz grid + sidecar


def write_density_npz(path, n=80, box=0.8):
    """density = softplus(sigma - 1), stored [z, y, x] with colours, described by JSON."""
    sigma, colours = sigma_field(n, box, 1.0, 2.0)
    density = np.logaddexp(0, sigma - 1).astype(np.float32)
    np.savez(
        path,
        density=np.ascontiguousarray(density.transpose(2, 1, 0)),
        colors=np.ascontiguousarray(colours.transpose(2, 1, 0, 3)).astype(np.float32),
    )
    path.with_suffix(".json").write_text(
        json.dumps({"box_size": box, "axis_order": "zyx", "field": "density"})
    )
    return box


# ------------------------------------------------------------------ triplane


def fit_triplane(path, steps=200, resolution=64, box=0.7, seed=0):
    """Fit 3x32xRxR planes and the decoder to the head with Adam; save as safetensors."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: extra threads only spin on a shared machine
    try:
        return _fit(path, steps, resolution, box, seed)
    finally:
        torch.set_num_threads(threads)


def _fit(path, steps, resolution, box, seed):
    import torch
    from safetensors.numpy import save_file

    from anirender.models.recon.triplane import decode_triplane

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    planes = torch.nn.Parameter(torch.randn(3, 32, resolution, resolution) * 0.1)
    w1 = torch.nn.Parameter(torch.randn(64, 32) / 32**0.5)
    b1 = torch.nn.Parameter(torch.zeros(64))
    w2 = torch.nn.Parameter(torch.randn(33, 64) / 64**0.5)
    b2 = torch.nn.Parameter(torch.zeros(33))
    optimiser = torch.optim.Adam([planes, w1, b1, w2, b2], lr=0.02)
    width = box / 64
    for _ in range(steps):
        near = surface_samples(box, 1024, seed=int(rng.integers(1 << 30)))
        near = near + rng.normal(scale=width * 2, size=near.shape)
        anywhere = rng.uniform(-box / 2, box / 2, size=(1024, 3))
        points = np.concatenate([near, anywhere])
        sdf, colours = head_sdf(points, box)
        target_sigma = torch.from_numpy(1 + np.clip(-sdf / width, -4, 4)).float()
        density, rgb = decode_triplane(
            planes, w1, b1, w2, b2, torch.from_numpy(points).float(), box
        )
        sigma = torch.log(torch.expm1(density.clamp_min(1e-6))) + 1  # invert softplus(s - 1)
        loss = ((sigma - target_sigma) ** 2).mean() + (
            (rgb - torch.from_numpy(colours).float()) ** 2
        ).mean() * 10
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    tensors = {
        "planes": planes.detach().numpy(),
        "decoder.fc1.weight": w1.detach().numpy(),
        "decoder.fc1.bias": b1.detach().numpy(),
        "decoder.fc2.weight": w2.detach().numpy(),
        "decoder.fc2.bias": b2.detach().numpy(),
        "box_size": np.array([box], np.float32),
    }
    save_file(tensors, str(path))
    return box


# ------------------------------------------------------------------ mesh files


def head_mesh(n=64, box=1.0):
    """Ground-truth mesh in the source frame: verts, outward faces, region colours."""
    from skimage.measure import marching_cubes

    sigma, _ = sigma_field(n, box, 0.0, 1.0)
    verts, faces, _, _ = marching_cubes(sigma, level=0.0, gradient_direction="descent")
    verts = verts * box / (n - 1) - box / 2
    tri = verts[faces]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()
    if volume < 0:
        faces = faces[:, ::-1]
    return verts, faces, head_sdf(verts, box)[1]


def write_obj(path, n=64, box=1.0):
    verts, faces, colours = head_mesh(n, box)
    with open(path, "w") as f:
        np.savetxt(f, np.hstack([verts, colours]), fmt="v %.6f %.6f %.6f %.4f %.4f %.4f")
        np.savetxt(f, faces + 1, fmt="f %d %d %d")
    return box


def write_ply(path, n=64, box=1.0):
    verts, faces, colours = head_mesh(n, box)
    vertex = np.empty(
        len(verts),
        dtype=[
            ("x", "<f4"),
            ("y", "<f4"),
            ("z", "<f4"),
            ("red", "u1"),
            ("green", "u1"),
            ("blue", "u1"),
        ],
    )
    vertex["x"], vertex["y"], vertex["z"] = verts.T
    rgb = np.round(colours * 255).astype(np.uint8)
    vertex["red"], vertex["green"], vertex["blue"] = rgb.T
    face = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"], face["i"] = 3, faces
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(verts)}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    with open(path, "wb") as f:
        f.write(header.encode())
        f.write(vertex.tobytes())
        f.write(face.tobytes())
    return box


def write_glb(path, n=64, box=1.0):
    from anirender.models.recon.portrait import PortraitMesh, source_to_blender
    from anirender.models.recon.writers import write_glb

    verts, faces, colours = head_mesh(n, box)
    write_glb(path, source_to_blender(PortraitMesh(verts, faces, "truth", colours)))
    return box


def write_splat_ply(path, count=500):
    rng = np.random.default_rng(1)
    names = [
        "x",
        "y",
        "z",
        "f_dc_0",
        "f_dc_1",
        "f_dc_2",
        "opacity",
        "scale_0",
        "scale_1",
        "scale_2",
        "rot_0",
        "rot_1",
        "rot_2",
        "rot_3",
    ]
    data = rng.normal(size=(count, len(names))).astype("<f4")
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {count}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    with open(path, "wb") as f:
        f.write(header.encode())
        f.write(data.tobytes())
