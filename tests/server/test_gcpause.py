"""The server's garbage-collector pauses: measured per generation, start-up objects
kept out of full collections (edgefleet/gcpause.py)."""

import gc

from edgefleet import gcpause


def test_each_collection_is_reported_with_its_generation_and_duration():
    seen: list[tuple[int, float]] = []
    with gcpause.watch_pauses(lambda generation, seconds: seen.append((generation, seconds))):
        gc.collect(1)
        gc.collect(2)
    gc.collect()  # after the block: no longer reported
    assert [generation for generation, _ in seen[-2:]] == [1, 2]
    assert all(seconds >= 0 for _, seconds in seen)
    assert len([g for g, _ in seen if g == 2]) == 1


def test_start_up_objects_leave_the_full_collections():
    try:
        made = [[index] for index in range(1000)]  # long-lived containers
        frozen = gcpause.freeze_startup()
        assert frozen >= len(made)
        assert gc.get_freeze_count() == frozen
        # A full collection no longer walks them.
        assert not any(item in gc.get_objects(generation=2) for item in made[:10])
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


def test_a_server_lifetime_collects_young_objects_less_often_and_restores_it_all():
    before = gc.get_threshold()
    pauses: list[int] = []
    with gcpause.server_collection(lambda generation, _: pauses.append(generation)) as frozen:
        assert frozen > 0 and gc.get_freeze_count() > 0
        assert gc.get_threshold() == (gcpause.GEN0_THRESHOLD, *before[1:])
        gc.collect(0)
    assert pauses[-1] == 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
