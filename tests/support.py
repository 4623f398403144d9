"""Constants shared by the infrastructure tests."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"

TINY_CNN = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = self.drop(y).mean(dim=(2, 3))
        return self.head(y)

def get_model():
    torch.manual_seed(0)
    m = Net()
    m.bn.running_mean.normal_()
    m.bn.running_var.uniform_(0.5, 1.5)
    m.bn.weight.data.normal_(1.0, 0.1)
    return m.eval()

def get_inputs():
    return (torch.randn(2, 3, 8, 8),)
"""
