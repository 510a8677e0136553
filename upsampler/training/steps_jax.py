"""The SRGAN training steps on Keras' JAX backend: the same maths as :mod:`upsampler.training.steps_tf`.

One jitted function per phase maps ``(state, batch) -> (state, values)``: ``state`` holds every
variable of G, D and the three Adam optimisers as JAX arrays (donated, so each step updates
them in place on the device); the networks run through ``stateless_call`` and gradients come
from ``jax.value_and_grad`` / ``jax.vjp``. The adversarial step is the paper's alternation, as
the TensorFlow step with ``train.update_order=d_then_g``:

1. SR = G(LR) in training mode (G's BatchNorm statistics move once);
2. D steps on BCE(real labels, D(HR)) + BCE(fake labels, D(SR)), SR held constant;
3. G steps on content(HR, SR) + w * BCE(1, D'(SR)) against the updated D', back through the
   same forward pass of G.

The noisy labels come from :func:`upsampler.losses.srgan.noisy_labels_numpy` (host, keyed by seed and
step), batches arrive as uint8 NumPy arrays, and the precision follows ``train.precision``
(``mixed_bfloat16`` on GPUs from Ampere on). ``sync_to_models()`` writes the arrays back into the
Keras variables (export, samples, evaluation).

Several local devices (GPUs, or XLA host devices in tests) train data-parallel through
``jax.sharding``: the state is replicated, each batch is split along its first axis, and XLA's
partitioner inserts the all-reduces. The maths is the single-device step's - BatchNorm's batch
statistics too are those of the whole global batch - so a run on N devices matches a run on one
up to the order of floating-point sums (``tests/test_jax_backend.py``).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from upsampler.config import Config

STATE_GROUPS = ("g_trainable", "g_non_trainable", "d_trainable", "d_non_trainable",
                "g_optimizer", "d_optimizer", "pretrain_optimizer")


class JaxSRGANSteps:
    """G, D, the content loss, the optimisers and the jitted steps of one run on JAX.

    The interface of :class:`upsampler.training.steps_tf.SRGANSteps` that the epoch loop uses:
    ``pretrain_step(lr, hr, step)`` and ``adversarial_step(lr, hr, step)`` take uint8 (or
    [-1, 1] float) NumPy batches and return the device vector ``[d_loss, g_loss, content, adversarial, D(hr), D(sr)]``.
    """

    backend = "jax"

    def __init__(self, config: Config, *, precision: str | None = None, speedups=None, strategy=None):
        import jax
        import keras

        from upsampler.losses.srgan import ContentLoss
        from upsampler.archs.srgan import build_models_from_config
        from upsampler.training.precision import resolve_precision

        if strategy is not None or config.train.strategy not in ("default", "auto"):
            raise ValueError(f"train.strategy={config.train.strategy} is TensorFlow's (tf.distribute); on JAX use "
                             "train.strategy=default")
        if config.train.update_order != "d_then_g":
            raise ValueError("the JAX step implements train.update_order=d_then_g (the paper's); "
                             f"got {config.train.update_order}")
        self.jax, self.keras = jax, keras
        self.config = config
        t = config.train
        keras.utils.set_random_seed(t.seed)
        self.precision = resolve_precision(precision or t.precision)
        if self.precision == "mixed_float16":
            raise ValueError("train.precision=mixed_float16 needs loss scaling, which the JAX step does not do; use "
                             "mixed_bfloat16 or float32")
        devices = jax.local_devices()
        self.num_replicas = len(devices)
        if t.batch_size % self.num_replicas:
            raise ValueError(f"train.batch_size={t.batch_size} does not split over {self.num_replicas} devices")
        self.jit_compile = True
        self.strategy = None
        self.on_gpu = any(d.platform == "gpu" for d in jax.devices())
        self.speedups = speedups

        previous = keras.mixed_precision.dtype_policy()
        keras.mixed_precision.set_dtype_policy(self.precision)
        try:
            self.generator, self.discriminator = build_models_from_config(config, variant="stock")
            self.content_loss = ContentLoss(config.loss, seed=t.seed, xla=True)
            adam = dict(beta_1=t.beta_1, beta_2=t.beta_2, epsilon=t.epsilon)
            self.g_optimizer = keras.optimizers.Adam(learning_rate=t.learning_rate, name="adam", **adam)
            self.d_optimizer = keras.optimizers.Adam(learning_rate=t.learning_rate, name="adam", **adam)
            self.pretrain_optimizer = keras.optimizers.Adam(learning_rate=t.pretrain_learning_rate, name="adam", **adam)
            self.g_optimizer.build(self.generator.trainable_variables)
            self.d_optimizer.build(self.discriminator.trainable_variables)
            self.pretrain_optimizer.build(self.generator.trainable_variables)
        finally:
            keras.mixed_precision.set_dtype_policy(previous)
        vgg = self.content_loss.vgg
        self.vgg_weights = [v.value for v in vgg.non_trainable_variables] if vgg is not None else []
        self._batch_sharding = self._replicated = None
        if self.num_replicas > 1:  # data parallel: replicated state, batches split along axis 0
            from jax.sharding import Mesh, NamedSharding, PartitionSpec

            mesh = Mesh(np.array(devices), ("data",))
            self._replicated = NamedSharding(mesh, PartitionSpec())
            self._batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
            self.vgg_weights = jax.device_put(self.vgg_weights, self._replicated)
        self.state = self._read_models()
        self._pretrain = jax.jit(self._pretrain_fn, donate_argnums=(0,))
        self._adversarial = jax.jit(self._adversarial_fn, donate_argnums=(0,))

    # -- state <-> Keras variables -------------------------------------------------------------
    def _variable_lists(self):
        g, d = self.generator, self.discriminator
        return (g.trainable_variables, g.non_trainable_variables, d.trainable_variables, d.non_trainable_variables,
                self.g_optimizer.variables, self.d_optimizer.variables, self.pretrain_optimizer.variables)

    def _read_models(self):
        state = tuple([v.value for v in group] for group in self._variable_lists())
        return state if self._replicated is None else self.jax.device_put(state, self._replicated)

    def _split(self, *arrays):
        """Host batches onto the devices, split along the batch axis (unchanged on one device)."""
        if self._batch_sharding is None:
            return arrays
        return tuple(self.jax.device_put(np.asarray(a), self._batch_sharding) for a in arrays)

    def sync_to_models(self) -> None:
        """Write the current state into the Keras variables of G, D and the optimisers."""
        for group, values in zip(self._variable_lists(), self.state):
            for variable, value in zip(group, values):
                variable.assign(value)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every variable as a NumPy array, named ``<group>/<index>:<variable path>``."""
        out = {}
        for name, group, values in zip(STATE_GROUPS, self._variable_lists(), self.state):
            for i, (variable, value) in enumerate(zip(group, values)):
                out[f"{name}/{i:03d}:{variable.path}"] = np.asarray(value)
        return out

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        import jax.numpy as jnp

        state = []
        for name, group, values in zip(STATE_GROUPS, self._variable_lists(), self.state):
            state.append([jnp.asarray(arrays[f"{name}/{i:03d}:{variable.path}"], dtype=value.dtype)
                          for i, (variable, value) in enumerate(zip(group, values))])
        self.state = tuple(state) if self._replicated is None else self.jax.device_put(tuple(state), self._replicated)
        self.sync_to_models()

    def describe(self) -> str:
        devices = self.jax.devices()
        return (f"Keras on JAX {self.jax.__version__} ({len(devices)} {devices[0].platform} device(s): "
                f"{getattr(devices[0], 'device_kind', devices[0])}), precision {self.precision}, jitted steps with "
                "donated state" + (f", data parallel over {self.num_replicas} devices" if self.num_replicas > 1 else ""))

    # -- the maths -----------------------------------------------------------------------------
    def _vgg_call(self, vgg_weights):
        vgg = self.content_loss.vgg
        if vgg is None:
            return None
        return lambda x: vgg.stateless_call([], vgg_weights, x, training=False)[0]

    def _pretrain_fn(self, state, vgg_weights, lr_u8, hr_u8):
        import jax
        from keras import ops

        from upsampler.losses.srgan import pixel_mse_per_example

        g_tv, g_ntv, d_tv, d_ntv, g_opt, d_opt, pre_opt = state
        lr, hr = _unit(lr_u8), _unit(hr_u8)

        def loss_fn(g_tv):
            sr, g_ntv_new = self.generator.stateless_call(g_tv, g_ntv, lr, training=True)
            return ops.mean(pixel_mse_per_example(hr, sr)), g_ntv_new

        (loss, g_ntv), grads = jax.value_and_grad(loss_fn, has_aux=True)(g_tv)
        g_tv, pre_opt = self.pretrain_optimizer.stateless_apply(pre_opt, grads, g_tv)
        nan = jax.numpy.float32(jax.numpy.nan)
        values = jax.numpy.stack([nan, loss, loss, nan, nan, nan])
        return (g_tv, g_ntv, d_tv, d_ntv, g_opt, d_opt, pre_opt), values

    def _adversarial_fn(self, state, vgg_weights, lr_u8, hr_u8, real_labels, fake_labels):
        import jax
        from keras import ops

        from upsampler.losses.srgan import bce_with_logits_per_example

        g_tv, g_ntv, d_tv, d_ntv, g_opt, d_opt, pre_opt = state
        lr, hr = _unit(lr_u8), _unit(hr_u8)
        l = self.config.loss
        G, D = self.generator, self.discriminator
        vgg_call = self._vgg_call(vgg_weights)

        # 1. One forward pass of G; its pullback serves G's step below.
        sr, g_pullback, g_ntv = jax.vjp(lambda w: G.stateless_call(w, g_ntv, lr, training=True), g_tv, has_aux=True)

        # 2. D's step on (HR, SR), SR a constant.
        def d_loss_fn(d_tv):
            real, ntv = D.stateless_call(d_tv, d_ntv, hr, training=True)
            fake, ntv = D.stateless_call(d_tv, ntv, jax.lax.stop_gradient(sr), training=True)
            loss = ops.mean(bce_with_logits_per_example(real_labels, real) + bce_with_logits_per_example(fake_labels, fake))
            return loss, (ntv, real, fake)

        (d_loss, (d_ntv, real, fake)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_tv)
        d_tv, d_opt = self.d_optimizer.stateless_apply(d_opt, d_grads, d_tv)

        # 3. G's step against the updated D, through the pullback of step 1.
        hr_features = (jax.lax.stop_gradient(self.content_loss.features(hr, vgg_call))
                       if self.content_loss.kind == "vgg" else None)

        def g_loss_fn(sr):
            fake_now, ntv = D.stateless_call(d_tv, d_ntv, sr, training=True)
            content = ops.mean(self.content_loss.per_example(hr, sr, hr_features=hr_features, vgg_call=vgg_call))
            adversarial = ops.mean(bce_with_logits_per_example(ops.ones_like(ops.cast(fake_now, "float32")), fake_now))
            return content + l.adversarial_weight * adversarial, (content, adversarial, ntv)

        (g_loss, (content, adversarial, d_ntv)), sr_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(sr)
        (g_grads,) = g_pullback(sr_grad)
        g_tv, g_opt = self.g_optimizer.stateless_apply(g_opt, g_grads, g_tv)

        d_real = ops.mean(ops.sigmoid(ops.cast(ops.reshape(real, (-1,)), "float32")))
        d_fake = ops.mean(ops.sigmoid(ops.cast(ops.reshape(fake, (-1,)), "float32")))
        values = jax.numpy.stack([d_loss, g_loss, content, adversarial, d_real, d_fake]).astype("float32")
        return (g_tv, g_ntv, d_tv, d_ntv, g_opt, d_opt, pre_opt), values

    # -- the steps -----------------------------------------------------------------------------
    def pretrain_step(self, lr, hr, step: int):
        self.state, values = self._pretrain(self.state, self.vgg_weights, *self._split(lr, hr))
        return values

    def adversarial_step(self, lr, hr, step: int):
        from upsampler.losses.srgan import noisy_labels_numpy

        l, t = self.config.loss, self.config.train
        n = t.batch_size
        real = noisy_labels_numpy(n, l.real_label_mean, l.label_std, t.seed, int(step), 0)
        fake = noisy_labels_numpy(n, l.fake_label_mean, l.label_std, t.seed, int(step), 1)
        self.state, values = self._adversarial(self.state, self.vgg_weights, *self._split(lr, hr, real, fake))
        return values


def _unit(x):
    """uint8 [0, 255] -> float32 [-1, 1], as the TensorFlow pipeline (``x / 127.5 - 1``); floats pass."""
    from keras import ops

    if str(x.dtype) == "uint8":
        return ops.cast(x, "float32") / 127.5 - 1.0
    return ops.cast(x, "float32")
