"""Networks: the nnU-Net PlainConvUNet topology and cost estimates of it."""
