"""Upscaling photos with a trained generator: tiled inference and the upscale command."""
