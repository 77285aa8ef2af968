"""Heat maps of models at the quickstart's 64 px input: the quickstart's own ResNet architecture and a
ViT with the same 8 x 8 token grid, each trained on the shapes data on first use (cached on disk like
``shapes_model``). A file of its own: its two trainings are the suite's longest work, and under
``make test``'s xdist they run beside ``test_apps_shapes.py``'s model instead of after it."""

import pytest
from evalkit import QUICKSTART_VIT, hit_rate, quickstart_resnet, train_shapes_model

from clipforge.api import load

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quickstart_sized():
    """``get(name)``: the loaded model ``name`` (``resnet`` or ``vit``), trained on first use."""
    made = {}

    def get(name):
        if name not in made:
            model = {"resnet": quickstart_resnet(), "vit": QUICKSTART_VIT}[name]
            ckpt, _ = train_shapes_model(f"explain-{name}-64px", model=model)
            made[name] = load(ckpt)
        return made[name]

    return get


@pytest.mark.timeout(540)  # trains its model first: 175 s (resnet), 108 s (vit) on a quiet 2-core machine
@pytest.mark.parametrize("name", ["resnet", "vit"])
def test_default_heat_map_lands_on_the_named_object_at_quickstart_size(quickstart_sized, name):
    assert hit_rate(quickstart_sized(name)) >= 0.9
