"""The SRGAN training steps: the networks, their optimisers and one compiled step per phase.

:class:`SRGANSteps` owns G, D, the content loss and the three Adam optimisers of a run and
runs one step on one batch: ``pretrain_step`` (generator-only pixel MSE) or
``adversarial_step`` (D then G, or both from one forward pass; ``train.update_order``).
It touches no files and knows nothing of epochs: the run directory is
:mod:`upsampler.training.rundir`, the epoch loop :mod:`upsampler.training.train`.

Speed (``benchmarks/README.md``): the steps are ``tf.function`` graphs (XLA per
``train.jit_compile``: auto = on GPUs only, it is slower on CPUs); HR VGG features are never
differentiated (and may be fed precomputed, see :mod:`upsampler.training.feed`); the changes in
:class:`Speedups` keep the maths and are chosen explicitly by the caller.

Several devices: ``strategy`` runs the same step under a ``tf.distribute`` strategy with
global-batch semantics; see :mod:`upsampler.training.distribute`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from upsampler.config import Config

# What a step returns, in order.
STEP_VALUES = ["d_loss", "g_loss", "content_loss", "adversarial_loss", "d_real", "d_fake"]


@dataclass(frozen=True)
class Speedups:
    """Changes that keep the maths and only change the speed of a step (all public Keras API).

    fused_layers: fused BatchNorm, PReLU with fewer ops and a space-to-depth output convolution
        in the *training* G and D; the exported ``generator.keras`` always has stock layers.
    fused_adam: Keras' Adam with TensorFlow's one-kernel ``ResourceApplyAdam`` update (the same
        slots, so checkpoints are interchangeable with ``keras.optimizers.Adam``).
    shared_d_head: one pass of D's Flatten -> Dense head over the HR and SR batches together.
    """

    fused_layers: bool = True
    fused_adam: bool = True
    shared_d_head: bool = True

    @classmethod
    def none(cls) -> "Speedups":
        """The straightforward step: stock Keras layers and Adam, two D calls (the benchmark baseline)."""
        return cls(fused_layers=False, fused_adam=False, shared_d_head=False)

    def describe(self) -> str:
        on = [f.name.replace("_", " ") for f in fields(self) if getattr(self, f.name)]
        return "speed-ups: " + (", ".join(on) if on else "none (stock layers and Adam, two D calls)")


_FUSED_ADAM = None


def fused_adam_class():
    """``keras.optimizers.Adam`` whose per-variable update is TensorFlow's fused ``ResourceApplyAdam``.

    Keras 3's Adam updates each variable with about ten separate elementwise ops; on the
    discriminator's 63 M-parameter Dense kernel that is several GB of memory traffic per
    step. ``ResourceApplyAdam`` does the same update (``lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)``,
    ``m += (g - m)(1 - b1)``, ``v += (g^2 - v)(1 - b2)``, ``w -= lr_t m / (sqrt(v) + eps)``) in
    one pass. The slots are found through the public ``add_variable_from_reference`` hook, so
    they are Adam's own and checkpoints are interchangeable with ``keras.optimizers.Adam``.
    Distributed (mirrored) slots and amsgrad use the Keras update.
    """
    global _FUSED_ADAM
    if _FUSED_ADAM is not None:
        return _FUSED_ADAM
    import keras
    import tensorflow as tf

    class SlotTable:  # a plain object, so neither Keras nor tf.train.Checkpoint tracks it twice
        def __init__(self):
            self.by_key: dict[object, dict[str, object]] = {}

    def tf_variable_key(variable):
        """The hashable reference of the tf.Variable behind a Keras variable (``update_step``
        receives the tf.Variable on the TensorFlow backend, ``build`` the Keras one)."""
        inner = variable.value if isinstance(variable, keras.Variable) else variable
        return inner.ref() if isinstance(inner, tf.Variable) else None

    class FusedAdam(keras.optimizers.Adam):
        def build(self, var_list):
            self.slot_table = SlotTable()
            super().build(var_list)

        def add_variable_from_reference(self, reference_variable, name=None, initializer="zeros"):
            slot = super().add_variable_from_reference(reference_variable, name, initializer)
            key = tf_variable_key(reference_variable)
            if key is not None:
                self.slot_table.by_key.setdefault(key, {})[name] = slot
            return slot

        def update_step(self, gradient, variable, learning_rate):
            if (self.amsgrad or isinstance(variable, tf.distribute.DistributedValues)
                    or not hasattr(variable, "handle")):
                return super().update_step(gradient, variable, learning_rate)
            slots = self.slot_table.by_key.get(tf_variable_key(variable), {})
            m, v = slots.get("momentum"), slots.get("velocity")
            if m is None or v is None or isinstance(m.value, tf.distribute.DistributedValues):
                return super().update_step(gradient, variable, learning_rate)
            dtype = variable.dtype
            step = tf.cast(self.iterations + 1, dtype)
            beta_1 = tf.cast(self.beta_1, dtype)
            beta_2 = tf.cast(self.beta_2, dtype)
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=m.value.handle, v=v.value.handle,
                beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
                lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
                epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype), use_locking=False,
            )

    _FUSED_ADAM = FusedAdam
    return FusedAdam


def needs_op_determinism(deterministic: bool, *, on_gpu: bool, xla: bool) -> bool:
    """Whether a deterministic run needs TensorFlow's op determinism: where kernels would
    otherwise vary from run to run, on GPUs (atomics, autotuned algorithms) and under XLA. The
    CPU kernels of these steps (oneDNN convolutions and matmuls, Eigen reductions over fixed
    shards) give the same bits every run for a given machine and thread count without it, and
    it costs time there; the exact-resume tests (tests/test_train.py, the chaos test) run on
    the CPU without it."""
    return bool(deterministic and (on_gpu or xla))


class SRGANSteps:
    """G, D, the content loss, the optimisers, and the compiled steps of one run.

    Args:
        config: the run's :class:`Config` (model, loss and the optimiser fields of ``train``).
        strategy: a ``tf.distribute.Strategy``; default ``make_strategy(config.train.strategy)``.
            Everything is created in its scope; ``config.train.batch_size`` is the global batch.
        precision: a ``train.precision`` value; default the config's (``auto``: by hardware,
            :func:`upsampler.training.precision.resolve_precision`).
        speedups: :class:`Speedups` (default all on); ``Speedups.none()`` is the plain step.

    ``pretrain_step(lr, hr, step)`` and ``adversarial_step(lr, hr, step)`` return the float
    vector ``[d_loss, g_loss, content, adversarial, D(hr), D(sr)]`` (NaN where a phase has no
    such value); ``step`` (int64) seeds the noisy labels, so a step is a pure function of the
    weights, the batch and its number.
    """

    def __init__(self, config: Config, *, strategy=None, precision: str | None = None,
                 speedups: Speedups | None = None):
        import keras
        import tensorflow as tf

        from upsampler.training import distribute
        from upsampler.losses.srgan import ContentLoss
        from upsampler.archs.srgan import build_models_from_config
        from upsampler.training.precision import resolve_precision

        self.tf, self.keras = tf, keras
        self.config = config
        self.speedups = Speedups() if speedups is None else speedups
        t = config.train
        on_gpu = bool(tf.config.list_logical_devices("GPU"))
        jit = {"on": True, "off": False}.get(t.jit_compile, on_gpu)
        self.op_determinism = needs_op_determinism(t.deterministic, on_gpu=on_gpu, xla=jit)
        if self.op_determinism:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(t.seed)

        self.strategy = strategy if strategy is not None else distribute.make_strategy(t.strategy)
        self.num_replicas = distribute.num_replicas(self.strategy)
        if t.batch_size % self.num_replicas:
            raise ValueError(
                f"train.batch_size ({t.batch_size}) is the global batch and must be divisible by the number of "
                f"replicas ({self.num_replicas}, {distribute.describe(self.strategy)})"
            )
        self.precision = resolve_precision(precision or t.precision)
        self.loss_scaling = self.precision == "mixed_float16"
        self.jit_compile = jit and self.num_replicas == 1  # see upsampler.training.distribute: XLA on one replica only

        previous_policy = keras.mixed_precision.dtype_policy()
        keras.mixed_precision.set_dtype_policy(self.precision)
        try:
            with self.strategy.scope():
                self.generator, self.discriminator = build_models_from_config(
                    config, variant="fast" if self.speedups.fused_layers else "stock")
                if self.num_replicas > 1:
                    distribute.set_synchronized_batch_norm(self.generator, True)
                    distribute.set_synchronized_batch_norm(self.discriminator, True)
                self.content_loss = ContentLoss(config.loss, seed=t.seed, xla=self.jit_compile)
                adam = dict(beta_1=t.beta_1, beta_2=t.beta_2, epsilon=t.epsilon)
                self.g_optimizer = self._optimizer(t.learning_rate, adam)
                self.d_optimizer = self._optimizer(t.learning_rate, adam)
                self.pretrain_optimizer = self._optimizer(t.pretrain_learning_rate, adam)
                # Build the slots now so a checkpoint restore fills them instead of deferring.
                self.g_optimizer.build(self.generator.trainable_variables)
                self.d_optimizer.build(self.discriminator.trainable_variables)
                self.pretrain_optimizer.build(self.generator.trainable_variables)
        finally:
            keras.mixed_precision.set_dtype_policy(previous_policy)
        self.d_parts = self._split_discriminator() if self.speedups.shared_d_head else None
        self.adversarial_step = self._compile(lambda *a: self.adversarial_replica_step(*a))
        self.pretrain_step = self._compile(lambda *a: self.pretrain_replica_step(*a))

    def _optimizer(self, learning_rate, adam):
        adam_class = fused_adam_class() if self.speedups.fused_adam else self.keras.optimizers.Adam
        opt = adam_class(learning_rate=learning_rate, name="adam", **adam)
        return self.keras.optimizers.LossScaleOptimizer(opt) if self.loss_scaling else opt

    def checkpoint_objects(self) -> dict:
        """The trackables a checkpoint of this run holds (the names are the checkpoint's keys)."""
        return dict(generator=self.generator, discriminator=self.discriminator, g_optimizer=self.g_optimizer,
                    d_optimizer=self.d_optimizer, pretrain_optimizer=self.pretrain_optimizer)

    def describe(self) -> str:
        from upsampler.training import distribute

        return ", ".join([f"device strategy {distribute.describe(self.strategy)}", f"precision {self.precision}",
                          f"XLA {'on' if self.jit_compile else 'off'}",
                          "op determinism " + ("on" if self.op_determinism else
                                               "off (CPU kernels are deterministic)" if self.config.train.deterministic
                                               else "off"),
                          self.speedups.describe()])

    # -- compilation and distribution ----------------------------------------------------------
    def _compile(self, replica_step):
        """``tf.function`` running ``replica_step`` on every replica and summing the results.

        Each replica returns its share of the global-batch means (``losses.global_batch_mean``),
        so the sum over replicas is the global value; on one device it is the value itself.
        """
        tf = self.tf
        strategy = self.strategy

        def step(lr, hr, step_number):
            per_replica = strategy.run(replica_step, args=(lr, hr, step_number))
            if self.num_replicas == 1:
                return strategy.experimental_local_results(per_replica)[0]
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        return tf.function(step, jit_compile=self.jit_compile, reduce_retracing=True, autograph=False)

    def _replica_slice(self, values):
        """This replica's rows of a global-batch tensor (consecutive slices in replica order)."""
        tf = self.tf
        ctx = tf.distribute.get_replica_context()
        n = ctx.num_replicas_in_sync
        if n == 1:
            return values
        per_replica = self.config.train.batch_size // n
        start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * per_replica
        return values[start: start + per_replica]

    def _apply(self, optimizer, grads, variables):
        """``optimizer.apply`` that skips a non-finite loss-scaled step on every replica alike."""
        tf = self.tf
        if self.loss_scaling and self.num_replicas > 1:
            ctx = tf.distribute.get_replica_context()
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
            non_finite_replicas = ctx.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
            all_finite = non_finite_replicas < 0.5
            grads = [tf.where(all_finite, g, tf.fill(tf.shape(g), tf.constant(float("nan"), g.dtype))) for g in grads]
        optimizer.apply(grads, variables)

    def _scaled(self, optimizer, loss):
        return optimizer.scale_loss(loss) if self.loss_scaling else loss

    # -- the discriminator ---------------------------------------------------------------------
    def _split_discriminator(self):
        """(trunk, head) sub-models of D cut in front of its ``dense_0`` layer (the SRGAN D), else None.

        Both share D's layers and weights; only the functional graph is cut.
        """
        d = self.discriminator
        if "dense_0" not in [layer.name for layer in d.layers]:
            return None
        cut = d.get_layer("dense_0").input
        try:
            head = self.keras.Model(cut, d.output, name=f"{d.name}_head")
        except ValueError:  # the head also reads tensors from before the cut
            return None
        return self.keras.Model(d.input, cut, name=f"{d.name}_trunk"), head

    def discriminate(self, hr, sr):
        """D(HR) and D(SR) in training mode, exactly as two calls of D.

        With ``shared_d_head`` the convolutional trunk runs on each batch separately (its
        BatchNormalization keeps per-batch statistics, real first, as two D calls would) and the
        per-image head (pooling or Flatten -> Dense 1024 -> Dense 1), which couples no images,
        runs once over both batches: the Dense kernel (63 M parameters with the study's Flatten)
        is read once instead of twice and its weight gradient is one matmul instead of two plus a sum.
        """
        if self.d_parts is None:
            return self.discriminator(hr, training=True), self.discriminator(sr, training=True)
        trunk, head = self.d_parts
        x = head(self.tf.concat([trunk(hr, training=True), trunk(sr, training=True)], axis=0), training=True)
        n = self.tf.shape(hr)[0]
        return x[:n], x[n:]

    # -- the steps (per replica) ---------------------------------------------------------------
    def adversarial_replica_step(self, lr, hr, step):
        """One adversarial step on this replica's slice of the global batch.

        ``hr`` is the HR batch, or ``(hr, hr_features)`` when the feature cache is on.
        Returns this replica's share of [d_loss, g_loss, content, adversarial, D(hr), D(sr)].
        """
        tf = self.tf
        from upsampler.losses.srgan import bce_with_logits_per_example, global_batch_mean, noisy_labels

        hr, hr_features = hr if isinstance(hr, (tuple, list)) else (hr, None)
        l, t = self.config.loss, self.config.train
        global_batch = t.batch_size
        seed_pair = tf.stack([tf.constant(t.seed, tf.int64), step])
        # Drawn for the whole global batch, then sliced: the same labels whatever the replica count.
        real_labels = self._replica_slice(
            noisy_labels(global_batch, l.real_label_mean, l.label_std, tf.cast(seed_pair * 2, tf.int32)))
        fake_labels = self._replica_slice(
            noisy_labels(global_batch, l.fake_label_mean, l.label_std, tf.cast(seed_pair * 2 + 1, tf.int32)))
        if self.content_loss.kind == "vgg" and hr_features is None:
            hr_features = tf.stop_gradient(self.content_loss.features(hr))  # outside both tapes

        def mean(per_example):
            return global_batch_mean(per_example, global_batch)

        def d_loss_of(real_logits, fake_logits):
            return mean(bce_with_logits_per_example(real_labels, real_logits)
                        + bce_with_logits_per_example(fake_labels, fake_logits))

        def g_losses(sr, fake_logits):
            content = mean(self.content_loss.per_example(hr, sr, hr_features=hr_features))
            adversarial = mean(bce_with_logits_per_example(tf.ones_like(fake_logits, tf.float32), fake_logits))
            return content, adversarial, content + l.adversarial_weight * adversarial

        g_vars, d_vars = self.generator.trainable_variables, self.discriminator.trainable_variables
        if l.adversarial_weight and t.update_order == "d_then_g":
            # The paper's alternation: D steps on (HR, SR), then G steps against the updated D.
            with tf.GradientTape() as g_tape:
                sr = self.generator(lr, training=True)
                with g_tape.stop_recording(), tf.GradientTape() as d_tape:
                    real_logits, fake_logits = self.discriminate(hr, sr)
                    d_loss = d_loss_of(real_logits, fake_logits)
                    d_scaled = self._scaled(self.d_optimizer, d_loss)
                with g_tape.stop_recording():
                    self._apply(self.d_optimizer, d_tape.gradient(d_scaled, d_vars), d_vars)
                content, adversarial, g_loss = g_losses(sr, self.discriminator(sr, training=True))
                g_scaled = self._scaled(self.g_optimizer, g_loss)
            self._apply(self.g_optimizer, g_tape.gradient(g_scaled, g_vars), g_vars)
        else:
            # Both networks step from one forward pass: G's gradient sees D before its update.
            with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
                sr = self.generator(lr, training=True)
                real_logits, fake_logits = self.discriminate(hr, sr)  # fake_logits serve both losses
                d_loss = d_loss_of(real_logits, fake_logits)
                content, adversarial, g_loss = g_losses(sr, fake_logits)
                g_scaled = self._scaled(self.g_optimizer, g_loss)
                d_scaled = self._scaled(self.d_optimizer, d_loss)
            g_grads = g_tape.gradient(g_scaled, g_vars)
            d_grads = d_tape.gradient(d_scaled, d_vars)
            self._apply(self.g_optimizer, g_grads, g_vars)
            self._apply(self.d_optimizer, d_grads, d_vars)
        d_real = mean(tf.sigmoid(tf.cast(tf.reshape(real_logits, [-1]), tf.float32)))
        d_fake = mean(tf.sigmoid(tf.cast(tf.reshape(fake_logits, [-1]), tf.float32)))
        return tf.stack([d_loss, g_loss, content, adversarial, d_real, d_fake])

    def pretrain_replica_step(self, lr, hr, step):
        """One generator-only pixel-MSE step; returns [nan, loss, loss, nan, nan, nan]."""
        tf = self.tf
        from upsampler.losses.srgan import global_batch_mean, pixel_mse_per_example

        hr = hr[0] if isinstance(hr, (tuple, list)) else hr
        g_vars = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            sr = self.generator(lr, training=True)
            loss = global_batch_mean(pixel_mse_per_example(hr, sr), self.config.train.batch_size)
            scaled = self._scaled(self.pretrain_optimizer, loss)
        self._apply(self.pretrain_optimizer, tape.gradient(scaled, g_vars), g_vars)
        nan = tf.constant(float("nan"))
        return tf.stack([nan, loss, loss, nan, nan, nan])

