"""upsampler: a reproducible SRGAN study (44x44 -> 176x176): does an SRGAN trained on faces beat
one trained on varied photos, and bicubic, on held-out faces?

The common case::

    from upsampler import load_generator, upscale_image
    generator = load_generator("model_b")          # a shipped generator, or a path to a .keras file
    sr = upscale_image(generator, lr_uint8, scale=4)

Sub-modules: ``config`` (profiles), ``images`` and ``data`` (decoding, preprocessing,
tf.data), ``models`` (generator, discriminator), ``backbones`` (pretrained feature networks),
``losses``, ``train`` (exact-resume training), ``inference`` (tiled upscaling, comparison
figures), ``metrics`` (PSNR, SSIM, VGG16-HED feature distance, face identity, KID, FID, paired
statistics), ``pretrained`` (shipped generators), ``losslog`` and ``plots``, ``bench`` and ``cli``.
"""

from upsampler.utils.hardware import choose_keras_backend, prefer_onednn

__version__ = "0.3.0"

# Before TensorFlow loads (it loads on first use, below): its fast CPU kernels on every x86 CPU.
prefer_onednn()
# On a machine with JAX and no TensorFlow, Keras runs on JAX without being told (KERAS_BACKEND wins).
choose_keras_backend()

__all__ = ["__version__", "load_generator", "upscale_image"]


def __getattr__(name: str):
    # TensorFlow loads on first use, not at `import upsampler`.
    if name == "load_generator":
        from upsampler.archs.srgan import load_generator

        return load_generator
    if name == "upscale_image":
        from upsampler.inference.tiles import upscale_image

        return upscale_image
    raise AttributeError(f"module 'upsampler' has no attribute {name!r}")
