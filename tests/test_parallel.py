import os

import numpy as np

from unmasking import evaluate, metrics, parallel

_STATE: dict = {}


def _init(offset: int) -> None:
    _STATE["offset"] = offset


def _work(i: int) -> tuple[int, int]:
    return i + _STATE["offset"], os.getpid()


def test_ordered_map_keeps_input_order_and_runs_the_initializer_in_each_worker():
    one = [v for v, _ in parallel.ordered_map(_work, range(50), 1, _init, (100,))]
    two = list(parallel.ordered_map(_work, range(50), 2, _init, (100,), chunksize=3))
    assert one == [v for v, _ in two] == list(range(100, 150))
    assert os.getpid() not in {pid for _, pid in two}  # the work ran in the workers
    got = parallel.ordered_map_with_progress(_work, range(7), 7, "test", 2, progress_bar=False, initializer=_init,
                                             initargs=(1,))
    assert [v for v, _ in got] == list(range(1, 8))


def test_pixel_metrics_are_the_same_in_one_and_in_two_processes():
    rng = np.random.default_rng(0)
    unmasked = rng.integers(0, 256, (9, 24, 24, 3), dtype=np.uint8)
    masked = unmasked.copy()
    masked[:, 12:20, 6:18] = 255
    outputs = {"masked_input": masked, "noisy": np.clip(unmasked + rng.integers(-9, 9, unmasked.shape), 0, 255)
               .astype(np.uint8)}
    pset = evaluate.PairSet("t", masked, unmasked, [str(i) for i in range(9)], ["m"] * 9)
    one = evaluate.pixel_metrics(pset, outputs, workers=1, progress=False)
    two = evaluate.pixel_metrics(pset, outputs, workers=2, progress=False)
    assert one == two
    assert len(one) == 9 and len(one[0]) == 2
    def f(a):
        return a.astype(np.float32) / 255

    assert one[4][1] == metrics.image_metrics(f(outputs["noisy"][4]), f(unmasked[4]), f(masked[4]))
    assert parallel._SHARED == {}  # nothing left behind in this process


def test_baselines_are_the_same_in_one_and_in_two_processes():
    rng = np.random.default_rng(1)
    unmasked = rng.integers(0, 200, (7, 32, 32, 3), dtype=np.uint8)
    masked = unmasked.copy()
    masked[:, 16:28, 8:24] = 250
    for name in ("telea", "telea_oracle"):
        one = evaluate.baseline_outputs(name, masked, unmasked, 3, workers=1)
        two = evaluate.baseline_outputs(name, masked, unmasked, 3, workers=2)
        assert one.dtype == np.uint8 and one.shape == masked.shape
        assert np.array_equal(one, two)
        assert not np.array_equal(one, masked)  # the region was inpainted
    region = metrics.region(masked[2].astype(np.float32) / 255, unmasked[2].astype(np.float32) / 255)
    assert np.array_equal(evaluate.baseline_outputs("telea_oracle", masked, unmasked, 3, region[None].repeat(7, 0),
                                                    workers=2)[2], one[2])
    assert parallel._SHARED == {}
