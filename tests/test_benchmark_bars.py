"""benchmarks/common.py: issue 15's bar, as the seed tables apply it to each seed's margin."""

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture
def common():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import common
    finally:
        sys.path.remove(str(BENCHMARKS))
    return common


def test_every_seed_must_clear_the_bar(common):
    assert common.meets_issue15_bar("mIoU corrupted", [20.0, 23.5, 21.1])
    assert not common.meets_issue15_bar("mIoU corrupted", [19.9, 23.5, 21.1])  # one seed short is a miss
    assert common.meets_issue15_bar("mIoU clean", [0.0, 2.1])  # "at least equal"
    assert not common.meets_issue15_bar("person", [5.0, -0.04])


def test_tc_must_be_higher_not_equal(common):
    assert common.meets_issue15_bar("TC", [0.1, 6.0])
    assert not common.meets_issue15_bar("TC", [0.0, 6.0])


def test_figures_without_a_bar_are_not_judged(common):
    with pytest.raises(KeyError):
        common.meets_issue15_bar("mVC_8", [30.0])
