"""Zero-shot accuracy and retrieval recall@k on hand-built embeddings with known answers."""

import pytest
import torch
import torch.nn.functional as F

from clipforge.eval.retrieval import retrieval_metrics
from clipforge.eval.zeroshot import build_classifier, fill_template, zero_shot_accuracy


def test_retrieval_with_several_captions_per_image():
    # 3 images on the axes; captions 0,1 -> image 0, caption 2 -> image 1, caption 3 -> image 2.
    images = torch.eye(3)
    texts = F.normalize(
        torch.tensor(
            [
                [1.0, 0.0, 0.0],  # image 0, ranked 1st
                [0.0, 1.0, 0.2],  # image 0 but closest to image 1: text->image rank 3
                [0.1, 1.0, 0.0],  # image 1, ranked 1st
                [0.0, 0.9, 1.0],  # image 2, ranked 1st (0.0 vs 0.9 vs 1.0)
            ]
        ),
        dim=-1,
    )
    m = retrieval_metrics(images, texts, [0, 0, 1, 2], ks=(1, 2))
    # text -> image ranks (0-based): 0, 2, 0, 0
    assert m["text_to_image_R@1"] == pytest.approx(3 / 4)
    assert m["text_to_image_R@2"] == pytest.approx(3 / 4)
    assert m["text_to_image_mean_rank"] == pytest.approx((1 + 3 + 1 + 1) / 4)
    # image -> text: image 0's best caption is caption 0 (rank 0). Image 1: captions by score
    # 1 (0.98, wrong), 2 (0.995, right)... image 1 scores: c0 0, c1 .98, c2 .995, c3 .67 -> rank 0.
    # Image 2: c3 .74 right, c1 .196 -> rank 0.
    assert m["image_to_text_R@1"] == pytest.approx(1.0)


def test_retrieval_image_to_text_counts_only_wrong_captions_above():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = F.normalize(torch.tensor([[0.2, 1.0], [1.0, 0.1], [0.9, 0.5]]), dim=-1)  # owners 0, 1, 1
    m = retrieval_metrics(images, texts, [0, 1, 1], ks=(1, 2, 3))
    # image 0: its caption c0 scores .196; wrong c1 (.995) and c2 (.874) are above -> rank 2.
    # image 1: its best caption c2 scores .486; only the wrong c0 (.981) is above -> rank 1
    # (its other own caption c1 is below and must not count).
    assert m["image_to_text_R@1"] == pytest.approx(0.0)
    assert m["image_to_text_R@2"] == pytest.approx(0.5)
    assert m["image_to_text_R@3"] == pytest.approx(1.0)
    assert m["image_to_text_mean_rank"] == pytest.approx(2.5)


def test_retrieval_rejects_bad_owner_lists():
    with pytest.raises(ValueError, match="one image index per caption"):
        retrieval_metrics(torch.eye(2), torch.eye(2), [0])
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(torch.eye(2), torch.eye(2), [0, 2])
    with pytest.raises(ValueError, match="at least one caption"):
        retrieval_metrics(torch.eye(2), torch.eye(2), [0, 0])


def test_zero_shot_accuracy_topk():
    classifier = torch.eye(3)
    feats = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8], [0.5, 0.4, 0.1], [0.0, 0.0, 1.0]])
    acc = zero_shot_accuracy(feats, classifier, [0, 1, 2, 2], topk=(1, 2, 5))
    assert acc["top1"] == pytest.approx(2 / 4)  # rows 0 and 3
    assert acc["top2"] == pytest.approx(3 / 4)  # row 1's label is 2nd
    assert "top5" not in acc
    with pytest.raises(ValueError, match="labels"):
        zero_shot_accuracy(feats, classifier, [0, 1, 2, 3])


def test_build_classifier_is_normalised_mean_of_prompts(tiny_model):
    class Tok:
        def __call__(self, texts, context_length=None):
            rows = [[62] + [len(t) % 60 + 1, (len(t) * 7) % 60 + 1] + [63] for t in texts]
            return torch.tensor(rows)

    model = tiny_model(embed_dim=16)
    templates = ("a photo of a {c}.", "a {}")
    cls = build_classifier(model, Tok(), ["cat", "zebra"], templates)
    assert cls.shape == (2, 16)
    torch.testing.assert_close(cls.norm(dim=-1), torch.ones(2))
    with torch.no_grad():
        e = model.encode_text(Tok()(["a photo of a cat.", "a cat"]))
    torch.testing.assert_close(cls[0], F.normalize(e.mean(0), dim=0), rtol=1e-5, atol=1e-6)
    assert fill_template("{c} and {c}", "x") == "x and x"
    with pytest.raises(ValueError, match="placeholder"):
        fill_template("no slot", "x")
