"""Pass rendering with Cycles: one render per pass through an override emission material.

Every pass is an emission shader on ``ViewLayer.material_override`` of the temporary
scene, rendered with exact-data settings: 1 sample, no denoising, a 0.01 px box filter
(one ray through each pixel centre), no bounces, transparent film, Raw view transform,
float32 ZIP EXR. The emitted colour is the pass value; Cycles' alpha is the occupancy.
Normals are emitted as ``n * 0.5 + 0.5`` (emission must not go negative) and decoded.
Camera axes for normals and depth are written into the material each frame.
"""

from __future__ import annotations

import os

import bpy
import numpy as np

from . import canonical
from .files import read_pass_image, set_file_format


class CyclesBackend:
    def __init__(self, renderer):
        self.renderer = renderer
        temp = renderer.temp
        _exact_cycles_settings(temp)
        set_file_format(temp, "exr")
        self.materials = {
            name: renderer.made(_pass_material(name)) for name in renderer.request.passes
        }
        self._exr_written = set()

    def render(self, frame: int) -> dict[str, np.ndarray]:
        with self.renderer.blender_busy():
            return self._render(frame)

    def _render(self, frame: int) -> dict[str, np.ndarray]:
        renderer = self.renderer
        temp = renderer.temp
        depsgraph = renderer.set_frame(frame)
        _, to_world = renderer.camera_matrices(depsgraph)
        images = {}
        layer = temp.view_layers[0]
        for name, material in self.materials.items():
            _aim_material(material, to_world)
            layer.material_override = material
            final = renderer.request.path(name, frame, "exr")
            if "exr" in renderer.request.formats:  # beside the final file, renamed at the end
                final.parent.mkdir(parents=True, exist_ok=True)
                path = final.with_name(f".{final.stem}.partial.exr")
            else:
                path = renderer.scratch_dir / f"{name}.exr"
            set_file_format(temp, "exr")
            temp.render.filepath = str(path)
            with bpy.context.temp_override(scene=temp):
                bpy.ops.render.render(write_still=True)
            pixels = read_pass_image(path)
            images[name] = _decode(name, pixels)
            if "exr" in renderer.request.formats:
                if not np.array_equal(images[name], pixels):  # normals, stray alpha
                    renderer.write_image(path, images[name], "exr")
                os.replace(path, final)  # the file holds exactly the array handed on
                self._exr_written.add((name, frame))
        layer.material_override = None
        return images

    def wrote_exr(self, name: str, frame: int) -> bool:
        return (name, frame) in self._exr_written

    def close(self):
        if self.renderer.temp is not None:
            self.renderer.temp.view_layers[0].material_override = None


def _exact_cycles_settings(scene):
    scene.render.engine = "CYCLES"
    cycles = scene.cycles
    cycles.device = "CPU"
    cycles.samples = 1
    cycles.use_adaptive_sampling = False
    cycles.use_denoising = False
    cycles.pixel_filter_type = "BOX"
    cycles.filter_width = 0.01
    cycles.max_bounces = 0
    cycles.seed = 0
    cycles.use_animated_seed = False
    scene.render.film_transparent = True
    scene.render.use_compositing = False
    scene.render.use_sequencer = False
    scene.render.use_file_extension = True
    scene.render.use_persistent_data = False


def _decode(name: str, pixels: np.ndarray) -> np.ndarray:
    occupancy = (pixels[..., 3:4] > 0.5).astype(np.float32)
    out = pixels.copy()
    out[..., 3:4] = occupancy
    if name == "normal":
        normal = pixels[..., :3] * 2.0 - 1.0
        length = np.linalg.norm(normal, axis=2, keepdims=True)
        out[..., :3] = np.where(occupancy > 0, normal / np.maximum(length, 1e-12), 0.0)
    else:
        out[..., :3] *= occupancy
    return out


def _pass_material(name: str):
    material = bpy.data.materials.new(f"AniRender {name} pass")
    if material.node_tree is None:  # before Blender 5.0 materials start without nodes
        material.use_nodes = True
    material.cycles.emission_sampling = "NONE"
    tree = material.node_tree
    nodes, links = tree.nodes, tree.links
    nodes.clear()
    output = nodes.new("ShaderNodeOutputMaterial")
    emission = nodes.new("ShaderNodeEmission")
    emission.inputs["Strength"].default_value = 1.0
    links.new(emission.outputs["Emission"], output.inputs["Surface"])
    colour = emission.inputs["Color"]
    if name == "udp":
        attribute = nodes.new("ShaderNodeAttribute")
        attribute.attribute_type = "GEOMETRY"
        attribute.attribute_name = canonical.ATTRIBUTE
        links.new(attribute.outputs["Vector"], colour)
    elif name == "uv":
        coords = nodes.new("ShaderNodeTexCoord")
        links.new(coords.outputs["UV"], colour)
    elif name == "occupancy":
        colour.default_value = (1.0, 1.0, 1.0, 1.0)
    elif name == "normal":
        geometry = nodes.new("ShaderNodeNewGeometry")
        combine = nodes.new("ShaderNodeCombineXYZ")
        for axis, socket in zip("xyz", combine.inputs, strict=True):
            dot = _vector_math(nodes, "DOT_PRODUCT", f"camera_{axis}")
            links.new(geometry.outputs["Normal"], dot.inputs[0])
            links.new(dot.outputs["Value"], socket)
        encode = _vector_math(nodes, "MULTIPLY_ADD", "encode")
        encode.inputs[1].default_value = (0.5, 0.5, 0.5)
        encode.inputs[2].default_value = (0.5, 0.5, 0.5)
        links.new(combine.outputs["Vector"], encode.inputs[0])
        links.new(encode.outputs["Vector"], colour)
    elif name == "depth":
        geometry = nodes.new("ShaderNodeNewGeometry")
        offset = _vector_math(nodes, "SUBTRACT", "camera_origin")
        links.new(geometry.outputs["Position"], offset.inputs[0])
        dot = _vector_math(nodes, "DOT_PRODUCT", "camera_forward")
        links.new(offset.outputs["Vector"], dot.inputs[0])
        combine = nodes.new("ShaderNodeCombineXYZ")
        for socket in combine.inputs:
            links.new(dot.outputs["Value"], socket)
        links.new(combine.outputs["Vector"], colour)
    return material


def _vector_math(nodes, operation, name):
    node = nodes.new("ShaderNodeVectorMath")
    node.operation = operation
    node.name = name
    return node


def _aim_material(material, to_world):
    """Write the camera's world axes and position into the normal/depth nodes."""
    nodes = material.node_tree.nodes
    axes = {"camera_x": to_world[:3, 0], "camera_y": to_world[:3, 1], "camera_z": to_world[:3, 2]}
    for node_name, axis in axes.items():
        if node_name in nodes:
            nodes[node_name].inputs[1].default_value = tuple(float(v) for v in axis)
    if "camera_origin" in nodes:
        nodes["camera_origin"].inputs[1].default_value = tuple(float(v) for v in to_world[:3, 3])
        forward = -to_world[:3, 2]
        nodes["camera_forward"].inputs[1].default_value = tuple(float(v) for v in forward)
