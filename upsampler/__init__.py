"""upsampler: a reproducible SRGAN study (44x44 -> 176x176), COCO vs CelebA, judged by FID.

Sub-modules: ``config`` (profiles), ``images`` and ``data`` (decoding, preprocessing,
tf.data), ``models`` (generator, discriminator), ``losses``, ``train`` (exact-resume
training), ``inference`` (tiled upscaling, comparison figures), ``metrics`` (FID, KID,
PSNR, SSIM), ``losslog`` and ``plots``, ``bench`` and ``cli``.
"""

__version__ = "0.1.0"
