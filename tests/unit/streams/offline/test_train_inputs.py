"""``interest-stream train``'s item inputs: the tags and vectors handed to training, the flags."""

from __future__ import annotations

import click
import numpy as np
import pytest
from click.testing import CliRunner

from encoders.build.sequence_data import TrainConfig
from encoders.errors import InputError
from streams.contract import ItemRecord
from streams.offline.train import item_vector_matrix, model_options, train_config


def test_item_vectors_become_one_matrix_with_zero_rows_for_items_without() -> None:
    items = [ItemRecord("a", "t", "t", (), (1.0, 2.0)), ItemRecord("b", "t", "t")]
    np.testing.assert_array_equal(item_vector_matrix(items), [[1.0, 2.0], [0.0, 0.0]])
    assert item_vector_matrix([ItemRecord("b", "t", "t")]) is None
    with pytest.raises(InputError, match="different lengths"):
        item_vector_matrix([*items, ItemRecord("c", "t", "t", (), (1.0,))])


def test_the_flags_map_onto_the_config_and_default_off() -> None:
    seen: list[TrainConfig] = []

    @click.command()
    @model_options
    def command(**params: object) -> None:
        seen.append(train_config(params))

    assert CliRunner().invoke(command, []).exit_code == 0
    flags = ["--tags", "--context", "--item-vectors", "--dislikes"]
    assert CliRunner().invoke(command, flags).exit_code == 0
    assert (seen[0].tags, seen[0].context, seen[0].item_vectors, seen[0].dislikes) == (False,) * 4
    assert seen[0] == TrainConfig()
    assert (seen[1].tags, seen[1].context, seen[1].item_vectors, seen[1].dislikes) == (True,) * 4
