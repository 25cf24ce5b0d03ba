"""The route choice of feedback through two factors (alignlab.nn.product)."""

import pytest
import torch

from alignlab.nn.product import factored_cheaper, product


def test_the_cheaper_route_is_chosen_by_multiply_adds():
    # the wide MLP's hidden layer, ldfa r = 10, batch 128: 128·1024·10 + 2·128·10·1024 ≪ 10·1024² + 128·1024² + 10·1024²
    assert factored_cheaper(128, 1024, 1024, 10, need_x=True, need_r=True)
    # its 10-way head at r = 10: h costs 128·10·10, hR and hᵀx 2·128·10·1024 > 10·10·1024 + 128·10·1024 + 10·10·1024
    assert not factored_cheaper(128, 10, 1024, 10, need_x=True, need_r=True)
    # a first layer needs no input gradient: R's gradient alone, Bᵀ∇W (10·1024·784), is the cheaper
    assert not factored_cheaper(4096, 1024, 784, 10, need_x=False, need_r=True)
    assert factored_cheaper(128, 1024, 784, 10, need_x=False, need_r=True)
    # pfa (m = k·N_out): factored only with fewer rows than about N_out
    assert factored_cheaper(64, 100, 100, 1000, need_x=True, need_r=True)
    assert not factored_cheaper(200, 100, 100, 1000, need_x=True, need_r=True)


@pytest.mark.parametrize("groups", [1, 3])
def test_product_multiplies_group_by_group(groups):
    torch.manual_seed(0)
    B, R = torch.randn(6, 4), torch.randn(4 * groups, 2, 3, 3)
    M = product(B, R)
    for g in range(groups):
        rows = slice(g * 6 // groups, (g + 1) * 6 // groups)
        expected = B[rows] @ R[g * 4:(g + 1) * 4].flatten(1)
        torch.testing.assert_close(M[rows].flatten(1), expected)
