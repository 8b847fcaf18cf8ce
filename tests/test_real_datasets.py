"""The public datasets load with their published sizes, and leave-one-out gives one validation
and one test target per user (../shared/data/README.md)."""

from pathlib import Path

import numpy as np
import pytest

from onerec.data.registry import REGISTRY, load_dataset
from onerec.data.schema import Dataset
from onerec.data.splits import leave_one_out

SIZES = {
    "beauty": (22_363, 12_101, 198_502),
    "yelp": (30_431, 20_033, 316_354),
    "scientific": (8_317, 4_344, 58_492),
    "ml-100k": (943, 1_682, 100_000),
    "video-games": (31_013, 23_715, 287_107),
}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_sizes_and_leave_one_out(name: str, data_dir: Path) -> None:
    ds = load_dataset(name, data_dir)
    users, items, interactions = SIZES[name]
    assert (ds.num_users, ds.num_items, len(ds.log)) == (users, items, interactions)
    assert REGISTRY[name].expected == SIZES[name]
    split = leave_one_out(ds.log, history_length=20)
    (dropped,) = split.reports
    # every dataset but video-games is already filtered to users with >= 3 (5-core) interactions
    assert dropped.users_removed == (112 if name == "video-games" else 0)
    kept = users - dropped.users_removed
    assert len(split.test) == len(split.valid) == kept
    assert len(split.train) == interactions - dropped.rows_removed - 2 * kept
    assert split.test.history.lengths.max() == 20
    # the validation target is the last item of the test history
    np.testing.assert_array_equal(split.valid.target.values, split.test.seen.last())
    # a second load comes from the Parquet cache and is identical
    again = load_dataset(name, data_dir)
    np.testing.assert_array_equal(again.log.item, ds.log.item)
    np.testing.assert_array_equal(again.log.items.raw, ds.log.items.raw)


def test_beauty_ids_and_order(data_dir: Path) -> None:
    ds = load_dataset("beauty", data_dir)
    # S3-Rec ids are 1..N: index k is raw id k + 1, and the first user's line is "1 1 2 3 4 5"
    assert ds.log.items.raw[:3].tolist() == [1, 2, 3]
    first = ds.log.item[ds.log.user == 0]
    assert ds.log.items.to_raw(first).tolist() == [1, 2, 3, 4, 5]
    attrs = ds.item_table.attributes("attributes")
    assert attrs[3] == [1, 2, 3]  # item "4" in Beauty_item2attributes.json


def test_text_and_user_features(data_dir: Path) -> None:
    sci = load_dataset("scientific", data_dir)
    titles = sci.item_table.text("title")
    assert titles[0].startswith("SUPCO SPP6")
    ml = load_dataset("ml-100k", data_dir)
    assert "rating" in ml.log.signals
    assert ml.user_table.text("gender")[0] == "M"
    assert ml.item_table.attributes("class")[0] == ["Animation", "Children's", "Comedy"]
    yelp = load_dataset("yelp", data_dir)
    assert yelp.item_table.text("title")[0] == "The Great Greek"
    assert "approximate" in yelp.meta["text_join"]


def test_conversions_racing_for_the_cache_both_succeed(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs started together convert the same files; the one that caches second keeps the
    first one's copy instead of failing (it used to rename a shared temporary folder)."""
    monkeypatch.setenv("ONEREC_CACHE_DIR", str(tmp_path))
    real_save, raced = Dataset.save, []

    def save_while_another_run_converts(self: Dataset, path: Path) -> None:
        real_save(self, path)
        if not raced:  # the other run converts and caches in between
            raced.append(None)
            raced[0] = load_dataset("ml-100k", data_dir)

    monkeypatch.setattr(Dataset, "save", save_while_another_run_converts)
    ds = load_dataset("ml-100k", data_dir)
    (cached,) = (tmp_path / "datasets").iterdir()  # one cache, no temporary folder left
    assert (cached / "meta.json").exists() and not cached.name.endswith(".tmp")
    monkeypatch.setattr(Dataset, "save", real_save)
    again = load_dataset("ml-100k", data_dir)
    for other in (raced[0], again):
        np.testing.assert_array_equal(other.log.item, ds.log.item)
