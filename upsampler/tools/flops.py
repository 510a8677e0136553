"""Useful FLOPs of the models and of the training steps, counted from the layer shapes: the
convention behind ``upsampler benchmark``'s GFLOP/s (:mod:`upsampler.tools.bench`).

Useful FLOPs (the convention; :func:`step_flops`): multiply-accumulates of every Conv and
Dense layer, counted from the layer shapes by walking the Keras graph, x2 FLOPs each.
Backward = 2x forward for layers with trainable weights (input and weight gradients),
1x for frozen layers (input gradient only: the VGG19 backward through SR). A straightforward
adversarial step needs, per image::

    G forward + G backward                       (3 x G)
    D forward + backward, on HR and on SR        (2 x 3 x D)
    VGG forward on SR and on HR + backward (SR)  (3 x VGG)

Normalisation, activations, losses and the optimiser updates are not counted. Work the
trainer skips (HR VGG features computed once per dataset by the feature cache) is still
counted in ``useful_gflops``, so skipping or caching raises that figure; ``executed_gflops``
beside it counts only the work the step does (without the cached HR VGG forward), and
``ratio_executed_to_matmul`` is its ratio. Work the step does beyond the convention (the
generator's extra input-gradient pass back through D on SR) is counted in neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FLOP_CONVENTION = (
    "useful FLOPs = 2 x MACs of every Conv/Dense layer from the layer shapes; backward = 2 x forward for layers "
    "with trainable weights, 1 x (input gradient only) for the frozen VGG; adversarial step per image = "
    "3 G + 6 D (HR and SR) + 3 VGG (forward SR and HR, backward SR); normalisation, activations and optimiser "
    "updates not counted; work skipped by caching still counted"
)


# ---- FLOP counting ---------------------------------------------------------------------------

@dataclass
class LayerCount:
    name: str
    kind: str
    macs: int  # multiply-accumulates of one forward pass of the counted input
    trainable: bool

    @property
    def forward_flops(self) -> int:
        return 2 * self.macs

    @property
    def backward_flops(self) -> int:
        """2x forward with trainable weights (input + weight gradients), else 1x (input gradient)."""
        return (2 if self.trainable else 1) * self.forward_flops


@dataclass
class ModelCount:
    name: str
    input_shape: tuple
    layers: list[LayerCount] = field(default_factory=list)

    @property
    def forward_flops(self) -> int:
        return sum(layer.forward_flops for layer in self.layers)

    @property
    def backward_flops(self) -> int:
        return sum(layer.backward_flops for layer in self.layers)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def _layer_macs(layer, input_shapes: list[tuple], output_shape: tuple) -> tuple[str, int] | None:
    """(kind, MACs) of a Conv/Dense layer for concrete input/output shapes, else None."""
    import keras

    if not input_shapes:
        return None
    in_shape = tuple(input_shapes[0])
    if isinstance(layer, keras.layers.Dense):
        return "Dense", _prod(in_shape[:-1]) * int(in_shape[-1]) * int(layer.units)
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        # output channels = cin * depth_multiplier, each one k-tap filter of one input channel
        return "DepthwiseConv", _prod(output_shape[:-1]) * _prod(layer.kernel_size) * int(output_shape[-1])
    transposed = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
    if isinstance(layer, transposed):
        return "ConvTranspose", _prod(in_shape[:-1]) * _prod(layer.kernel_size) * int(in_shape[-1]) * int(layer.filters)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise ValueError(f"{layer.name}: only channels_last (NHWC) convolutions are counted")
        groups = int(getattr(layer, "groups", 1) or 1)
        return "Conv", _prod(output_shape[:-1]) * _prod(layer.kernel_size) * (int(in_shape[-1]) // groups) * int(layer.filters)
    return None


def _shape_of(x) -> tuple:
    return tuple(x.shape)


def count_model(model, input_shape: tuple, *, trainable: bool | None = None) -> ModelCount:
    """Forward MACs of every Conv/Dense layer of ``model`` for an input of ``input_shape``.

    ``input_shape`` includes the batch (``(1, 176, 176, 3)`` gives per-image counts). Models
    with unknown spatial sizes (the generator, VGG) are fine: the concrete shapes are
    propagated through the functional graph with each layer's ``compute_output_spec``.
    Nested models are walked recursively. ``trainable`` overrides each layer's own flag.
    """
    import keras

    result = ModelCount(model.name, tuple(input_shape))

    def record(op, args, kwargs, output):
        shapes = [_shape_of(a) for a in keras.tree.flatten((args, kwargs)) if isinstance(a, keras.KerasTensor)]
        out_shape = _shape_of(keras.tree.flatten(output)[0])
        counted = _layer_macs(op, shapes, out_shape)
        if counted is not None:
            kind, macs = counted
            flag = bool(op.trainable) if trainable is None else trainable
            result.layers.append(LayerCount(op.name, kind, int(macs), flag))

    def walk(functional, spec, model_trainable):
        def operation_fn(op):
            def run(*args, **kwargs):
                kwargs.pop("training", None)
                if isinstance(op, keras.Model) and hasattr(op, "_run_through_graph"):
                    return walk(op, args[0], model_trainable and op.trainable)
                output = op.compute_output_spec(*args, **kwargs)
                record(op, args, kwargs, output)
                return output

            return run

        outputs = functional._run_through_graph(spec, operation_fn=operation_fn)
        return outputs

    spec = keras.KerasTensor(tuple(input_shape), dtype="float32")
    if hasattr(model, "_run_through_graph"):
        walk(model, spec, model.trainable)
    else:  # a subclassed model or a bare Sequential: walk its layers in order
        x = spec
        for layer in model.layers:
            y = layer.compute_output_spec(x)
            record(layer, (x,), {}, y)
            x = y
    return result


def step_flops(generator, discriminator, vgg, *, lr_size: int, hr_size: int, batch: int) -> dict[str, Any]:
    """Useful FLOPs of one adversarial and one pre-training step (see the module docstring)."""
    g = count_model(generator, (1, lr_size, lr_size, 3))
    d = count_model(discriminator, (1, hr_size, hr_size, 3))
    v = count_model(vgg, (1, hr_size, hr_size, 3), trainable=False) if vgg is not None else None
    g_step = g.forward_flops + g.backward_flops
    d_step = 2 * (d.forward_flops + d.backward_flops)
    v_step = 2 * v.forward_flops + v.backward_flops if v is not None else 0
    per_image = g_step + d_step + v_step
    return {
        "convention": FLOP_CONVENTION,
        "generator_forward_gflop_per_image": g.forward_flops / 1e9,
        "discriminator_forward_gflop_per_image": d.forward_flops / 1e9,
        "vgg_forward_gflop_per_image": (v.forward_flops / 1e9) if v is not None else 0.0,
        "adversarial_gflop_per_image": per_image / 1e9,
        "adversarial_gflop_per_step": per_image * batch / 1e9,
        "hr_vgg_forward_gflop_per_step": (v.forward_flops * batch / 1e9) if v is not None else 0.0,
        "pretrain_gflop_per_image": g_step / 1e9,
        "pretrain_gflop_per_step": g_step * batch / 1e9,
    }
