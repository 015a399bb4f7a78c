"""The argument checks: one wording per idea, bools never taken for numbers or ids."""

import math

import numpy as np
import pytest
import torch

from shared.checks import check_bool, check_int, check_number, check_token_ids, is_int, is_number


def test_check_int():
    assert check_int(np.int64(3), "n", 1) == 3 and type(check_int(np.int64(3), "n")) is int
    for bad in (True, 2.0, "2", None):
        with pytest.raises(TypeError, match="n must be an int"):
            check_int(bad, "n")
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        check_int(0, "n", 1)
    with pytest.raises(ValueError, match="n must be an int <= 3, got 4"):
        check_int(4, "n", maximum=3)


def test_check_number():
    assert check_number(np.float32(0.5), "lr", 0) == 0.5
    for bad in (False, "0.1", None):
        with pytest.raises(TypeError, match="lr must be a number"):
            check_number(bad, "lr")
    for bad in (math.nan, math.inf, -1.0):
        with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
            check_number(bad, "lr", 0)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        check_number(0.0, "beta", 0, exclusive=True)
    with pytest.raises(ValueError, match="p must be a finite number >= 0 and <= 1"):
        check_number(1.5, "p", 0, 1)


def test_check_token_ids():
    assert check_token_ids([1, np.int64(2)], "ids") == [1, 2]
    assert check_token_ids(torch.tensor([3, 4]), "ids") == [3, 4]
    for bad in ([True, False], [1, 2.0], torch.tensor([True]), torch.tensor([1.0])):
        with pytest.raises(TypeError, match="ids must"):
            check_token_ids(bad, "ids")
    with pytest.raises(ValueError, match="1-D"):
        check_token_ids(torch.tensor([[1, 2]]), "ids")
    with pytest.raises(TypeError, match="list of token ids"):
        check_token_ids("12", "ids")


def test_check_bool_and_predicates():
    assert check_bool(np.bool_(True), "flag") is True
    for bad in (1, 0, "yes", None):
        with pytest.raises(TypeError, match="flag must be True or False"):
            check_bool(bad, "flag")
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert is_number(3.5) and not is_number(False) and not is_number("3")
