"""The task: model + losses from config on a batch; and the tiny model overfits a small batch."""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from avlops.modality import ModalityGroup
from avlops.objective import AudioSelfObjective, CaptionObjective, CaptionStyle, ObjectiveConfig, Similarity
from avlops.task import compute_losses, generate_captions, group_features, similarity_matrix


def test_compute_losses_terms_and_total(make_model, make_batch) -> None:
    model, b = make_model(), make_batch(batch=4, has_audio=[True, True, False, True])
    cfg = ObjectiveConfig(
        caption=CaptionObjective(groups=tuple(ModalityGroup)), audio_self=AudioSelfObjective(weight=0.5)
    )
    out = compute_losses(model, b, cfg, torch.Generator().manual_seed(0))
    assert set(out.terms) == {"mga/tv", "mga/ta", "mga/tav", "mga", "mgc/tv", "mgc/ta", "mgc/tav", "mgc", "audio_self"}
    assert all(torch.isfinite(v) and not v.requires_grad for v in out.terms.values())
    t = out.terms
    torch.testing.assert_close(t["mga"], (t["mga/tv"] + t["mga/ta"] + t["mga/tav"]) / 3)
    torch.testing.assert_close(out.total.detach(), 1.5 * t["mga"] + t["mgc"] + 0.5 * t["audio_self"])
    assert 9.0 < float(t["mgc"]) < 12.0  # ~ln(49409) at initialisation
    out.total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.audio.type_embedding.grad is not None and model.logit_scale.grad is not None


def test_clip_without_audio_is_left_out_of_audio_terms(make_model, make_batch) -> None:
    model = make_model()
    b = make_batch(batch=3, has_audio=[True, False, True])
    noisy = replace(b, fbank=b.fbank + torch.randn_like(b.fbank) * torch.tensor([0.0, 1.0, 0.0])[:, None, None, None])
    cfg = ObjectiveConfig(caption=CaptionObjective(groups=tuple(ModalityGroup)))
    with torch.no_grad():
        x = compute_losses(model, b, cfg, torch.Generator().manual_seed(0)).terms
        y = compute_losses(model, noisy, cfg, torch.Generator().manual_seed(0)).terms
    for key in x:  # the clip without audio changes no term: its (garbage) slices are masked or skipped
        torch.testing.assert_close(x[key], y[key])
    # nobody has audio: T–A terms are skipped, the rest is finite
    silent = replace(b, has_audio=torch.zeros(3, dtype=torch.bool))
    terms = compute_losses(model, silent, cfg).terms
    assert "mga/ta" not in terms and "mgc/ta" not in terms and all(torch.isfinite(v) for v in terms.values())


def test_coarse_and_fine_objectives_differ(make_model, make_batch) -> None:
    model, b = make_model(), make_batch(batch=4)
    with torch.no_grad():
        fine = compute_losses(model, b, ObjectiveConfig(caption=None)).terms["mga"]
        coarse = compute_losses(model, b, ObjectiveConfig(caption=None, similarity=Similarity.COARSE)).terms["mga"]
        unweighted = compute_losses(model, b, ObjectiveConfig(caption=None, weighted_tokens=False)).terms["mga"]
    assert len({round(float(v), 5) for v in (fine, coarse, unweighted)}) == 3


def test_tiny_model_overfits_a_small_batch(make_model, make_batch) -> None:
    """8 clips, 150 AdamW steps: text→video retrieval on the batch becomes perfect and the caption loss drops."""
    model, b = make_model().train(), make_batch(batch=8, frames=2, seed=3, has_audio=[True] * 6 + [False] * 2)
    cfg = ObjectiveConfig(caption=CaptionObjective(style=CaptionStyle.MASKED))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    first = None
    for _ in range(150):
        out = compute_losses(model, b, cfg, g)
        first = first or {k: float(v) for k, v in out.terms.items()}
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        opt.step()
    elapsed = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        enc = model(b.tokens, b.frames, b.fbank, b.audio_type_weight, b.has_audio)
        for group in (ModalityGroup.T_V, ModalityGroup.T_AV):
            sim = similarity_matrix(model, enc.text, group_features(model, enc, b, group), cfg)  # [8, 8]
            assert sim.argmax(dim=1).tolist() == list(range(8)), group
        last = compute_losses(model, b, cfg, torch.Generator().manual_seed(1)).terms
    assert float(last["mgc"]) < 0.5 * first["mgc"], (first, last)
    assert float(last["mga"]) < 0.2 * first["mga"], (first, last)
    print(f"overfit: {elapsed:.1f} s, {first} -> { {k: round(float(v), 3) for k, v in last.items()} }")

    captions = generate_captions(model, b, cfg, beam_size=2, max_len=b.tokens.shape[1])
    assert captions.shape[0] == 8 and (captions == 49407).sum(dim=1).tolist() == [1] * 8
