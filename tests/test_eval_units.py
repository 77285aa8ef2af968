"""Evaluation building blocks on hand-made inputs: prompt files, labelled data, metrics, the
classifier's persistence, the linear probe, caption ranking and heat maps (tiny random models)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from evalkit import WordTokenizer, shape_image
from PIL import Image

from clipforge.eval import accuracy
from clipforge.eval.caption import CaptionBank, load_caption_bank
from clipforge.eval.classifier import ZeroShotClassifier
from clipforge.eval.datasets import collect_images, load_labelled
from clipforge.eval.explain import explain, heat_map
from clipforge.eval.features import encode_image_files
from clipforge.eval.linear_probe import few_shot_indices, linear_probe, stratified_split
from clipforge.eval.prompts import (
    builtin_templates,
    check_labels,
    load_classnames,
    load_templates,
    parse_labels,
)
from clipforge.inference import model_id


# ---- prompt files ------------------------------------------------------------------------------
def test_builtin_templates_load_and_have_one_placeholder():
    assert {"default", "simple", "objects"} <= set(builtin_templates())
    for name in builtin_templates():
        templates = load_templates(name)
        assert templates and all(t.count("{}") == 1 for t in templates)
    assert len(load_templates("default")) >= 20


def test_template_file_errors_name_the_line(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("# comment\na photo of a {}.\n\na {} and a {}\n")
    with pytest.raises(ValueError, match=r"t\.txt:4: template 'a \{\} and a \{\}'"):
        load_templates(f)
    f.write_text("a photo of a {}.\nno placeholder here\n")
    with pytest.raises(ValueError, match=r"t\.txt:2:"):
        load_templates(f)
    f.write_text("# only comments\n\n")
    with pytest.raises(ValueError, match="no entries"):
        load_templates(f)
    with pytest.raises(FileNotFoundError, match="not a built-in set"):
        load_templates(tmp_path / "missing.txt")


def test_labels_parsing_and_errors(tmp_path):
    assert parse_labels(" cat, dog ,bird") == ["cat", "dog", "bird"]
    for bad, msg in [("", "empty"), (" , ", "empty"), ("cat,,dog", "label 2 is empty"), ("a,a", "duplicate")]:
        with pytest.raises(ValueError, match=msg):
            parse_labels(bad)
    with pytest.raises(ValueError, match="empty"):
        check_labels([])
    f = tmp_path / "labels.txt"
    f.write_text("cat\n# pets\ndog\ncat\n")
    with pytest.raises(ValueError, match=r"labels\.txt:4: duplicate entry 'cat' \(first on line 1\)"):
        load_classnames(f)


# ---- labelled data -----------------------------------------------------------------------------
def _folder(tmp_path):
    for cls, colour in [("b_red", "red"), ("a_blue", "blue")]:
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(3):
            shape_image("circle", colour).save(tmp_path / "data" / cls / f"{i}.png")
    return tmp_path / "data"


def test_image_folder_and_classnames(tmp_path):
    root = _folder(tmp_path)
    data = load_labelled(root)
    assert data.classnames == ["a_blue", "b_red"] and data.labels == [0, 0, 0, 1, 1, 1]
    renamed = load_labelled(root, classnames=["blue", "red"])  # by position in sorted order
    assert renamed.classnames == ["blue", "red"] and renamed.labels == data.labels
    by_name = load_labelled(root, classnames=["b_red", "x", "a_blue"])  # by name, list order
    assert by_name.labels == [2, 2, 2, 0, 0, 0]
    with pytest.raises(ValueError, match="2 class sub-folders but 1 class names"):
        load_labelled(root, classnames=["red"])


def test_labelled_csv_skips_bad_rows_with_line_numbers(tmp_path):
    root = _folder(tmp_path)
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "filepath,label\ndata/b_red/0.png,red\ndata/a_blue/0.png,blue\n,red\ndata/b_red/1.png,green\n"
    )
    data = load_labelled(csv, classnames=["red", "blue"])
    assert data.labels == [0, 1] and data.paths[0] == root / "b_red" / "0.png"
    assert data.skipped == [
        f"{csv}:4: empty 'filepath'",
        f"{csv}:5: label 'green' is not one of the 2 classes",
    ]
    ints = tmp_path / "ints.csv"
    ints.write_text("filepath,label\ndata/b_red/0.png,2\ndata/a_blue/0.png,0\n")
    assert load_labelled(ints).classnames == ["0", "1", "2"] and load_labelled(ints).labels == [2, 0]
    with pytest.raises(ValueError, match=r"labels\.csv:1: no column 'klass'"):
        load_labelled(csv, label_key="klass")


def test_unreadable_images_are_reported_per_file_and_skipped(tmp_path, caplog, tiny_model):
    good = tmp_path / "good.png"
    shape_image().save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good.read_bytes()[:60])
    model = tiny_model(seed=0)
    from clipforge.api import image_transform

    feats = encode_image_files(model, image_transform(model), [bad, good, trunc], progress=False)
    assert feats.kept == [1] and feats.features.shape == (1, model.config.embed_dim)
    assert [p for p, _ in feats.failures] == [str(bad), str(trunc)]
    assert "bad.png" in caplog.text and "trunc.png" in caplog.text
    assert collect_images([tmp_path]) == sorted([bad, good, trunc])
    with pytest.raises(FileNotFoundError):
        collect_images([tmp_path / "nope.png"])


# ---- metrics -----------------------------------------------------------------------------------
def test_topk_confusion_and_per_class():
    scores = torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    labels = torch.tensor([0, 2, 1, 2])
    acc = accuracy.topk_accuracy(scores, labels, ks=(1, 2, 5))
    assert acc == {1: 0.5, 2: 1.0}  # a k above the number of classes is left out
    conf = accuracy.confusion_matrix(scores.argmax(1), labels, 3)
    assert conf.tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert accuracy.per_class_accuracy(conf) == [1.0, 0.0, 0.5]
    assert accuracy.per_class_accuracy(torch.tensor([[1, 0], [0, 0]])) == [1.0, None]
    assert accuracy.mean_per_class_accuracy(conf) == pytest.approx(0.5)


# ---- zero-shot classifier ----------------------------------------------------------------------
def test_classifier_scores_save_load_and_model_mismatch(tmp_path, tiny_model):
    model, tok = tiny_model(seed=0), WordTokenizer()
    clf = ZeroShotClassifier(model, tok, ["red", "blue", "green"], ["a {} thing", "a {} shape"])
    images = [shape_image(colour=c) for c in ("red", "blue")]
    probs = clf.scores(images)
    assert probs.shape == (2, 3) and torch.allclose(probs.sum(1), torch.ones(2))
    top = clf.predict(images, k=2)
    assert len(top) == 2 and len(top[0]) == 2 and top[0][0][1] >= top[0][1][1]
    path = clf.save(tmp_path / "clf.safetensors")
    again = ZeroShotClassifier.load(path, model=model)
    assert again.labels == clf.labels and again.templates == clf.templates
    assert torch.equal(again.scores(images), probs)
    # a bf16 copy of the same weights is the same model; different weights are not
    assert model_id(tiny_model(seed=0).to(torch.bfloat16)) == model_id(model)
    other = tiny_model(seed=0)
    with torch.no_grad():
        other.visual.proj.add_(0.01)
    with pytest.raises(ValueError, match="built for model .* rebuild the classifier"):
        ZeroShotClassifier.load(path, model=other)
    with pytest.raises(ValueError, match="sigmoid scores need .* logit_bias"):
        clf.scores(images, mode="sigmoid")
    with pytest.raises(ValueError, match="label list is empty"):
        ZeroShotClassifier(model, tok, [], ["{}"])


def test_classifier_class_embedding_is_the_template_mean(tiny_model):
    model, tok = tiny_model(seed=0), WordTokenizer()
    clf = ZeroShotClassifier(model, tok, ["red"], ["a {} thing", "one {}"])
    with torch.no_grad():
        t = F.normalize(model.encode_text(tok(["a red thing", "one red"], context_length=16)), dim=-1)
    assert torch.allclose(clf.class_embeddings[0], F.normalize(t.mean(0), dim=-1), atol=1e-6)


def test_sigmoid_scores_use_the_logit_bias(tiny_model):
    model = tiny_model(seed=0)
    model.logit_bias = torch.nn.Parameter(torch.tensor(-10.0))
    clf = ZeroShotClassifier(model, WordTokenizer(), ["red", "blue"], ["{}"])
    feats = clf.encode([shape_image()])
    scale = model.logit_scale.exp()
    expected = torch.sigmoid(scale * feats @ clf.class_embeddings.T - 10.0)
    assert torch.allclose(clf.scores_from_features(feats, mode="sigmoid"), expected.detach())


# ---- linear probe ------------------------------------------------------------------------------
@pytest.mark.full_suite
def test_linear_probe_separable_blobs_and_few_shot():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 3

    def blobs(n):
        y = torch.arange(4).repeat_interleave(n)
        return centres[y] + torch.randn(len(y), 16, generator=g), y

    (xtr, ytr), (xte, yte) = blobs(30), blobs(20)
    full = linear_probe(xtr, ytr, xte, yte, num_classes=4)
    assert full.accuracy > 0.95 and full.n_val > 0 and full.val_accuracy is not None
    few = linear_probe(xtr, ytr, xte, yte, num_classes=4, k_shot=2, Cs=(0.1, 1.0, 10.0))
    assert few.n_train == 8 and few.k_shot == 2 and few.accuracy > 0.5
    one = linear_probe(xtr, ytr, xte, yte, num_classes=4, k_shot=1)
    assert one.C == 1.0 and one.val_accuracy is None
    assert json.dumps(full.to_dict())


def test_few_shot_and_stratified_split_are_per_class():
    y = np.array([0] * 10 + [1] * 3 + [2])
    pick = few_shot_indices(y, 4, seed=1)
    assert np.bincount(y[pick]).tolist() == [4, 3, 1]
    kept, held = stratified_split(y, 0.2, seed=0)
    assert np.bincount(y[held], minlength=3).tolist() == [2, 1, 0]
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(len(y)))


# ---- captions ----------------------------------------------------------------------------------
def test_caption_bank_ranks_by_cosine(tmp_path, tiny_model):
    model, tok = tiny_model(seed=0), WordTokenizer()
    f = tmp_path / "bank.txt"
    f.write_text("a red circle\n# not a caption\na blue square\n\na red circle\na green blob\n")
    captions = load_caption_bank(f)
    assert captions == ["a red circle", "a blue square", "a green blob"]
    bank = CaptionBank(model, tok, captions)
    feats = F.normalize(bank.embeddings[[2, 0]] + 1e-3, dim=-1)  # images that *are* captions 2 and 0
    top = bank.top_k(feats, k=2)
    assert [m.caption for m in top[0]][0] == "a green blob" and top[1][0].caption == "a red circle"
    assert top[0][0].similarity >= top[0][1].similarity and 0 < top[0][0].probability <= 1


# ---- explanations ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vit-tiny", "rn-tiny"])
def test_heat_maps_all_methods_both_towers(tmp_path, name, tiny_model):
    model, tok = tiny_model(name, seed=0), WordTokenizer()
    from clipforge.api import image_transform

    transform = image_transform(model)
    image = shape_image(size=96).resize((120, 90))
    text = F.normalize(model.encode_text(tok(["a red circle"], context_length=16))[0].detach(), dim=-1)
    methods = ["window", "gradcam", "gradient"] + (["patch"] if name == "vit-tiny" else [])
    for method in methods:
        heat = heat_map(model, transform(image), text, method=method)
        size = model.config.vision.image_size
        assert heat.shape == (size, size) and 0.0 <= heat.min() and heat.max() <= 1.0
        assert all(p.grad is None for p in model.parameters())  # nothing left on the model
    if name == "rn-tiny":
        with pytest.raises(ValueError, match="needs a ViT"):
            heat_map(model, transform(image), text, method="patch")
    ex = explain(model, transform, image, text, text="a red circle")
    out = ex.save(tmp_path / "x.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (120, 90)  # the original image, at its own size
        drawn = np.asarray(im.convert("RGB")).astype(int)
    original = np.asarray(image).astype(int)  # the strips on each side are cropped off: dimmed
    assert np.abs(drawn[:, :11] - np.round(original[:, :11] * 0.45)).max() <= 1
    assert np.abs(drawn[:, 104:] - np.round(original[:, 104:] * 0.45)).max() <= 1
    assert np.abs(drawn[:, 16:104] - original[:, 16:104]).max() > 20  # the view: the map blended in


def test_heat_on_image_inverts_the_preprocessing_geometry(tiny_model):
    from clipforge.api import image_transform
    from clipforge.eval.explain_draw import heat_on_image

    heat = torch.rand(8, 8)
    same = heat_on_image(heat, 8, 8)  # an image at the input size: the map itself
    assert np.array_equal(same, heat.numpy())
    twice = heat_on_image(heat, 16, 16)  # bilinear with pixel centres, as F.interpolate samples
    ref = F.interpolate(heat[None, None], size=(16, 16), mode="bilinear", align_corners=False)[0, 0]
    assert np.allclose(twice, ref.numpy(), atol=1e-6)
    wide = heat_on_image(heat, 24, 16)  # shortest: 24x16 -> 12x8, crop x in [2, 10) -> [4, 20) here
    assert np.isnan(wide[:, :4]).all() and np.isnan(wide[:, 20:]).all() and not np.isnan(wide[:, 4:20]).any()
    assert not np.isnan(heat_on_image(heat, 24, 16, resize_mode="squash")).any()
    with pytest.raises(ValueError, match="square"):
        heat_on_image(torch.rand(4, 8), 8, 8)
    # A marker drawn on a 300x200 photo lands, through the real transform and back, on itself.
    model = tiny_model("rn-tiny", seed=0)
    transform = image_transform(model)
    photo = Image.new("RGB", (300, 200), (128, 128, 128))
    photo.paste((255, 255, 255), (180, 40, 220, 80))
    x = transform(photo)  # (3, 64, 64)
    marker = (x[0] > x[0].mean() + 0.5 * x[0].std()).float()  # (64, 64) the marker in the input
    back = heat_on_image(marker, 300, 200)
    assert back[40:80, 180:220].mean() > 0.9 and np.nanmean(back[100:, :]) < 0.05
    assert np.isnan(back[:, :40]).all() and np.isnan(back[:, 260:]).all()  # 300x200 -> centre 200x200


# ---- retrieval metrics -------------------------------------------------------------------------
def test_retrieval_metrics_on_hand_built_embeddings_with_known_ranks():
    from clipforge.eval.retrieval import retrieval_metrics

    eye = torch.eye(4)
    images = eye  # image i is the unit vector e_i
    # captions: 0,1 -> image 0; 2 -> image 1; 3 -> image 2; 4,5 -> image 3
    texts = torch.stack(
        [
            eye[0],  # rank 1 for image 0
            F.normalize(eye[0] * 0.2 + eye[1], dim=0),  # closest to image 1, so image 0 is 2nd
            F.normalize(eye[1] + 0.5 * eye[2] + 0.7 * eye[3], dim=0),  # image 1 first
            F.normalize(eye[0] + 0.9 * eye[1] + 0.8 * eye[3] + 0.5 * eye[2], dim=0),  # image 2 fourth
            F.normalize(eye[2] + 0.5 * eye[3], dim=0),  # image 3 second
            F.normalize(eye[3] + 0.1 * eye[1], dim=0),  # image 3 first
        ]
    )
    owner = [0, 0, 1, 2, 3, 3]
    m = retrieval_metrics(images, texts, owner, ks=(1, 2, 3))
    # text -> image ranks (1-based): 1, 2, 1, 4, 2, 1
    assert m["text_to_image_R@1"] == pytest.approx(3 / 6)
    assert m["text_to_image_R@2"] == pytest.approx(5 / 6)
    assert m["text_to_image_R@3"] == pytest.approx(5 / 6)
    assert m["text_to_image_mean_rank"] == pytest.approx((1 + 2 + 1 + 4 + 2 + 1) / 6)
    assert m["text_to_image_median_rank"] == 1.0  # torch's median: the lower middle value
    # image -> text: the best-ranked of an image's own captions counts, other own captions don't push
    # it down. Image 0: caption 0 first. Image 1: caption 1 (not its own) beats caption 2 -> rank 2.
    # Image 2: captions 4 (0.89), 2 (0.38), 3 (0.30) -> own caption third. Image 3: caption 5 first.
    assert m["image_to_text_R@1"] == pytest.approx(2 / 4)
    assert m["image_to_text_R@2"] == pytest.approx(3 / 4)
    assert m["image_to_text_R@3"] == pytest.approx(4 / 4)
    assert m["image_to_text_mean_rank"] == pytest.approx((1 + 2 + 3 + 1) / 4)
