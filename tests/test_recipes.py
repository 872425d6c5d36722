"""Every recipe in configs/ is a valid config of its task, checked whole before any data."""

from pathlib import Path

import pytest

from rnnkit.config import from_dict, read_yaml
from rnnkit.tasks import task_class

RECIPES = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_there_are_recipes():
    assert len(RECIPES) >= 15


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_a_valid_config(recipe):
    data = read_yaml(recipe)
    config = from_dict(task_class(data["task"]).config_class(), data)
    assert config.task == data["task"]
    assert config.train.max_minutes is None or config.train.max_minutes <= 60
