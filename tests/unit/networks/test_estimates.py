from sauronnet.networks.estimates import feature_map_elements, forward_flops
from sauronnet.plans import NetworkPlan

# two stages, 2D: conv widths 4 then 8; patch 8x8 -> stage sizes 8x8 and 4x4
NET = NetworkPlan((4, 8), ((3, 3), (3, 3)), ((1, 1), (2, 2)), (2, 2), (2,))


def test_feature_map_elements_by_hand():
    enc = 2 * 4 * 64 + 2 * 8 * 16
    dec = 2 * 4 * 64 + 4 * 64 + 3 * 64  # convs, transposed conv, head (last stage only)
    assert feature_map_elements(NET, (8, 8), num_classes=3) == enc + dec


def test_forward_flops_by_hand():
    enc = 2 * (1 * 4 * 9 * 64 + 4 * 4 * 9 * 64 + 4 * 8 * 9 * 16 + 8 * 8 * 9 * 16)
    up = 2 * 8 * 4 * 4 * 16  # transposed conv, kernel 2x2, per input voxel
    dec = 2 * (8 * 4 * 9 * 64 + 4 * 4 * 9 * 64)  # concatenation doubles the first conv's input
    head = 2 * 4 * 3 * 64
    assert forward_flops(NET, (8, 8), in_channels=1, num_classes=3) == enc + up + dec + head
    assert forward_flops(NET, (8, 8), 1, 3, batch_size=2) == 2 * (enc + up + dec + head)


def test_forward_flops_with_pruned_widths():
    full = forward_flops(NET, (8, 8), 1, 3)
    assert forward_flops(NET, (8, 8), 1, 3, widths=[4, 4, 8, 8, 4, 4, 4]) == full
    assert forward_flops(NET, (8, 8), 1, 3, widths=[2, 4, 8, 8, 4, 4, 4]) < full
