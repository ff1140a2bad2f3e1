"""benchmarks/recipes.py: the tables it writes are the user's CSVs (header, features only), and
its ``--set`` overrides reach the config a bare ``flowforge train`` would build."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import recipes
from flowforge.data import load_splits


@pytest.mark.parametrize("name", ["wine", "breast_cancer"])
def test_table_is_the_feature_matrix_with_its_header(tmp_path, name):
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, f"load_{name}")()
    path = recipes.write_table(name, tmp_path)
    header = path.read_text().splitlines()[0].split(",")
    assert header == list(bunch.feature_names)
    splits = load_splits(str(path), seed=0)
    rows = np.concatenate([splits.train, splits.val, splits.test])
    assert rows.shape == bunch.data.shape
    assert np.allclose(np.sort(rows, axis=0), np.sort(bunch.data, axis=0))
    assert splits.columns == list(bunch.feature_names)


def test_settings_override_only_what_they_name(tmp_path):
    settings = [recipes.parse_setting(text) for text in ("lr=0.003", "model_options.hidden=16", "objective=mle")]
    config = recipes.case_config("ffjord/pinwheel", 3, settings, tmp_path)
    assert (config.model, config.data, config.seed) == ("ffjord", "pinwheel", 3)
    assert config.lr == 0.003 and config.objective == "mle" and config.model_options == {"hidden": 16}
    assert config.steps is None and config.batch_size is None  # left to the recipe
