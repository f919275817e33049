"""Models. One family, one file: ``vla`` (CLIP4VLA / VALOR towers, fusion, caption decoder; imports torch only).

``pretrained`` maps CLIP state dicts onto it; ``export`` wraps each encoder for ONNX. Import those modules directly.
"""

from avlops.models.vla import (
    AudioConfig,
    DecoderConfig,
    MaskedFeatures,
    TextConfig,
    TextFeatures,
    VisionConfig,
    VLAConfig,
    VLAModel,
    VLAOutput,
    audio_type_weight,
)

__all__ = [
    "AudioConfig",
    "DecoderConfig",
    "MaskedFeatures",
    "TextConfig",
    "TextFeatures",
    "VLAConfig",
    "VLAModel",
    "VLAOutput",
    "VisionConfig",
    "audio_type_weight",
]
