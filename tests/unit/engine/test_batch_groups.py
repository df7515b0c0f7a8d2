"""Grouping a dynamic batch into pipeline calls: what splits a group and what never does."""

from __future__ import annotations

from serve_app.core.images import ImageSpec
from serve_app.engine.batch_groups import group_indices, take_batch


def job(
    size: tuple[int, int] = (64, 64), steps: int = 10, guidance: float = 7.5, sched: str = "ddim"
) -> ImageSpec:
    return ImageSpec("p", size[0], size[1], steps, guidance, sched, seed=0)


def test_identical_jobs_share_one_group() -> None:
    assert group_indices([job(), job(), job()]) == [[0, 1, 2]]


def test_every_pipeline_parameter_splits_groups() -> None:
    jobs = [job(), job(size=(96, 64)), job(steps=20), job(guidance=1.0), job(sched="euler")]
    assert group_indices(jobs) == [[0], [1], [2], [3], [4]]


def test_groups_keep_arrival_order_and_interleave_correctly() -> None:
    jobs = [job(), job(steps=20), job(), job(steps=20), job(size=(64, 128)), job()]
    assert group_indices(jobs) == [[0, 2, 5], [1, 3], [4]]


def test_prompt_seed_and_negative_prompt_do_not_split_groups() -> None:
    a = ImageSpec("a cat", 64, 64, 10, 7.5, "ddim", seed=1, negative_prompt="")
    b = ImageSpec("a dog", 64, 64, 10, 7.5, "ddim", seed=2, negative_prompt="blurry")
    assert group_indices([a, b]) == [[0, 1]]


def test_empty_batch_has_no_groups() -> None:
    assert group_indices([]) == []


def test_a_batch_fills_the_first_jobs_group_from_the_whole_queue() -> None:
    # Two sizes interleaved: the first 4 arrivals would be two half-empty calls of 2.
    keys = ["a", "b", "a", "b", "a", "b", "a"]
    assert take_batch(keys, 4) == [0, 2, 4, 6]


def test_room_left_goes_to_the_next_jobs_in_order() -> None:
    keys = ["a", "b", "c", "a", "b"]
    assert take_batch(keys, 4) == [0, 1, 2, 3]  # both a's, then b and c as they come
    assert take_batch(keys, 8) == [0, 1, 2, 3, 4]


def test_the_head_of_the_queue_is_always_taken() -> None:
    assert take_batch(["x"] + ["y"] * 9, 3) == [0, 1, 2]
    assert take_batch([], 4) == []
    assert take_batch(["a", "a", "a"], 2) == [0, 1]
