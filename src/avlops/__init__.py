"""avlops: an MLOps platform for vision-audio-language models of the CLIP4VLA / VALOR family."""

__version__ = "0.1.0"
