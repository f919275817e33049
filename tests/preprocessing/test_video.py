"""Frames: decoding real mp4s and stills, segment sampling on them, resize/crop and CLIP normalisation."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from preprocessing_media import frame_level, write_image, write_video
from torchvision.transforms.v2 import functional as TF

from avlops.data.media import MediaError
from avlops.preprocessing.params import PreprocessConfig
from avlops.preprocessing.sampling import clip_rng, segment_groups, segment_indices
from avlops.preprocessing.video import empty_video, frames_to_tensor, load_video, video_from_frames


def levels(pixels: torch.Tensor, cfg: PreprocessConfig) -> np.ndarray:
    """Undo the normalisation of flat-grey frames [N, 3, R, R] → their grey level per frame."""
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    return ((pixels * std + mean) * 255).mean(dim=(1, 2, 3)).numpy()


def decode_all(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])  # [T, H, W, 3]


def test_eval_picks_the_middle_frame_of_each_segment(tmp_path: Path, tiny_cfg: PreprocessConfig) -> None:
    path = write_video(tmp_path / "v.mp4", n_frames=12, audio=None)
    video, info = load_video(path, tiny_cfg, train=False, rng=None)
    assert video.pixels.shape == (6, 3, 32, 32) and video.pixels.dtype == torch.float32
    assert video.mask.tolist() == [True] * 6
    assert (info.frame_count, info.width, info.height, info.fps) == (12, 32, 32, 8.0)
    assert info.duration_s == pytest.approx(1.5)
    expected = [frame_level(i) for i in segment_indices(12, 6, None)]  # [0, 2, 4, ...]
    np.testing.assert_allclose(levels(video.pixels, tiny_cfg), expected, atol=3)


def test_train_picks_are_seeded_random_frames_inside_segments(tmp_path: Path, tiny_cfg: PreprocessConfig) -> None:
    path = write_video(tmp_path / "v.mp4", n_frames=16, audio=None)
    groups = segment_groups(16, 4)
    picks = set()
    for seed in range(6):
        video, _ = load_video(path, tiny_cfg, train=True, rng=clip_rng(seed, "v"))
        assert video.pixels.shape == (4, 3, 32, 32)
        lv = levels(video.pixels, tiny_cfg)
        idx = [int(np.argmin([abs(x - frame_level(i)) for i in range(16)])) for x in lv]
        assert all(i in g for i, g in zip(idx, groups, strict=True))
        again, _ = load_video(path, tiny_cfg, train=True, rng=clip_rng(seed, "v"))
        assert torch.equal(video.pixels, again.pixels)  # same generator state, same frames
        picks.add(tuple(idx))
    assert len(picks) > 1  # different seeds pick different frames


def test_short_video_repeats_its_last_frame(tmp_path: Path, tiny_cfg: PreprocessConfig) -> None:
    path = write_video(tmp_path / "v.mp4", n_frames=3, audio=None)
    video, info = load_video(path, tiny_cfg, train=False, rng=None)
    assert info.frame_count == 3
    assert video.mask.tolist() == [True, True, True, False, False, False]
    np.testing.assert_allclose(levels(video.pixels, tiny_cfg), [frame_level(i) for i in (0, 1, 2, 2, 2, 2)], atol=3)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_still_image_is_one_frame_repeated(tmp_path: Path, tiny_cfg: PreprocessConfig, suffix: str) -> None:
    path = write_image(tmp_path / f"still{suffix}", size=(40, 30), level=100)
    video, info = load_video(path, tiny_cfg, train=True, rng=clip_rng(0, "s"), still=True)
    assert video.pixels.shape == (4, 3, 32, 32)
    assert video.mask.tolist() == [True, False, False, False]
    assert (info.frame_count, info.width, info.height, info.fps, info.duration_s) == (1, 40, 30, None, 0.0)
    assert torch.equal(video.pixels[0], video.pixels[3])
    np.testing.assert_allclose(levels(video.pixels, tiny_cfg), [100] * 4, atol=3)


def test_resize_crop_normalise_matches_torchvision(tiny_cfg: PreprocessConfig) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 48, 80, 3), dtype=np.uint8)  # landscape, shorter side 48 → 32
    out = frames_to_tensor(frames, tiny_cfg)
    assert out.shape == (2, 3, 32, 32) and out.is_contiguous()
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)  # uint8 [T, 3, H, W]
    ref = TF.center_crop(TF.resize(x, [32], antialias=True), [32, 32]).float() / 255  # torchvision on uint8 images
    ref = TF.normalize(ref, list(tiny_cfg.mean), list(tiny_cfg.std))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    # resizing the [0, 1] floats instead (VALOR's ToTensor-then-Resize) differs by at most one grey level
    ref_f = TF.center_crop(TF.resize(x.float() / 255, [32], antialias=True), [32, 32])
    ref_f = TF.normalize(ref_f, list(tiny_cfg.mean), list(tiny_cfg.std))
    assert (out - ref_f).abs().max().item() < 1.01 / 255 / min(tiny_cfg.std)


def test_portrait_frames_are_cropped_on_the_long_side() -> None:
    cfg = PreprocessConfig(resolution=16)
    frames = np.zeros((1, 64, 32, 3), dtype=np.uint8)  # portrait: 32 wide → 16, 64 high → 32 → crop rows 8..24
    frames[:, 12:52] = 255  # white band → rows 6..26 after the resize: the centre crop is all white, any other not
    out = frames_to_tensor(frames, cfg)
    assert out.shape == (1, 3, 16, 16)
    white = (1 - cfg.mean[0]) / cfg.std[0]
    torch.testing.assert_close(out[0, 0], torch.full((16, 16), white))


def test_normalisation_uses_clip_mean_and_std() -> None:
    cfg = PreprocessConfig(resolution=8)
    out = frames_to_tensor(np.full((8, 8, 3), 255, dtype=np.uint8), cfg)  # one [H, W, 3] frame, no resize
    expected = [(1 - m) / s for m, s in zip(cfg.mean, cfg.std, strict=True)]
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor(expected))
    assert cfg.mean == (0.48145466, 0.4578275, 0.40821073) and cfg.std == (0.26862954, 0.26130258, 0.27577711)


def test_serving_path_on_decoded_frames_matches_the_file_path(tmp_path: Path, tiny_cfg: PreprocessConfig) -> None:
    path = write_video(tmp_path / "v.mp4", n_frames=10, size=(48, 32), audio=None)
    from_file, _ = load_video(path, tiny_cfg, train=True, rng=clip_rng(3, "x"))
    from_frames = video_from_frames(decode_all(path), tiny_cfg, train=True, rng=clip_rng(3, "x"))
    assert torch.equal(from_file.pixels, from_frames.pixels)
    assert torch.equal(from_file.mask, from_frames.mask)


def test_no_video_placeholder_is_masked(tiny_cfg: PreprocessConfig) -> None:
    v = empty_video(tiny_cfg, train=False)
    assert v.pixels.shape == (6, 3, 32, 32) and not v.pixels.any() and not v.mask.any()


def test_bad_inputs_raise_media_errors(tmp_path: Path, tiny_cfg: PreprocessConfig) -> None:
    good = write_video(tmp_path / "v.mp4", n_frames=8, audio=None)
    data = good.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # moov atom at the end: unreadable
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    for name in ("cut.mp4", "noise.mp4"):
        with pytest.raises(MediaError):
            load_video(tmp_path / name, tiny_cfg, train=False, rng=None)
    with pytest.raises(ValueError):
        frames_to_tensor(np.zeros((4, 4, 4), dtype=np.float32), tiny_cfg)
