"""Training: the loop, one GAN step per backend (steps_tf, steps_jax), run directories, checkpoints, BatchNorm statistics, devices."""
