"""Image codec: pixels <-> model <-> entropy streams <-> .ncf container.

pixels    input policy (any image to 8-bit RGB), stride padding, uint8 output, PNG bytes
pipeline  encode_image, decode_image, reconstruct, the header checks
ycoding   the driver of the models' coding protocol (models/coding.py)
tiles     large images as independent tiles; a tile's streams as sections
refine    encoder-side latent refinement (SGA)
"""
from codec.image.pipeline import (CODER_VERSION, PARAMETER_DTYPES, check_header, decode_image, encode_image,
                                  reconstruct)
from codec.image.pixels import load_rgb, save_image

__all__ = ["encode_image", "decode_image", "reconstruct", "check_header", "load_rgb", "save_image",
           "CODER_VERSION", "PARAMETER_DTYPES"]
